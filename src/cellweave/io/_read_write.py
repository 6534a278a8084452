"""Reading and writing AnnData / MuData files; nothing else happens here."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cellweave._exceptions import CellWeaveInputError
from cellweave._io_utils import atomic_path

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

#: Suffixes :func:`read` understands, and what it reads them as.
SUPPORTED_SUFFIXES: dict[str, str] = {
    ".h5ad": "AnnData (anndata)",
    ".h5mu": "MuData (mudata)",
    ".h5": "10x Genomics HDF5 (filtered_feature_bc_matrix.h5)",
    ".mtx": "10x Genomics matrix.mtx in a folder with features.tsv/genes.tsv and barcodes.tsv",
    ".mtx.gz": "10x Genomics matrix.mtx.gz in a folder with features.tsv.gz and barcodes.tsv.gz",
    ".loom": "loom",
    "<folder>": "10x Genomics mtx folder",
}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".mtx.gz"):
        return ".mtx.gz"
    return path.suffix.lower()


def _supported_list() -> str:
    return ", ".join(f"{k} ({v})" for k, v in SUPPORTED_SUFFIXES.items())


def _check_not_empty(obj: AnnData | MuData, path: Path) -> None:
    mods = obj.mod.items() if hasattr(obj, "mod") else [(None, obj)]
    if obj.n_obs == 0 or obj.n_vars == 0:
        raise CellWeaveInputError(
            f"{path} holds {obj.n_obs} cells and {obj.n_vars} features. "
            "Check that the file is the filtered matrix you meant (not an empty export)."
        )
    for name, a in mods:
        if name is not None and (a.n_obs == 0 or a.n_vars == 0):
            raise CellWeaveInputError(
                f"{path}: modality {name!r} holds {a.n_obs} cells and {a.n_vars} features. "
                f"Drop it (del mdata.mod[{name!r}]; mdata.update()) or re-export the file."
            )


def read(path: str | os.PathLike) -> AnnData | MuData:
    """Read a single-cell file into AnnData or MuData.

    Parameters
    ----------
    path
        ``.h5ad`` (AnnData), ``.h5mu`` (MuData), 10x ``.h5``, a 10x mtx folder or its
        ``matrix.mtx(.gz)``, or ``.loom``.

    Returns
    -------
    The object as stored; 10x files give gene symbols as ``var_names`` (made unique) and Ensembl
    IDs in ``var['gene_ids']``.

    Raises
    ------
    CellWeaveInputError
        Missing or empty file, unknown suffix, unreadable content, or no cells / features.

    Examples
    --------
    >>> import cellweave as cw
    >>> adata = cw.io.read("pbmc.h5ad")  # doctest: +SKIP
    """
    path, suffix = _checked_path(path)
    try:
        obj = _read_by_suffix(path, suffix)
    except CellWeaveInputError:
        raise
    except Exception as err:  # h5py/anndata/scanpy raise many kinds; the user needs one message
        raise CellWeaveInputError(
            f"Could not parse {path} as {SUPPORTED_SUFFIXES[suffix]}: {type(err).__name__}: {err}. "
            "The file may be truncated or not what its suffix says; re-export or re-download it."
        ) from err
    _check_not_empty(obj, path)
    logger.info("Read %s: %d cells x %d features.", path, obj.n_obs, obj.n_vars)
    return obj


def _checked_path(path: str | os.PathLike) -> tuple[Path, str]:
    """The path and its reader's suffix, or a clear error for a missing, empty or unknown file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CellWeaveInputError(f"File not found: {path}. Check the path (relative to {Path.cwd()}).")
    if path.is_file() and path.stat().st_size == 0:
        raise CellWeaveInputError(
            f"{path} is empty (0 bytes): the download or export was probably interrupted. Write it again."
        )
    suffix = "<folder>" if path.is_dir() else _suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise CellWeaveInputError(
            f"Cannot read {path}: unknown suffix {suffix!r}. Supported: {_supported_list()}. "
            "Convert the file to .h5ad (e.g. with anndata or scanpy) or rename it if the suffix is wrong."
        )
    return path, suffix


def check_readable(path: str | os.PathLike) -> Path:
    """Refuse, before any work starts, an input :func:`read` would refuse for its form.

    Checks that the file exists, is not empty and has a known suffix; an ``.h5ad`` is also opened
    (backed, so only its metadata is read) and closed again. Its values are checked later, when
    they are read.

    Raises
    ------
    CellWeaveInputError
        With the same messages as :func:`read`.
    """
    path, suffix = _checked_path(path)
    if suffix == ".h5ad":
        import anndata

        try:
            anndata.read_h5ad(path, backed="r").file.close()
        except Exception as err:  # h5py/anndata raise many kinds; the user needs one message
            raise CellWeaveInputError(
                f"Could not parse {path} as {SUPPORTED_SUFFIXES[suffix]}: {type(err).__name__}: {err}. "
                "The file may be truncated or not what its suffix says; re-export or re-download it."
            ) from err
    return path


def h5ad_matrix_bytes(path: str | os.PathLike) -> int | None:
    """Bytes ``X`` of an ``.h5ad`` takes in memory once read (values plus column indices when
    sparse), from the file's metadata alone; ``None`` for other files or when it cannot tell."""
    path = Path(path).expanduser()
    if not path.is_file() or _suffix(path) != ".h5ad":
        return None
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            X = fh.get("X")
            if isinstance(X, h5py.Dataset):
                return int(X.size) * X.dtype.itemsize
            if isinstance(X, h5py.Group) and "data" in X and "indices" in X:
                return int(X["data"].size) * (X["data"].dtype.itemsize + X["indices"].dtype.itemsize)
    except (OSError, KeyError, TypeError):
        return None
    return None


def _read_by_suffix(path: Path, suffix: str) -> AnnData | MuData:
    if suffix == ".h5ad":
        import anndata

        return anndata.read_h5ad(path)
    if suffix == ".h5mu":
        import mudata

        with mudata.set_options(pull_on_update=False):  # keep obs as stored (the mudata 0.4 rule)
            return mudata.read_h5mu(path)
    if suffix == ".loom":
        import importlib.util

        import anndata

        if importlib.util.find_spec("loompy") is None:
            raise CellWeaveInputError(
                f"Reading {path} needs the loompy package: pip install loompy "
                "(or convert the file to .h5ad with loompy/scanpy elsewhere)."
            )
        return anndata.read_loom(path)
    import scanpy as sc

    if suffix == ".h5":
        adata = sc.read_10x_h5(path)
    else:
        folder = path if suffix == "<folder>" else path.parent
        if suffix == "<folder>" and not any(folder.glob("matrix.mtx*")):
            raise CellWeaveInputError(
                f"{folder} is a folder without matrix.mtx(.gz). Point to a 10x mtx folder "
                "(matrix.mtx, features.tsv or genes.tsv, barcodes.tsv) or to a file."
            )
        prefix = ""
        if suffix != "<folder>":
            # scanpy finds "<prefix>matrix.mtx(.gz)"; support files named e.g. sample1_matrix.mtx.gz
            name = path.name
            stem = name[: -len(".mtx.gz")] if name.lower().endswith(".mtx.gz") else name[: -len(".mtx")]
            if stem.endswith("matrix"):
                prefix = stem[: -len("matrix")]
        if (folder / f"{prefix}matrix.mtx").is_file() and (folder / f"{prefix}features.tsv").is_file():
            # Cell Ranger >= 3 layout without gzip: scanpy only reads it gzipped.
            adata = _read_plain_v3_mtx(folder, prefix)
        else:
            adata = sc.read_10x_mtx(folder, prefix=prefix or None)
    adata.var_names_make_unique()
    return adata


def _read_plain_v3_mtx(folder: Path, prefix: str) -> AnnData:
    """matrix.mtx + features.tsv + barcodes.tsv, uncompressed; same result as scanpy's reader."""
    import anndata
    import pandas as pd
    import scipy.io
    import scipy.sparse as sp

    X = sp.csr_matrix(scipy.io.mmread(folder / f"{prefix}matrix.mtx").T, dtype="float32")
    features = pd.read_csv(folder / f"{prefix}features.tsv", sep="\t", header=None, dtype=str)
    barcodes = pd.read_csv(folder / f"{prefix}barcodes.tsv", sep="\t", header=None, dtype=str)
    var = pd.DataFrame(index=pd.Index(features[1].to_numpy(), name=None))
    var["gene_ids"] = features[0].to_numpy()
    if features.shape[1] > 2:
        var["feature_types"] = features[2].to_numpy()
    adata = anndata.AnnData(X=X, obs=pd.DataFrame(index=barcodes[0].to_numpy()), var=var)
    if "feature_types" in var:  # like scanpy's gex_only=True
        adata = adata[:, (var["feature_types"] == "Gene Expression").to_numpy()].copy()
    return adata


def write(obj: AnnData | MuData, path: str | os.PathLike) -> None:
    """Write AnnData to ``.h5ad`` or MuData to ``.h5mu``, atomically.

    The file is written under a temporary name in the same folder and renamed when complete, so
    a crash never leaves a half-written file at ``path``.

    Parameters
    ----------
    obj
        The object to write.
    path
        Destination; its suffix must match the object type.

    Raises
    ------
    CellWeaveInputError
        When the suffix does not fit the object (or the object is neither AnnData nor MuData).
    """
    from anndata import AnnData
    from mudata import MuData

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if isinstance(obj, MuData):
        if suffix != ".h5mu":
            raise CellWeaveInputError(
                f"A MuData is written to .h5mu, not {suffix or 'a path without suffix'!r} ({path}). "
                f"Use {path.with_suffix('.h5mu').name!r}."
            )
        import mudata

        with atomic_path(path) as tmp, mudata.set_options(pull_on_update=False):
            obj.write_h5mu(tmp)
    elif isinstance(obj, AnnData):
        if suffix != ".h5ad":
            raise CellWeaveInputError(
                f"An AnnData is written to .h5ad, not {suffix or 'a path without suffix'!r} ({path}). "
                f"Use {path.with_suffix('.h5ad').name!r}."
            )
        with atomic_path(path) as tmp:
            obj.write_h5ad(tmp)
    else:
        raise CellWeaveInputError(
            f"cellweave.io.write takes AnnData or MuData, got {type(obj).__name__}. "
            "Wrap arrays in anndata.AnnData(X=...) first."
        )
    logger.info("Wrote %s.", path)
