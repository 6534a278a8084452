"""Looking up what a ``tl`` function wrote, with errors that name what is there and the step to run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _listing(keys: Iterable[Any], limit: int = 30) -> str:
    keys = [str(k) for k in keys]
    if not keys:
        return "none"
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(repr(k) for k in keys[:limit]) + more


def obsm_key(adata: AnnData, basis: str, *, hint: str = "") -> str:
    """The ``obsm`` key of ``basis``: itself, or ``"X_" + basis`` (scanpy's ``basis="umap"``)."""
    for key in (basis, f"X_{basis}"):
        if key in adata.obsm:
            return key
    if not hint and basis in ("umap", "X_umap"):
        hint = (' Compute it first: `sc.pp.neighbors(adata, use_rep="X_cellweave"); sc.tl.umap(adata)`, or '
                '`adata.obsm["X_umap"] = cellweave.tl.umap_coordinates(adata.obsm["X_cellweave"])`.')
    raise CellWeaveInputError(
        f"No .obsm[{basis!r}] (nor .obsm['X_{basis}']); .obsm holds: {_listing(adata.obsm.keys())}.{hint}"
    )


def obs_column(adata: AnnData, key: str, *, step: str = "") -> Any:
    """``adata.obs[key]``, or an error naming the ``obs`` columns (and the ``tl`` step that writes ``key``)."""
    if key not in adata.obs.columns:
        run = f" Run {step} first." if step else ""
        raise CellWeaveInputError(f"No .obs[{key!r}]; .obs holds: {_listing(adata.obs.columns)}.{run}")
    return adata.obs[key]


def color_values(adata: AnnData, key: str, *, layer: str | None = None) -> Any:
    """What ``color=key`` means, as scanpy reads it: a column of ``obs``, else a gene of ``var_names``
    (its values in ``X`` or ``layer``)."""
    if key in adata.obs.columns:
        return adata.obs[key]
    if key in adata.var_names:
        col = adata[:, key]
        values = col.layers[layer] if layer is not None else col.X
        values = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
        return np.asarray(values, dtype=float).ravel()
    raise CellWeaveInputError(
        f"color={key!r} is neither a column of .obs nor a gene of .var_names; .obs holds: "
        f"{_listing(adata.obs.columns)}; .var_names begin {_listing(adata.var_names[:5])}."
    )


def uns_record(adata: AnnData, name: str, *, step: str) -> dict[str, Any]:
    """``adata.uns["cellweave"][name]``: the record a ``tl`` step left."""
    records = adata.uns.get(UNS_KEY, {})
    if name not in records:
        raise CellWeaveInputError(
            f"No .uns[{UNS_KEY!r}][{name!r}]; .uns[{UNS_KEY!r}] holds: {_listing(records.keys())}. Run {step} first."
        )
    return records[name]


def finish(fig: Figure, ax: Axes | None, show: bool | None) -> Figure | Axes:
    """The Axes when the caller gave one, else the Figure; ``plt.show()`` only when asked."""
    if show:
        import matplotlib.pyplot as plt

        plt.show()
    return ax if ax is not None else fig
