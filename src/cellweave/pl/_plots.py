"""Plots used by reports (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def embedding_scatter(
    coords: np.ndarray, labels: Sequence[Any], *, title: str = "", ax=None, max_legend: int = 25, point_size: float = 3
) -> Figure:
    """Scatter of 2-D coordinates coloured by a categorical label, legend outside the axes."""
    plt = _pyplot()
    labels = np.asarray(labels).astype(str)
    cats = sorted(set(labels.tolist()), key=lambda c: (c in ("unlabelled", "nan"), c))
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 6))
    else:
        fig = ax.figure
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    for i, c in enumerate(cats):
        sel = labels == c
        color = "#d0d0d0" if c in ("unlabelled", "nan") else cmap(i % cmap.N)
        ax.scatter(coords[sel, 0], coords[sel, 1], s=point_size, color=color, label=f"{c} ({sel.sum()})",
                   rasterized=True, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(cats) <= max_legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=4, fontsize=8, frameon=False)
    return fig


def loss_curves(history: list[dict[str, Any]], *, title: str = "Pretraining losses") -> Figure:
    """Training and validation losses per epoch (epoch 0 = before training)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
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
