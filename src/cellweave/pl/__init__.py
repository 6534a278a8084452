"""Plots, scanpy-style."""

from ._plots import (
    category_colors,
    embedding_panels,
    embedding_scatter,
    loss_curves,
    predicted_vs_observed,
    reference_query_scatter,
)

__all__ = ["category_colors", "embedding_panels", "embedding_scatter", "loss_curves", "predicted_vs_observed",
           "reference_query_scatter"]
