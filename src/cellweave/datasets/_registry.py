"""The dataset registry: listing, resolving and loading registered datasets.

Files are never part of the repository or the wheel. :func:`load` reads a dataset from the mirror
(``$CELLWEAVE_DATA_DIR``), then the cache, and otherwise downloads its pinned source with pooch,
checks the hashes and converts it (where a converter exists; see :func:`has_converter`).
"""

from __future__ import annotations

import builtins
import logging
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from cellweave import _fetch
from cellweave._exceptions import CellWeaveDataError, CellWeaveInputError
from cellweave._fetch import CACHE_DIR_ENV, DATA_DIR_ENV

from ._catalogue import ENTRIES
from ._info import PRETRAIN_X_KINDS, DatasetInfo

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_DIR_ENV", "DATA_DIR_ENV", "PRETRAIN_X_KINDS", "REGISTRY", "convert", "data_dir", "fetch",
    "has_converter", "info", "is_available", "list", "load", "path",
]

REGISTRY: dict[str, DatasetInfo] = {d.name: d for d in ENTRIES}


def data_dir() -> Path | None:
    """The mirror folder (``$CELLWEAVE_DATA_DIR``), or None when it is not set.

    Raises
    ------
    CellWeaveDataError
        When the variable is set to something that is not a folder.
    """
    return _fetch.mirror_dir()


def info(name: str) -> DatasetInfo:
    """The registry entry of ``name``.

    Raises
    ------
    CellWeaveInputError
        Unknown name (the message lists the valid ones).
    """
    if name not in REGISTRY:
        raise CellWeaveInputError(
            f"Unknown dataset {name!r}. Valid names: {sorted(REGISTRY)} (see `cellweave datasets list`)."
        )
    return REGISTRY[name]


def has_converter(name: str) -> bool:
    """Whether cellweave can build ``name`` from its published source files."""
    from ._convert import CONVERTERS

    return info(name).name in CONVERTERS


def is_available(name: str) -> bool:
    """Whether ``name`` is in the mirror or the cache (no download needed)."""
    return _fetch.locate(info(name).relpath) is not None


def _write(obj: AnnData | MuData, out: Path) -> None:
    if hasattr(obj, "mod"):
        obj.write_h5mu(out, compression="gzip")
    else:
        obj.write_h5ad(out, compression="gzip")


def convert(name: str, raw_dir: str | os.PathLike | None = None, *, progress: bool = True) -> AnnData | MuData:
    """Build ``name`` from its published source files, in memory.

    Parameters
    ----------
    name
        A registered dataset with a converter.
    raw_dir
        A folder holding byte copies of the published files (hashes are checked); default:
        download them with pooch into the cache.

    Raises
    ------
    CellWeaveDataError
        No converter, a missing or corrupt source file, or a failed download.
    """
    from ._convert import CONVERTERS

    entry = info(name)
    if entry.name not in CONVERTERS:
        raise CellWeaveDataError(
            f"cellweave has no converter for {name!r} (source: {entry.source}). Set {DATA_DIR_ENV} to a cellweave "
            f"data mirror that holds {entry.relpath}."
        )
    paths = _fetch.fetch_sources(name, entry.files, raw_dir=raw_dir, progress=progress)
    return CONVERTERS[entry.name](paths)


def path(name: str, *, progress: bool = True) -> Path:
    """Local path of a dataset's converted file: mirror, then cache, then download and convert.

    Raises
    ------
    CellWeaveInputError
        Unknown name.
    CellWeaveDataError
        Not found locally and it cannot be fetched (offline, or no converter for its source);
        the message names the dataset, its source URL and ``CELLWEAVE_DATA_DIR``.
    """
    entry = info(name)

    def build(paths: dict[str, Path], out: Path) -> None:
        from ._convert import CONVERTERS

        _write(CONVERTERS[entry.name](paths), out)

    return _fetch.obtain(entry.relpath, what=f"Dataset {name!r}", sources=entry.files,
                         build=build if has_converter(name) else None, progress=progress)


def fetch(name: str, *, progress: bool = True) -> Path:
    """Make ``name`` available locally (see :func:`path`) and check the converted file's SHA-256
    against the registry; returns its path."""
    from cellweave._io_utils import sha256_file

    p = path(name, progress=progress)
    got = sha256_file(p)
    entry = info(name)
    if got != entry.sha256:
        logger.warning(
            "%s: %s has SHA-256 %s, the registry records %s (another conversion of the same source, e.g. other "
            "compression settings or package versions).", name, p, got, entry.sha256,
        )
    return p


def list() -> pd.DataFrame:  # noqa: A001 - mirrors the public name cellweave.datasets.list
    """The registered datasets, one row each.

    Returns
    -------
    DataFrame with columns ``name``, ``path`` (the local file in the mirror or the cache; None
    when neither has it), ``format``, ``modalities`` (tuple), ``n_cells``, ``organism``,
    ``x_kind``, ``label_key``, ``batch_key``, ``licence``, ``source``, ``pretrain`` (in the
    pretraining corpus), ``tasks``, ``converter`` (can be built from its source) and ``used_for``.
    """
    import pandas as pd

    from ._convert import CONVERTERS

    try:
        _fetch.mirror_dir()
        usable = True
    except CellWeaveDataError as err:
        logger.warning("%s", err)
        usable = False
    rows = []
    for entry in REGISTRY.values():
        row = asdict(entry)
        local = _fetch.locate(entry.relpath) if usable else None
        row.update(path=str(local) if local else None, pretrain=entry.pretrain, source=entry.source,
                   converter=entry.name in CONVERTERS)
        rows.append(row)
    columns = [
        "name", "path", "format", "modalities", "n_cells", "organism", "x_kind", "label_key", "batch_key",
        "licence", "source", "pretrain", "tasks", "converter", "used_for",
    ]
    return pd.DataFrame(rows, columns=columns)


def _read(entry: DatasetInfo, p: Path) -> AnnData | MuData:
    import anndata

    if entry.format == "h5ad":
        adata = anndata.read_h5ad(p)
        if not entry.protein_only:
            return adata
        import mudata

        # An AnnData means RNA to cellweave; antibodies travel as the "prot" modality of a MuData,
        # with the cell-level columns at the MuData level as in the other .h5mu datasets.
        obs = adata.obs.copy()
        adata.obs = adata.obs[[]]
        with mudata.set_options(pull_on_update=False):
            mdata = mudata.MuData({"prot": adata})
        mdata.obs = obs
        mdata.uns["dataset"] = adata.uns.get("dataset", {})
        mdata.uns["x_kind"] = {"prot": adata.uns.get("x_kind")}
        return mdata
    import mudata

    with warnings.catch_warnings(), mudata.set_options(pull_on_update=False):  # keep mdata.obs as stored
        # Feature names repeat across modalities (gene CD4 and antibody CD4); they are unique
        # within each modality, which is what cellweave indexes (see the PROVENANCE.md caveats).
        warnings.filterwarnings("ignore", message="var_names are not unique", category=UserWarning)
        return mudata.read_h5mu(p)


def load(name: str, modality: str | None = None) -> AnnData | MuData:
    """Load a registered dataset (from the mirror, the cache, or its downloaded source).

    Parameters
    ----------
    name
        A name from :func:`list`.
    modality
        For multimodal datasets: return only this modality, as AnnData, with the cell-level
        columns of ``mdata.obs`` (cell_type, batch, ...) copied into its ``obs``. For RNA-only
        datasets only ``"rna"`` is accepted.

    Returns
    -------
    AnnData (RNA datasets) or MuData (several modalities, or protein only), as stored. In MuData
    the cell-level columns live in ``mdata.obs``; the modalities' own ``obs`` are (mostly) empty.

    Raises
    ------
    CellWeaveDataError
        Not in the mirror or the cache and it cannot be downloaded; the message says what to set.

    Examples
    --------
    >>> import cellweave as cw
    >>> mdata = cw.datasets.load("citeseq_pbmc_10x_scvi_tests")  # doctest: +SKIP
    >>> rna = cw.datasets.load("citeseq_pbmc_10x_scvi_tests", modality="rna")  # doctest: +SKIP
    """
    entry = info(name)
    if modality is not None and modality not in entry.modalities:
        raise CellWeaveInputError(
            f"Dataset {name!r} has modalities {builtins.list(entry.modalities)}, not {modality!r}. Pass "
            "modality=None or one of those."
        )
    data = _read(entry, path(name))
    if modality is None or not hasattr(data, "mod"):
        return data
    adata = data.mod[modality].copy()
    cell_obs = data.obs.loc[adata.obs_names]
    for col in cell_obs.columns:
        # mudata prefixes modality-level columns with "<mod>:"; those are already in adata.obs.
        if ":" in str(col) or col in adata.obs.columns:
            continue
        adata.obs[col] = cell_obs[col].values
    if "dataset" in data.uns and "dataset" not in adata.uns:
        adata.uns["dataset"] = data.uns["dataset"]
    return adata
