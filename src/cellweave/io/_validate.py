"""Checks that run before any data reaches the model: clear errors instead of silent garbage.

What the model wants is raw counts per modality. Everything here answers one of three questions:
what kind of values does ``X`` hold (:func:`detect_x_kind`), can this matrix be used as it is
(:func:`validate_matrix`), and which modalities of a container does the model know
(:func:`check_modalities`, :func:`as_modalities`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from cellweave import modalities as _modalities
from cellweave._exceptions import CellWeaveInputError

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

XKind = Literal["counts", "log_normalized", "scaled", "normalized_other"]
X_KINDS: tuple[str, ...] = ("counts", "log_normalized", "scaled", "normalized_other")

#: Rows looked at by :func:`detect_x_kind`; enough to be sure, few enough to be instant.
MAX_SAMPLE_ROWS = 2000
#: log1p of library-size-normalized data rarely exceeds this (log1p(1e6) ~ 13.8).
LOG_MAX = 15.0
#: Relative spread of expm1 row sums below which rows count as normalized to one total.
ROW_SUM_RTOL = 0.01


@dataclass
class ValidationReport:
    """What :func:`validate_matrix` found in one modality's matrix."""

    x_kind: str
    n_cells: int
    n_features: int
    n_empty_cells: int
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# What kind of values


def _sample_rows(X: Any, max_rows: int = MAX_SAMPLE_ROWS) -> Any:
    """At most ``max_rows`` rows of ``X`` (seeded, sorted), as CSR or a dense float array."""
    n = X.shape[0]
    if n > max_rows:
        idx = np.sort(np.random.default_rng(0).choice(n, size=max_rows, replace=False))
        X = X[idx]
    if sp.issparse(X):
        return sp.csr_matrix(X)
    return np.asarray(X)


def _row_values(X: Any) -> list[np.ndarray]:
    """Nonzero finite values of each row, as float64."""
    rows = []
    if sp.issparse(X):
        X = X.tocsr()
        for i in range(X.shape[0]):
            v = X.data[X.indptr[i] : X.indptr[i + 1]].astype(np.float64)
            rows.append(v[np.isfinite(v) & (v != 0)])
    else:
        for row in np.asarray(X, dtype=np.float64):
            rows.append(row[np.isfinite(row) & (row != 0)])
    return rows


def _is_log_of_counts(rows: list[np.ndarray]) -> bool:
    """True when rows look like ``log(1 + counts * s_i)`` for a per-cell scale ``s_i``.

    Three signatures, any of which is enough:

    * the inverse transform sums to one constant per cell (``normalize_total`` + ``log1p``, all
      features kept), in natural or base-2 logarithm;
    * within a cell, the inverse-transformed values are integer multiples of the smallest one
      (counts times one scale factor; holds after subsetting to highly variable genes too);
    * a cell's values take few distinct levels (counts are discrete; continuous measurements
      such as in-situ intensities are not).
    """
    rows = [r for r in rows if r.size]
    if not rows:
        return False
    for inverse in (np.expm1, lambda v: np.exp2(v) - 1.0):
        sums = np.array([inverse(r).sum() for r in rows])
        med = np.median(sums)
        if med > 0 and len(rows) > 1 and (sums.max() - sums.min()) / med <= 2 * ROW_SUM_RTOL:
            return True
        # Integer ratios: look only at rows with enough values and at small ratios, where the
        # test discriminates (a random real number lands near an integer 8% of the time here).
        passed, tested = 0, 0
        for r in rows:
            if r.size < 5:
                continue
            e = inverse(r)
            ratio = e / e.min()
            ratio = ratio[ratio <= 30]
            if ratio.size < 5:
                continue
            tested += 1
            passed += np.mean(np.abs(ratio - np.round(ratio)) < 0.04) >= 0.9
        if tested and passed / tested >= 0.8:
            return True
    # Few distinct levels per cell (rounded or otherwise transformed log counts).
    big = [r for r in rows if r.size >= 20]
    if big:
        distinct = np.median([np.unique(r).size / r.size for r in big])
        if distinct <= 0.5:
            return True
    return False


def detect_x_kind(X: Any) -> XKind:
    """Guess what a cells x features matrix holds.

    Looks at no more than ``MAX_SAMPLE_ROWS`` (2000) rows, chosen with a fixed seed, so the
    answer is fast and reproducible. Non-finite values are ignored here (see
    :func:`validate_matrix`, which rejects them).

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix, cells in rows.

    Returns
    -------
    ``"scaled"`` if any value is negative (z-scored or regressed data); ``"counts"`` if every
    value is a non-negative integer; ``"log_normalized"`` if the values look like ``log1p`` of
    library-size-normalized counts (see :func:`_is_log_of_counts`) and do not exceed 15;
    ``"normalized_other"`` for anything else non-negative (for example CPM without a log, or
    continuous intensities).

    Examples
    --------
    >>> import numpy as np
    >>> detect_x_kind(np.array([[0, 3], [1, 0]], dtype=np.float32))
    'counts'
    """
    Xs = _sample_rows(X)
    values = Xs.data if sp.issparse(Xs) else np.ravel(Xs)
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    if values.size == 0 or not np.any(values):
        return "counts"  # all zero: nothing contradicts counts
    if values.min() < 0:
        return "scaled"
    # Exact test in the stored precision: float32 holds every integer count below 2**24 exactly.
    if np.array_equal(values, np.rint(values)):
        return "counts"
    if values.max() <= LOG_MAX and _is_log_of_counts(_row_values(Xs)):
        return "log_normalized"
    return "normalized_other"


# --------------------------------------------------------------------------------------------
# One matrix


def _count_nonfinite(X: Any) -> int:
    data = X.data if sp.issparse(X) else np.asarray(X)
    if not np.issubdtype(np.asarray(data).dtype, np.floating):
        return 0
    return int(np.size(data) - np.count_nonzero(np.isfinite(data)))


def _nonzero_per_row(X: Any) -> np.ndarray:
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        X = X.copy()
        X.eliminate_zeros()
        return np.diff(X.indptr)
    return np.count_nonzero(np.asarray(X), axis=1)


def _raw_hint(adata: AnnData, *, layer: str | None = None) -> str:
    """A sentence about a layer or ``adata.raw`` holding raw counts, when the matrix read is not counts."""
    for name in adata.layers.keys():
        if name == layer:
            continue
        try:
            if detect_x_kind(adata.layers[name]) == "counts":
                return (f" layers[{name!r}] holds raw counts: pass layer={name!r} "
                        f"(on the command line: --layer {name}).")
        except Exception:  # an exotic layer should never mask the real message
            continue
    if getattr(adata, "raw", None) is None:
        return ""
    try:
        raw_kind = detect_x_kind(adata.raw.X)
    except Exception:  # an exotic raw should never mask the real error
        return ""
    if raw_kind == "counts":
        return " This object has adata.raw with counts: use adata.raw.to_adata()."
    if raw_kind == "log_normalized":
        return (
            " adata.raw holds log-normalized values (accepted, though raw counts are preferred): "
            "adata.raw.to_adata() can be used."
        )
    return ""


#: Largest count accepted: 2**24, above which float32 cannot store every integer (a UMI count of a
#: gene in one cell is orders of magnitude below it).
MAX_COUNT = 2**24


def _max_value(X: Any) -> float:
    if sp.issparse(X):
        return float(X.max()) if X.nnz else 0.0
    arr = np.asarray(X)
    return float(arr.max()) if arr.size else 0.0


def validate_matrix(
    adata: AnnData,
    *,
    modality: str = "rna",
    layer: str | None = None,
    dataset: str | None = None,
) -> ValidationReport:
    """Check that one modality's matrix can be given to the model.

    Parameters
    ----------
    adata
        Cells x features; features are ``adata.var``.
    modality
        Modality name, used in messages.
    layer
        Layer with the counts; ``None`` means ``adata.X``.
    dataset
        Dataset name, used in messages.

    Returns
    -------
    A :class:`ValidationReport`. Log-normalized input is accepted with a ``UserWarning`` (raw
    counts are preferred); cells without any nonzero feature are reported as a warning.

    Raises
    ------
    CellWeaveInputError
        Missing layer, no cells or features, NaN/inf values, negative (scaled) values, values
        that are neither counts nor log-normalized, counts above :data:`MAX_COUNT`, duplicate cell
        or feature names, or only empty cells.
    """
    where = f"{dataset}/{modality}" if dataset else modality
    source = f"layer {layer!r}" if layer is not None else "X"
    if layer is not None and layer not in adata.layers:
        available = list(adata.layers.keys())
        raise CellWeaveInputError(
            f"{where}: layer {layer!r} not found; available layers: {available or 'none'}. "
            "Pass one of those as layer=, or layer=None to use X."
        )
    X = adata.layers[layer] if layer is not None else adata.X
    n_cells, n_features = adata.n_obs, adata.n_vars
    if n_cells == 0 or n_features == 0:
        raise CellWeaveInputError(
            f"{where}: the matrix has {n_cells} cells and {n_features} features. "
            "Check the filtering that produced it, or drop this modality."
        )
    if X is None:
        raise CellWeaveInputError(f"{where}: X is empty (None). Put the counts in X or pass layer=.")
    n_bad = _count_nonfinite(X)
    if n_bad:
        raise CellWeaveInputError(
            f"{where}: {source} holds {n_bad} NaN or infinite values. Check the upstream processing "
            "that produced them, or replace them (e.g. X = np.nan_to_num(X)) before running cellweave."
        )
    check_unique_cell_names(adata, where=where)
    dup = adata.var_names.duplicated()
    if dup.any():
        examples = list(dict.fromkeys(adata.var_names[dup]))[:5]
        raise CellWeaveInputError(
            f"{where}: {int(dup.sum())} duplicate feature names (e.g. {examples}). "
            "Make them unique with adata.var_names_make_unique(), or aggregate the duplicates."
        )
    x_kind = detect_x_kind(X)
    report_warnings: list[str] = []
    if x_kind == "scaled":
        raise CellWeaveInputError(
            f"{where}: {source} has negative values; it looks scaled (z-scored) — pass raw counts, "
            "e.g. layer='counts' or adata.raw.to_adata()." + _raw_hint(adata, layer=layer)
        )
    if x_kind == "normalized_other":
        raise CellWeaveInputError(
            f"{where}: {source} is neither counts nor log-normalized (non-integer values that do not "
            "look like log1p of library-size-normalized counts). Pass raw counts, e.g. "
            "layer='counts' or adata.raw.to_adata()." + _raw_hint(adata, layer=layer)
        )
    if x_kind == "counts":
        top = _max_value(X)
        if top > MAX_COUNT:
            raise CellWeaveInputError(
                f"{where}: {source} holds a count of {top:,.0f}, above {MAX_COUNT:,} (float32 no longer stores "
                "such integers exactly, and no single-cell measurement reaches them). Check that these are "
                "per-cell counts and not bulk totals or values multiplied by a large factor; fix the upstream "
                "step, or pass the right layer."
            )
    uns = adata.uns if hasattr(adata, "uns") else {}
    declared = uns.get("x_kind")
    if isinstance(declared, str) and declared in X_KINDS and declared != x_kind:
        if uns.get("raw_x_kind") == x_kind:
            # adata.raw.to_adata() copies the parent's uns, whose x_kind describes the parent's X
            # (pbmc68k_reduced: X scaled, raw log-normalized); raw_x_kind describes these values.
            logger.debug("%s: uns['x_kind'] %r describes the parent's X; uns['raw_x_kind'] %r matches these values.",
                         where, declared, x_kind)
        else:
            msg = (
                f"{where}: uns['x_kind'] says {declared!r} but the values look {x_kind!r}; using {x_kind!r}. "
                "uns may be stale (adata.raw.to_adata() copies the parent's uns, which describes the parent's X): "
                f"set uns['x_kind'] = {x_kind!r} to match."
            )
            report_warnings.append(msg)
            logger.warning(msg)
    if x_kind == "log_normalized":
        hint = _raw_hint(adata, layer=layer)
        msg = f"{where}: log-normalized input detected; raw counts are preferred." + (
            "" if "log-normalized values" in hint else hint)
        report_warnings.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    n_empty = int(np.sum(_nonzero_per_row(X) == 0))
    if n_empty == n_cells:
        raise CellWeaveInputError(
            f"{where}: all {n_cells} cells have only zeros in {source}. "
            "Check that the right layer or modality was passed."
        )
    if n_empty:
        msg = (
            f"{where}: {n_empty} of {n_cells} cells have no nonzero feature; they are embedded from "
            "their other tokens only. Filter them (sc.pp.filter_cells(adata, min_counts=1)) if unwanted."
        )
        report_warnings.append(msg)
        logger.warning(msg)
    return ValidationReport(
        x_kind=x_kind,
        n_cells=int(n_cells),
        n_features=int(n_features),
        n_empty_cells=n_empty,
        warnings=report_warnings,
    )


def check_unique_cell_names(obj: AnnData | MuData, *, where: str = "data", fix: str = "adata") -> None:
    """Refuse duplicate cell names (``obs_names``).

    Results are written back by cell name and the modalities of a MuData are paired by it, so a
    duplicate would put one cell's result on another. Refused rather than renamed: which of two
    same-named cells is which is for the user to decide (two files concatenated without
    ``index_unique``, or a barcode measured twice).

    Parameters
    ----------
    obj
        AnnData or MuData.
    where
        Names the object in the message.
    fix
        The expression the message applies ``.obs_names_make_unique()`` to.

    Raises
    ------
    CellWeaveInputError
        Naming how many names are duplicated, examples, and the fix.
    """
    dup = obj.obs_names.duplicated()
    if dup.any():
        examples = list(dict.fromkeys(obj.obs_names[dup]))[:5]
        raise CellWeaveInputError(
            f"{where}: {int(dup.sum())} duplicate cell names (e.g. {examples}); results are written back by cell "
            f"name, so they would land on the wrong cells. Make them unique with {fix}.obs_names_make_unique()"
            + ("; mdata.update()." if fix.startswith("mdata.") else ".")
        )


# --------------------------------------------------------------------------------------------
# Modalities


def _canonical_modality(name: str) -> str | None:
    """Model or non-model modality name for ``name`` (a registered modality's name or alias, see
    ``cellweave.modalities``; or a skipped label modality), or None when unknown."""
    modality = _modalities.lookup(name)
    if modality is not None:
        return modality.name
    key = str(name).strip().lower()
    return key if key in _modalities.SKIPPED else None


def check_modalities(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Sort modality names into the ones the model uses and the ones it skips.

    Aliases of registered modalities (``cellweave.modalities``) are mapped with an info log:
    ``RNA``, ``GEX``, ``Gene Expression`` -> ``rna``; ``ADT``, ``protein``, ``Antibody Capture`` ->
    ``prot``; ``ATAC``, ``Peaks`` -> ``atac``.

    Parameters
    ----------
    names
        Modality names, e.g. ``mdata.mod.keys()``.

    Returns
    -------
    ``(used, skipped)``: canonical model modalities (in the given order) and the non-model
    modalities (``guide``, ``hto``) present.

    Raises
    ------
    CellWeaveInputError
        For a name that is neither a known modality nor an alias of one.
    """
    used: list[str] = []
    skipped: list[str] = []
    names = list(names)
    taken = {_canonical_modality(n) for n in names} - {None}
    for name in names:
        canon = _canonical_modality(name)
        if canon is None:
            free = [m for m in _modalities.names() if m not in taken]
            rename = (f"If it holds one of {free}, rename it, e.g. mdata.mod[{free[0]!r}] = "
                      f"mdata.mod.pop({name!r}); mdata.update(). " if free else "")
            raise CellWeaveInputError(
                f"Unknown modality {name!r}. Known modalities: {list(_modalities.names())} (model) and "
                f"{list(_modalities.SKIPPED)} (skipped). {rename}Otherwise remove it: "
                f"del mdata.mod[{name!r}]; mdata.update()."
            )
        if canon != name:
            logger.info("Modality %r taken as %r.", name, canon)
        target = skipped if canon in _modalities.SKIPPED else used
        if canon in used or canon in skipped:
            raise CellWeaveInputError(
                f"Two modalities map to {canon!r} (one of them is {name!r}). "
                "Keep one of them or rename the other."
            )
        target.append(canon)
    return used, skipped


def as_modalities(obj: AnnData | MuData, *, modality_for_anndata: str = _modalities.PRIMARY) -> dict[str, AnnData]:
    """The model modalities of ``obj``, under canonical names.

    Parameters
    ----------
    obj
        An AnnData (taken as ``modality_for_anndata``) or a MuData.
    modality_for_anndata
        Modality an AnnData holds.

    Returns
    -------
    ``{modality: AnnData}``. ``guide``/``hto`` modalities are skipped with an info log. Each
    AnnData keeps its own ``obs_names``: the cells of a MuData may differ between modalities
    (unpaired data, or cells missing a modality), so the caller aligns them to
    ``mdata.obs_names`` (e.g. ``mdata.obs_names.get_indexer(adata.obs_names)``).

    Raises
    ------
    CellWeaveInputError
        For an unknown modality name, two names for one modality, or duplicate cell names (in the
        container or in a modality; see :func:`check_unique_cell_names`).
    """
    if hasattr(obj, "mod"):
        used, skipped = check_modalities(list(obj.mod.keys()))
        if skipped:
            logger.info("Skipping non-model modalities %s.", skipped)
        out: dict[str, AnnData] = {}
        for name in obj.mod.keys():
            canon = _canonical_modality(name)
            if canon in used:
                check_unique_cell_names(obj.mod[name], where=f"modality {name!r}", fix=f"mdata.mod[{name!r}]")
                out[canon] = obj.mod[name]
        check_unique_cell_names(obj, where="the MuData", fix="mdata")
        return out
    used, skipped = check_modalities([modality_for_anndata])
    if not used:
        raise CellWeaveInputError(
            f"modality_for_anndata={modality_for_anndata!r} is not a model modality; "
            f"pass one of {list(_modalities.names())}."
        )
    check_unique_cell_names(obj, where=used[0])
    return {used[0]: obj}


def rna_modality(obj: AnnData | MuData, *, purpose: str = "this task", with_container_obs: bool = False) -> AnnData:
    """The RNA of ``obj``: an AnnData itself, or a MuData's ``rna`` modality (any registered alias).

    Parameters
    ----------
    obj
        An AnnData (returned as is) or a MuData.
    purpose
        What needs the RNA, for the error message (e.g. ``"perturbation"``).
    with_container_obs
        Return a copy of the modality with the MuData's own ``obs`` columns added (those not
        prefixed ``modality:``), so group and label columns kept on the container can be used.

    Raises
    ------
    CellWeaveInputError
        The MuData has no RNA modality (the message says how to name one), or any error of
        :func:`as_modalities` (unknown modality names are refused here as everywhere).
    """
    if not hasattr(obj, "mod"):
        return obj
    mods = as_modalities(obj)
    if _modalities.PRIMARY not in mods:
        raise CellWeaveInputError(
            f"The MuData has no 'rna' modality (it has {', '.join(map(str, obj.mod))}); {purpose} needs RNA counts. "
            "If one of these holds RNA, rename it: mdata.mod['rna'] = mdata.mod.pop(NAME); mdata.update(). "
            "Or pass the RNA AnnData itself.")
    rna = mods[_modalities.PRIMARY]
    if not with_container_obs:
        return rna
    rna = rna.copy()
    for col in obj.obs.columns:
        if ":" not in str(col) and col not in rna.obs.columns:
            rna.obs[col] = obj.obs.loc[rna.obs_names, col].values
    return rna
