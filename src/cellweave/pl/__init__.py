"""Plots, scanpy-style."""

from ._plots import embedding_scatter, loss_curves

__all__ = ["embedding_scatter", "loss_curves"]
