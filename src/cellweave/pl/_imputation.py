"""``pl.imputation``: predicted against measured values of ``tl.impute``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cellweave._exceptions import CellWeaveInputError

from ._keys import _listing, finish, obsm_key, uns_record
from ._plots import _pyplot, predicted_vs_observed

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def _observed_matrix(adata: AnnData, observed: Any, names: list[str], layer: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The measured values as (cells of ``adata`` that were measured) x (predicted features), and those cells."""
    if hasattr(observed, "obs_names"):
        rows = observed.obs_names.get_indexer(adata.obs_names)
        cols = observed.var_names.get_indexer(names)
        if (rows < 0).all():
            raise CellWeaveInputError("observed shares no cell (obs_names) with adata.")
        if (cols < 0).all():
            raise CellWeaveInputError(f"observed measures none of the predicted features ({_listing(names, 5)}); "
                                      f"its var_names begin {_listing(observed.var_names[:5])}.")
        X = observed.layers[layer] if layer is not None else observed.X
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        cells = np.flatnonzero(rows >= 0)
        out = np.full((cells.size, len(names)), np.nan)
        out[:, cols >= 0] = np.asarray(X, dtype=float)[rows[cells]][:, cols[cols >= 0]]
        return out, cells
    X = np.asarray(observed, dtype=float)
    if X.shape != (adata.n_obs, len(names)):
        raise CellWeaveInputError(f"observed has shape {X.shape}; the predictions have {(adata.n_obs, len(names))}. "
                                  "Pass an AnnData (aligned by obs_names and var_names) or an array of that shape.")
    return X, np.arange(adata.n_obs)


def imputation(
    adata: AnnData,
    observed: AnnData | np.ndarray,
    *,
    target: str = "prot",
    key_added: str | None = None,
    layer: str | None = None,
    features: Sequence[str] | None = None,
    max_panels: int = 35,
    ncols: int = 7,
    show: bool | None = None,
) -> Figure:
    """Predicted against measured value, one panel per feature, for what :func:`cellweave.tl.impute` wrote.

    Parameters
    ----------
    adata
        Cells after ``tl.impute`` (``obsm[key_added]``, feature names in ``uns["cellweave"][key_added]``).
    observed
        The measured values in the units of the predictions (``uns["cellweave"][key_added]["units"]``;
        CLR for fine-tuned protein predictions: ``cellweave.data.clr(counts)``): an AnnData aligned
        by ``obs_names`` and ``var_names`` (cells or features it lacks are left out), or an array
        of the predictions' shape.
    target, key_added
        As given to ``tl.impute`` (``key_added`` defaults to ``f"cellweave_{target}"``).
    layer
        Layer of ``observed`` holding the values (default ``X``).
    features
        Feature names to show (default: all, up to ``max_panels``).
    max_panels, ncols
        Most panels drawn, panels per row.
    show
        Call ``plt.show()``.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`: one panel per feature, with the identity line.

    Examples
    --------
    >>> cellweave.tl.impute(rna_only, target="prot", reference=cite_mdata)
    >>> measured = cite_test["prot"].copy()
    >>> measured.X = cellweave.data.clr(measured.X)
    >>> cellweave.pl.imputation(rna_only, measured, target="prot")
    """
    plt = _pyplot()
    key = key_added or f"cellweave_{target}"
    step = f"`cellweave.tl.impute(adata, target={target!r})`"
    record = uns_record(adata, key, step=step)
    pred = np.asarray(adata.obsm[obsm_key(adata, key, hint=f" Run {step} first.")], dtype=float)
    names = [str(n) for n in record.get("feature_names", record.get("features", []))]
    obs, cells = _observed_matrix(adata, observed, names, layer)
    pred = pred[cells]
    if features is None:
        shown = list(range(len(names)))
    else:
        index = {n: j for j, n in enumerate(names)}
        unknown = [f for f in features if f not in index]
        if unknown:
            raise CellWeaveInputError(f"features {_listing(unknown, 5)} were not predicted; predicted: {_listing(names)}.")
        shown = [index[f] for f in features]
    if len(shown) > max_panels:
        logger.info("Showing the first %d of %d features (max_panels)", max_panels, len(shown))
        shown = shown[:max_panels]
    units = str(record.get("units", record.get("value_scale", "")))
    n = len(shown)
    ncol = max(1, min(ncols, n))
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 2.4 * nrow), squeeze=False)
    for j, ax in enumerate(axes.ravel()):
        if j >= n:
            ax.axis("off")
            continue
        col = shown[j]
        # Axis labels on the outer panels only (the panel below, if any, carries the x label).
        predicted_vs_observed(ax, obs[:, col], pred[:, col], xlabel="measured" if j + ncol >= n else "",
                              ylabel="predicted" if j % ncol == 0 else "", title=names[col][:18])
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{key}: predicted vs measured, {cells.size} cells" + (f" ({units})" if units else "")
                 + " (dashed: perfect prediction)", fontsize=9)
    fig.tight_layout()
    return finish(fig, None, show)
