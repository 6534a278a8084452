"""Cells (or genes) on a 2-D embedding, coloured by what ``tl`` wrote: ``pl.embedding``, ``pl.umap``,
``pl.annotation``, ``pl.query_mapping``, ``pl.gene_map``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cellweave._exceptions import CellWeaveInputError

from ._keys import color_values, finish, obs_column, obsm_key, uns_record
from ._plots import (
    MISSING_COLOR,
    _pyplot,
    _sorted_categories,
    category_colors,
    embedding_panels,
    embedding_scatter,
    reference_query_scatter,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: ``obs`` columns written by ``tl.annotate`` (confidence) and ``tl.map_query`` (uncertainty),
#: after the prediction itself, in the order they are drawn.
_ANNOTATION_SUFFIXES = ("_prediction", "_confidence", "_uncertainty", "_novelty")


def _basis_label(key: str) -> str:
    """Axis name of an ``obsm`` key, as scanpy labels them: ``X_umap`` -> ``UMAP`` (``UMAP 1``, ``UMAP 2``)."""
    name = key[2:] if key.startswith("X_") else key
    low = name.lower()
    for part, label in (("umap", "UMAP"), ("tsne", "tSNE"), ("pca", "PC")):
        if part in low:
            return label
    return name


def _is_categorical(values: Any) -> bool:
    if isinstance(values, pd.Series):
        dtype = values.dtype
        return isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype) or \
            not pd.api.types.is_numeric_dtype(dtype)
    return False  # gene expression from var_names


def _category_palette(adata: AnnData, key: str, values: pd.Series,
                      palette: Mapping[str, Any] | None) -> dict[str, Any]:
    """Colours of a categorical key that stay with each category across calls and subsets.

    For a categorical column, as scanpy does: the colours in ``uns[f"{key}_colors"]`` (one per
    category; anndata subsets them with the categories) when present, else :func:`category_colors`
    over every category, written there (not into a view). Other columns: the values present.
    """
    from matplotlib.colors import to_hex

    if not isinstance(values.dtype, pd.CategoricalDtype):
        colors = category_colors(_sorted_categories(values.astype(str).to_numpy()))
    else:
        cats = [str(c) for c in values.cat.categories]
        stored = adata.uns.get(f"{key}_colors") if key in adata.obs.columns else None
        if stored is not None and len(stored) == len(cats):
            colors = dict(zip(cats, stored))
        else:
            default = category_colors(_sorted_categories(np.asarray(cats, dtype=str)))
            colors = {c: to_hex(default[c]) for c in cats}
            if key in adata.obs.columns and not adata.is_view:
                adata.uns[f"{key}_colors"] = [colors[c] for c in cats]
        colors.setdefault("nan", MISSING_COLOR)
    if palette is not None:
        colors.update({str(k): v for k, v in palette.items()})
    return colors


def _continuous_scatter(ax: Axes, coords: np.ndarray, values: np.ndarray, *, title: str, point_size: float,
                        basis: str | None, cmap: str) -> None:
    """Continuous values with a colour bar; the highest values drawn last (on top), NaN in grey below."""
    values = np.asarray(values, dtype=float)
    nan = ~np.isfinite(values)
    if nan.any():
        ax.scatter(coords[nan, 0], coords[nan, 1], s=point_size, color=MISSING_COLOR, linewidths=0, rasterized=True)
    order = np.flatnonzero(~nan)[np.argsort(values[~nan], kind="stable")]
    sc = ax.scatter(coords[order, 0], coords[order, 1], s=point_size, c=values[order], cmap=cmap, linewidths=0,
                    rasterized=True)
    ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if basis:
        ax.set_xlabel(f"{basis} 1", fontsize=8)
        ax.set_ylabel(f"{basis} 2", fontsize=8)


def embedding(
    adata: AnnData,
    basis: str = "umap",
    *,
    color: str | Sequence[str] | None = None,
    split_by: str | None = None,
    layer: str | None = None,
    title: str | Sequence[str] | None = None,
    palette: Mapping[str, Any] | None = None,
    cmap: str = "viridis",
    point_size: float = 3,
    max_legend: int = 25,
    ncols: int = 3,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | Axes:
    """Cells on a 2-D embedding of ``obsm``, coloured by columns of ``obs`` or by genes.

    Categorical columns get one colour per category from :func:`category_colors` (grey only for
    missing labels: ``"unlabelled"``, ``"nan"``, ``"other"``) and a legend outside the axes;
    numeric columns and genes get a colour bar. Several keys give one panel each.

    Parameters
    ----------
    adata
        Cells with ``obsm[basis]`` (or ``obsm["X_" + basis]``).
    basis
        The coordinates: ``"umap"`` reads ``obsm["X_umap"]`` (scanpy's ``sc.tl.umap``, or
        ``cellweave.tl.umap_coordinates`` of ``obsm["X_cellweave"]``); the first two columns are drawn.
    color
        A column of ``obs`` or a gene of ``var_names``, or a list of them (one panel each).
    split_by
        A column of ``obs`` (e.g. the dataset): one panel per group, each with only its cells and its
        own legend, for labels that are separate vocabularies per group (one categorical ``color``).
    layer
        Layer of the gene values (default ``X``).
    title
        Panel title(s); default: the key.
    palette
        Category -> colour, overriding :func:`category_colors` for those categories.
    cmap
        Colour map of continuous values.
    point_size, max_legend, ncols
        Marker size, largest number of categories given a legend, panels per row.
    ax
        Draw into this Axes (one key, no ``split_by``); the Axes is returned.
    show
        Call ``plt.show()`` (never done otherwise).

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, or ``ax`` when given. For a categorical ``obs`` column
    without them, the colours are written to ``uns[f"{key}_colors"]`` as scanpy does, so that they
    stay with their categories in later calls and in subsets.

    Examples
    --------
    >>> cellweave.tl.embed(adata)
    >>> adata.obsm["X_umap"] = cellweave.tl.umap_coordinates(adata.obsm["X_cellweave"])
    >>> fig = cellweave.pl.embedding(adata, "umap", color=["cell_type", "batch"])
    >>> fig.savefig("umap.png")
    """
    plt = _pyplot()
    key = obsm_key(adata, basis)
    coords = np.asarray(adata.obsm[key])[:, :2]
    label = _basis_label(key)
    keys = [None] if color is None else [color] if isinstance(color, str) else list(color)
    titles = [title] * len(keys) if title is None or isinstance(title, str) else list(title)
    if len(titles) != len(keys):
        raise CellWeaveInputError(f"{len(titles)} titles for {len(keys)} color keys.")
    values = [None if k is None else color_values(adata, k, layer=layer) for k in keys]

    if split_by is not None:
        if len(keys) != 1 or keys[0] is None or not _is_categorical(values[0]):
            raise CellWeaveInputError("split_by= needs exactly one categorical color key (a column of .obs).")
        if ax is not None:
            raise CellWeaveInputError("split_by= draws several panels: it cannot draw into one ax=.")
        groups = obs_column(adata, split_by).astype(str).to_numpy()
        fig = embedding_panels(coords, values[0].astype(str).to_numpy(), groups, ncols=ncols, basis=label,
                               max_legend=max_legend, point_size=point_size)
        return finish(fig, None, show)

    if ax is not None and len(keys) > 1:
        raise CellWeaveInputError(f"{len(keys)} color keys draw {len(keys)} panels: they cannot share one ax=.")
    if ax is None and len(keys) == 1 and (keys[0] is None or _is_categorical(values[0])):
        fig, axes = None, [None]  # embedding_scatter makes its own figure (the reports' size)
    elif ax is None:
        n = len(keys)
        nc = max(1, min(ncols, n))
        nr = int(np.ceil(n / nc))
        fig, grid = plt.subplots(nr, nc, figsize=(6.0 * nc, 4.5 * nr), squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[n:]:
            extra.axis("off")
    else:
        fig, axes = ax.figure, [ax]
    for i, (k, v, t) in enumerate(zip(keys, values, titles)):
        t = (k or "") if t is None else t
        if k is None:
            out = embedding_scatter(coords, np.full(len(coords), "cells"), title=t, ax=axes[i], max_legend=0,
                                    point_size=point_size, colors={"cells": "#1f77b4"}, basis=label)
        elif _is_categorical(v):
            out = embedding_scatter(coords, v.astype(str).to_numpy(), title=t, ax=axes[i], max_legend=max_legend,
                                    point_size=point_size, colors=_category_palette(adata, k, v, palette), basis=label)
        else:
            _continuous_scatter(axes[i], coords, np.asarray(v, dtype=float), title=t, point_size=point_size,
                                basis=label, cmap=cmap)
            out = axes[i].figure
        fig = fig if fig is not None else out
    if ax is None and len(keys) > 1:
        fig.tight_layout()
    return finish(fig, ax, show)


def umap(adata: AnnData, *, color: str | Sequence[str] | None = None, **kwargs: Any) -> Figure | Axes:
    """Cells on their UMAP (``obsm["X_umap"]``): :func:`embedding` with ``basis="umap"``.

    Parameters
    ----------
    adata
        Cells with ``obsm["X_umap"]``.
    color
        Column(s) of ``obs`` or gene(s).
    **kwargs
        Passed to :func:`embedding` (``split_by``, ``title``, ``ax``, ``show``, ...).

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, or ``ax`` when given.

    Examples
    --------
    >>> import scanpy as sc
    >>> cellweave.tl.embed(adata)
    >>> sc.pp.neighbors(adata, use_rep="X_cellweave")
    >>> sc.tl.umap(adata)
    >>> cellweave.pl.umap(adata, color=["cell_type", "batch"])
    """
    return embedding(adata, "umap", color=color, **kwargs)


def annotation(adata: AnnData, *, key_added: str = "cellweave", basis: str = "umap", **kwargs: Any) -> Figure | Axes:
    """Transferred labels on the embedding, beside how sure each is: the columns that
    :func:`cellweave.tl.annotate` (``_prediction``, ``_confidence``, ``_novelty``) or
    :func:`cellweave.tl.map_query` (``_prediction``, ``_uncertainty``, ``_novelty``) wrote, one panel each.

    Parameters
    ----------
    adata
        The annotated (query) cells, with ``obsm[basis]``.
    key_added
        The prefix given to ``tl.annotate`` / ``tl.map_query``.
    basis
        The coordinates (see :func:`embedding`).
    **kwargs
        Passed to :func:`embedding`.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`.

    Examples
    --------
    >>> cellweave.tl.annotate(query, reference=reference, label_key="cell_type")
    >>> query.obsm["X_umap"] = cellweave.tl.umap_coordinates(query.obsm["X_cellweave"])
    >>> cellweave.pl.annotation(query)
    """
    obs_column(adata, f"{key_added}_prediction",
               step="`cellweave.tl.annotate(adata, reference=..., label_key=...)` (or `cellweave.tl.map_query`)")
    keys = [f"{key_added}{s}" for s in _ANNOTATION_SUFFIXES if f"{key_added}{s}" in adata.obs.columns]
    return embedding(adata, basis, color=keys, **kwargs)


def query_mapping(
    adata: AnnData,
    *,
    key_added: str = "cellweave",
    label_key: str | None = None,
    title: str = "",
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | Axes:
    """Query cells placed on the reference UMAP by :func:`cellweave.tl.map_query`.

    The reference (its UMAP and labels are kept in the query's ``uns["cellweave"]["map_query"]``,
    so the reference object is not needed) is drawn pale, coloured by its labels; the query on top
    with a dark edge, coloured by ``obs[label_key]`` (its measured labels: a query cell on a patch of
    its own colour landed on its type; wrong predictions are crossed) or, without ``label_key``, by
    its predicted label.

    Parameters
    ----------
    adata
        The query after ``tl.map_query``.
    key_added
        The prefix given to ``tl.map_query``.
    label_key
        Column of the query's ``obs`` with measured labels, when known.
    title
        Axes title.
    ax, show
        Draw into this Axes (returned); call ``plt.show()``.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, or ``ax`` when given.

    Examples
    --------
    >>> cellweave.tl.map_query(query, reference=reference, label_key="cell_type")
    >>> cellweave.pl.query_mapping(query, label_key="cell_type")
    """
    step = "`cellweave.tl.map_query(adata, reference=..., label_key=...)`"
    record = uns_record(adata, "map_query", step=step)
    key = obsm_key(adata, f"X_{key_added}_reference_umap", hint=f" Run {step} first.")
    predicted = obs_column(adata, f"{key_added}_prediction", step=step).astype(str).to_numpy()
    if label_key is None:
        shown, wrong = predicted, None
    else:
        shown = obs_column(adata, label_key).astype(str).to_numpy()
        wrong = predicted != shown
    fig = reference_query_scatter(np.asarray(record["reference_umap"]), np.asarray(record["reference_labels"]),
                                  np.asarray(adata.obsm[key]), shown, query_wrong=wrong, ax=ax, title=title)
    return finish(fig, ax, show)


def gene_map(
    adata: AnnData,
    *,
    color: str = "program",
    gene_sets: Mapping[str, Sequence[str]] | None = None,
    min_genes: int = 3,
    basis: str = "umap",
    title: str | None = None,
    max_legend: int = 25,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | Axes:
    """The gene map of :func:`cellweave.tl.gene_map`: genes on their UMAP, coloured by their Leiden
    program, or by known gene sets (genes in none drawn grey, underneath).

    Parameters
    ----------
    adata
        The genes x dimensions AnnData that ``tl.gene_map`` returns (``obsm["X_umap"]``).
    color
        Column of its ``obs`` (default the Leiden ``"program"``); ignored with ``gene_sets``.
    gene_sets
        Set name -> genes (e.g. ``cellweave.tl.gene_sets("program", universe=gmap.obs_names)``).
        A gene in several sets takes the first.
    min_genes
        Sets with fewer genes on the map are left out.
    basis, title, max_legend
        Coordinates, title (default: the number of genes), largest legend.
    ax, show
        Draw into this Axes (returned); call ``plt.show()``.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, or ``ax`` when given.

    Examples
    --------
    >>> gmap = cellweave.tl.gene_map()
    >>> cellweave.pl.gene_map(gmap)
    >>> cellweave.pl.gene_map(gmap, gene_sets=cellweave.tl.gene_sets("program", universe=gmap.obs_names))
    """
    hint = " Build the map with `cellweave.tl.gene_map(umap=True)`."
    key = obsm_key(adata, basis, hint=hint)
    if gene_sets is None:
        obs_column(adata, color, step="`cellweave.tl.gene_map()`")
        t = f"{adata.n_obs} genes by {color}" if title is None else title
        return embedding(adata, key, color=color, title=t, max_legend=max_legend, point_size=4, ax=ax, show=show)
    plt = _pyplot()
    coords = np.asarray(adata.obsm[key])[:, :2]
    names = adata.obs_names
    label = np.full(adata.n_obs, "other", dtype=object)
    kept = []
    for name, genes in gene_sets.items():
        member = names.isin([str(g) for g in genes]) & (label == "other")
        if member.sum() >= min_genes:
            label[member] = str(name)
            kept.append(str(name))
    colors = category_colors(kept)
    if ax is None:
        fig, ax_ = plt.subplots(figsize=(7, 6))
    else:
        fig, ax_ = ax.figure, ax
    other = label == "other"
    ax_.scatter(coords[other, 0], coords[other, 1], s=1, color=MISSING_COLOR, rasterized=True, linewidths=0,
                label=f"other genes ({int(other.sum())})")
    for name in kept:
        m = label == name
        ax_.scatter(coords[m, 0], coords[m, 1], s=8, color=colors[name], linewidths=0, label=f"{name} ({int(m.sum())})")
    ax_.set_title(f"{adata.n_obs} genes" if title is None else title)
    ax_.set_xticks([])
    ax_.set_yticks([])
    b = _basis_label(key)
    ax_.set_xlabel(f"{b} 1", fontsize=8)
    ax_.set_ylabel(f"{b} 2", fontsize=8)
    if 0 < len(kept) + 1 <= max_legend:
        ax_.legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return finish(fig, ax, show)
