"""The bundled real datasets (``data/`` at the repository root): a static registry and loaders.

The registry is plain Python so that listing needs no file access; ``tests/datasets`` checks it
against the real files.
"""

from __future__ import annotations

import builtins
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cellweave._exceptions import CellWeaveInputError

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

#: Environment variable naming the folder that holds the dataset folders.
DATA_DIR_ENV = "CELLWEAVE_DATA_DIR"

#: x_kinds a count-based model can pretrain on.
PRETRAIN_X_KINDS = ("counts", "log_normalized")


@dataclass(frozen=True)
class DatasetInfo:
    """One bundled dataset. ``x_kind`` is the same for every model modality of a MuData here."""

    name: str
    format: str  # "h5ad" or "h5mu"
    modalities: tuple[str, ...]
    n_cells: int
    organism: str  # "human", "mouse" or "fly"
    x_kind: str
    label_key: str | None
    batch_key: str | None
    licence: str
    used_for: str

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.format}"

    @property
    def pretrain(self) -> bool:
        return self.x_kind in PRETRAIN_X_KINDS


REGISTRY: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "perturb_papalexi2021_sceptre", "h5mu", ("rna", "guide"), 20729, "human", "counts",
            "perturbation", "batch", "GPL-3 (sceptre package)",
            "perturbation effect prediction, guide calling, tests at scale",
        ),
        DatasetInfo(
            "multibatch_cellbench_sc_mixology", "h5ad", ("rna",), 1408, "human", "counts",
            "cell_type", "batch", "none stated in the source repository",
            "integration / batch correction with ground-truth labels, annotation",
        ),
        DatasetInfo(
            "citeseq_pbmc_10x_scvi_tests", "h5mu", ("rna", "prot"), 400, "human", "counts",
            None, "batch", "BSD-3-Clause (scvi-tools repo); underlying 10x data CC BY 4.0",
            "cross-modal RNA <-> protein, integration of 2 batches, tests",
        ),
        DatasetInfo(
            "citeseq_citefuse_eccite", "h5mu", ("rna", "prot", "hto"), 500, "human", "counts",
            None, None, "GPL-3 (CiteFuse package)",
            "cross-modal RNA <-> 49 ADTs, hashtag demultiplexing, tests",
        ),
        DatasetInfo(
            "multiome_muon_test", "h5mu", ("rna", "atac"), 1000, "human", "counts",
            None, None, "BSD-3-Clause (muon repo); underlying 10x data CC BY 4.0",
            "RNA + ATAC I/O, peak parsing, tests",
        ),
        DatasetInfo(
            "liger_bmmc_rna_gene_activity", "h5mu", ("rna", "gene_activity"), 680, "human", "counts",
            None, "batch", "GPL-3 (rliger)",
            "diagonal integration of unpaired RNA and ATAC gene activity, tests",
        ),
        DatasetInfo(
            "scanpy_pbmc68k_reduced", "h5ad", ("rna",), 700, "human", "scaled",
            "cell_type", None, "BSD-3-Clause (scanpy)",
            "annotation benchmark (small, labelled); scaled values, not for count models",
        ),
        DatasetInfo(
            "celltypist_sample_559cells", "h5ad", ("rna",), 559, "human", "counts",
            None, None, "MIT (celltypist)",
            "annotation query set, tests",
        ),
        DatasetInfo(
            "spatial_osmfish_scvi", "h5ad", ("rna",), 4530, "mouse", "counts",
            "cell_type", None, "none stated in scVI-data",
            "spatial (targeted 33-gene panel), annotation, imputation",
        ),
        DatasetInfo(
            "spatial_giotto_mini_visium_multisample", "h5ad", ("rna",), 2327, "human", "counts",
            None, "batch", "MIT (GiottoData DESCRIPTION)",
            "spatial (Visium, 2 sections), integration across sections",
        ),
        DatasetInfo(
            "spatial_giotto_mini_visium_dg", "h5ad", ("rna",), 624, "mouse", "counts",
            None, None, "MIT (GiottoData DESCRIPTION)",
            "spatial (single Visium section), tests",
        ),
        DatasetInfo(
            "spatial_novosparc_intestine", "h5ad", ("rna",), 1383, "mouse", "counts",
            "zone", None, "BSD-3-Clause (novosparc)",
            "1-D spatial zonation targets, zone annotation",
        ),
        DatasetInfo(
            "spatial_novosparc_bdtnp_drosophila", "h5ad", ("rna",), 3039, "fly", "normalized_other",
            None, None, "BSD-3-Clause (novosparc)",
            "spatial reference atlas (84 genes), GRN; not count data",
        ),
        DatasetInfo(
            "spatial_visium_squidpy_test", "h5ad", ("rna",), 49, "mouse", "log_normalized",
            None, None, "BSD-3-Clause (squidpy); underlying 10x data CC BY 4.0",
            "Visium I/O, spatial graphs, log-normalized input path, tests",
        ),
    ]
}


def data_dir() -> Path:
    """The folder holding the bundled dataset folders.

    ``$CELLWEAVE_DATA_DIR`` when set, else ``data/`` of the repository this package was
    installed from (editable / source installs).

    Raises
    ------
    CellWeaveInputError
        When neither exists.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise CellWeaveInputError(
                f"{DATA_DIR_ENV}={env!r} is not a folder. Set it to the data/ folder of the cellweave repository."
            )
        return root
    # src/cellweave/datasets/_registry.py -> parents[3] is the repository root in the src layout.
    root = Path(__file__).resolve().parents[3] / "data"
    if root.is_dir():
        return root
    raise CellWeaveInputError(
        "The bundled datasets were not found (they ship with the cellweave repository, not the wheel). "
        f"Set the environment variable {DATA_DIR_ENV} to the data/ folder of a cellweave repository checkout."
    )


def _info(name: str) -> DatasetInfo:
    if name not in REGISTRY:
        raise CellWeaveInputError(
            f"Unknown dataset {name!r}. Valid names: {sorted(REGISTRY)} (see cellweave.datasets.list())."
        )
    return REGISTRY[name]


def path(name: str) -> Path:
    """Path of a bundled dataset's file.

    Raises
    ------
    CellWeaveInputError
        Unknown name, no data folder, or the file is missing from it.
    """
    info = _info(name)
    p = data_dir() / info.name / info.filename
    if not p.is_file():
        raise CellWeaveInputError(
            f"Dataset {name!r} is registered but {p} does not exist. Check that {p.parent.parent} is the "
            f"cellweave data/ folder (or set {DATA_DIR_ENV})."
        )
    return p


def list() -> pd.DataFrame:  # noqa: A001 - mirrors the public name cellweave.datasets.list
    """The bundled datasets, one row each.

    Returns
    -------
    DataFrame with columns ``name``, ``path`` (None when the data folder cannot be found),
    ``format``, ``modalities`` (tuple), ``n_cells``, ``organism``, ``x_kind``, ``label_key``,
    ``batch_key``, ``licence``, ``pretrain`` (True where ``x_kind`` is counts or
    log_normalized) and ``used_for``.
    """
    import pandas as pd

    try:
        root: Path | None = data_dir()
    except CellWeaveInputError as err:
        logger.warning("%s", err)
        root = None
    rows = []
    for info in REGISTRY.values():
        row = asdict(info)
        row["path"] = str(root / info.name / info.filename) if root is not None else None
        row["pretrain"] = info.pretrain
        rows.append(row)
    columns = [
        "name", "path", "format", "modalities", "n_cells", "organism", "x_kind", "label_key",
        "batch_key", "licence", "pretrain", "used_for",
    ]
    return pd.DataFrame(rows, columns=columns)


def load(name: str, modality: str | None = None) -> AnnData | MuData:
    """Load a bundled dataset.

    Parameters
    ----------
    name
        A name from :func:`list`.
    modality
        For MuData datasets: return only this modality, as AnnData, with the cell-level columns
        of ``mdata.obs`` (cell_type, batch, ...) copied into its ``obs``. For AnnData datasets
        only the modality they hold (``"rna"``) is accepted.

    Returns
    -------
    AnnData or MuData as stored. In MuData files the cell-level columns live in ``mdata.obs``;
    the modalities' own ``obs`` are (mostly) empty.

    Examples
    --------
    >>> import cellweave as cw
    >>> mdata = cw.datasets.load("citeseq_pbmc_10x_scvi_tests")  # doctest: +SKIP
    >>> rna = cw.datasets.load("citeseq_pbmc_10x_scvi_tests", modality="rna")  # doctest: +SKIP
    """
    info = _info(name)
    p = path(name)
    if info.format == "h5ad":
        import anndata

        adata = anndata.read_h5ad(p)
        if modality is not None and modality not in info.modalities:
            raise CellWeaveInputError(
                f"Dataset {name!r} holds only {builtins.list(info.modalities)}, not {modality!r}. "
                "Pass modality=None or one of those."
            )
        return adata
    import mudata

    with warnings.catch_warnings(), mudata.set_options(pull_on_update=False):  # keep mdata.obs as stored
        # Feature names repeat across modalities (gene CD4 and antibody CD4); they are unique
        # within each modality, which is what cellweave indexes (see the PROVENANCE.md caveats).
        warnings.filterwarnings("ignore", message="var_names are not unique", category=UserWarning)
        mdata = mudata.read_h5mu(p)
    if modality is None:
        return mdata
    if modality not in mdata.mod:
        raise CellWeaveInputError(
            f"Dataset {name!r} has modalities {builtins.list(mdata.mod)}, not {modality!r}. Pass one of those."
        )
    adata = mdata.mod[modality].copy()
    cell_obs = mdata.obs.loc[adata.obs_names]
    for col in cell_obs.columns:
        # mudata prefixes modality-level columns with "<mod>:"; those are already in adata.obs.
        if ":" in str(col) or col in adata.obs.columns:
            continue
        adata.obs[col] = cell_obs[col].values
    if "dataset" in mdata.uns and "dataset" not in adata.uns:
        adata.uns["dataset"] = mdata.uns["dataset"]
    return adata
