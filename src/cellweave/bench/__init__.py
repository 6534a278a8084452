"""Baselines, metrics and reports: cellweave beside simple methods on the same cells."""

from ._knn import knn_accuracy, pca_hvg_embedding
from ._report import HtmlReport
from ._umap import umap_coordinates

__all__ = ["HtmlReport", "knn_accuracy", "pca_hvg_embedding", "umap_coordinates"]
