"""Plots used by reports (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Categories drawn in grey: cells without a label. No labelled category ever gets a grey.
MISSING_CATEGORIES = ("unlabelled", "nan", "other")
MISSING_COLOR = "#d0d0d0"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _is_grey(rgba) -> bool:
    r, g, b = rgba[:3]
    return max(r, g, b) - min(r, g, b) < 0.05


def category_colors(categories: Sequence[Any]) -> dict[str, Any]:
    """One colour per category: grey for missing labels, and a distinct non-grey colour for every
    other category as long as there are colours (9 from tab10, 18 from tab20, 54 from tab20/b/c).

    The greys of the matplotlib palettes are left out so that no label reads as "unlabelled";
    colours repeat only beyond 54 labelled categories. Shades of one hue are spread apart: with
    tab20, categories ``i`` and ``i + 9`` share a hue (dark and light), never neighbours.
    """
    plt = _pyplot()
    cats = [str(c) for c in dict.fromkeys(map(str, categories))]
    labelled = [c for c in cats if c not in MISSING_CATEGORIES]
    if len(labelled) <= 9:
        names = ["tab10"]
    elif len(labelled) <= 18:
        names = ["tab20"]
    else:
        names = ["tab20", "tab20b", "tab20c"]
    # tab20 holds 10 hues in dark/light pairs and tab20b/c 5 hues in 4 shades; taken in that order,
    # neighbouring categories would get two shades of one hue. Take every hue's first shade, then
    # every hue's second one, and so on, so shades of one hue are as far apart as the palette allows.
    shades = {"tab10": 1, "tab20": 2, "tab20b": 4, "tab20c": 4}
    palette = [c for n in names for k in range(shades[n]) for c in plt.get_cmap(n).colors[k::shades[n]]
               if not _is_grey(c)]
    out: dict[str, Any] = {c: MISSING_COLOR for c in cats if c in MISSING_CATEGORIES}
    out.update({c: palette[i % len(palette)] for i, c in enumerate(labelled)})
    return out


def _sorted_categories(labels: np.ndarray) -> list[str]:
    return sorted(set(labels.tolist()), key=lambda c: (c in MISSING_CATEGORIES, c))


def embedding_scatter(
    coords: np.ndarray, labels: Sequence[Any], *, title: str = "", ax=None, max_legend: int = 25,
    point_size: float = 3, colors: Mapping[str, Any] | None = None, basis: str | None = None,
) -> Figure:
    """Scatter of 2-D coordinates coloured by a categorical label, legend outside the axes.

    Parameters
    ----------
    coords
        ``(n, 2)`` coordinates.
    labels
        One category per point; ``"unlabelled"``/``"nan"``/``"other"`` are drawn in grey.
    colors
        Category -> colour, to keep colours equal across panels (default: :func:`category_colors`).
    basis
        Name of the coordinates (``"UMAP"``): axes labelled ``"UMAP 1"``/``"UMAP 2"``.
    max_legend
        Largest number of categories that get a legend (0: no legend).
    """
    plt = _pyplot()
    labels = np.asarray(labels).astype(str)
    cats = _sorted_categories(labels)
    colors = dict(colors) if colors is not None else category_colors(cats)
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 6))
    else:
        fig = ax.figure
    for c in cats:
        sel = labels == c
        ax.scatter(coords[sel, 0], coords[sel, 1], s=point_size, color=colors.get(c, MISSING_COLOR),
                   label=f"{c} ({sel.sum()})", rasterized=True, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if basis:
        ax.set_xlabel(f"{basis} 1", fontsize=8)
        ax.set_ylabel(f"{basis} 2", fontsize=8)
    if 0 < len(cats) <= max_legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=4, fontsize=8, frameon=False)
    return fig


def embedding_panels(
    coords: np.ndarray, labels: Sequence[Any], groups: Sequence[Any], *, ncols: int = 3,
    titles: Mapping[str, str] | None = None, basis: str | None = "UMAP", max_legend: int = 25,
    point_size: float = 3,
) -> Figure:
    """One panel per group (e.g. dataset), each coloured by its own labels with its own legend.

    Labels of different datasets never share a legend, so each dataset's types get distinct
    colours and none of them the grey of missing labels. Each panel shows only its group's points
    (zoomed to them) in the shared coordinates.
    """
    plt = _pyplot()
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups).astype(str)
    names = list(dict.fromkeys(groups.tolist()))
    ncols = max(1, min(ncols, len(names)))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.0 * nrows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        sel = groups == name
        embedding_scatter(coords[sel], labels[sel], title=(titles or {}).get(name, name), ax=ax,
                          max_legend=max_legend, point_size=point_size, basis=basis)
        ax.title.set_fontsize(9)
        leg = ax.get_legend()
        if leg is not None:
            for text in leg.get_texts():
                text.set_fontsize(7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def reference_query_scatter(
    reference_coords: np.ndarray, reference_labels: Sequence[Any], query_coords: np.ndarray,
    query_labels: Sequence[Any], *, query_wrong: np.ndarray | None = None, ax=None, title: str = "",
    basis: str | None = "UMAP",
) -> Figure:
    """The reference coloured by its labels, the query on top in the same colours (by its own,
    measured labels) with a dark edge, so a query cell on a patch of its own colour landed on its
    type. ``query_wrong`` marks query cells whose prediction was wrong with a black cross."""
    plt = _pyplot()
    ref_labels = np.asarray(reference_labels).astype(str)
    q_labels = np.asarray(query_labels).astype(str)
    cats = _sorted_categories(np.concatenate([ref_labels, q_labels]))
    colors = category_colors(cats)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 5))
    else:
        fig = ax.figure
    for c in cats:
        sel = ref_labels == c
        if sel.any():
            ax.scatter(reference_coords[sel, 0], reference_coords[sel, 1], s=5, color=colors[c], alpha=0.45,
                       linewidths=0, rasterized=True)
    for c in cats:
        sel = q_labels == c
        if sel.any():
            ax.scatter(query_coords[sel, 0], query_coords[sel, 1], s=10, color=colors[c], edgecolors="k",
                       linewidths=0.3, rasterized=True)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[c], label=c) for c in cats]
    handles.append(plt.Line2D([], [], marker="o", ls="", color="w", markeredgecolor="k", markeredgewidth=0.6,
                              label="query cell (dark edge;\ncoloured by its measured type)"))
    handles.append(plt.Line2D([], [], marker="o", ls="", color="#999999", alpha=0.5,
                              label="reference cell (pale)"))
    if query_wrong is not None and np.any(query_wrong):
        w = np.asarray(query_wrong, dtype=bool)
        ax.scatter(query_coords[w, 0], query_coords[w, 1], s=14, marker="x", color="k", linewidths=0.7)
        handles.append(plt.Line2D([], [], marker="x", ls="", color="k", label=f"query, predicted wrong ({w.sum()})"))
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if basis:
        ax.set_xlabel(f"{basis} 1", fontsize=8)
        ax.set_ylabel(f"{basis} 2", fontsize=8)
    return fig


def predicted_vs_observed(
    ax: Axes, observed: np.ndarray, predicted: np.ndarray, *, xlabel: str = "observed",
    ylabel: str = "predicted", title: str = "", point_size: float = 4,
) -> None:
    """Predicted against observed values on equal axes, with the identity line (perfect prediction)."""
    observed, predicted = np.asarray(observed, dtype=float), np.asarray(predicted, dtype=float)
    ax.scatter(observed, predicted, s=point_size, alpha=0.6, color="#1f77b4", linewidths=0, rasterized=True)
    both = np.concatenate([observed, predicted])
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="#999999", lw=0.8, ls="--", zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)


def loss_curves(history: list[dict[str, Any]], *, title: str = "Pretraining losses", ax=None) -> Figure:
    """Training and validation losses per epoch (epoch 0 = before training)."""
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    ep = [h["epoch"] for h in history]
    for key, label in [("train_loss", "train loss (token + cell heads)"),
                       ("val_loss", "validation loss (token + cell heads)"),
                       ("val_token_mse", "validation masked-value MSE (token head)")]:
        pts = [(e, h[key]) for e, h in zip(ep, history) if key in h]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared error (log scale)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
