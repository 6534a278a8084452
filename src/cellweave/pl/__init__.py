"""Plots, scanpy-style: ``cellweave.pl.umap(adata, color=...)`` and one function per task, each reading
what the matching ``cellweave.tl`` function wrote into AnnData. The array-level helpers below them
draw the same figures from plain arrays (the benchmark reports use them where no AnnData exists)."""

from ._embedding import annotation, embedding, gene_map, query_mapping, umap
from ._imputation import imputation
from ._perturbation import perturbation
from ._plots import (
    category_colors,
    embedding_panels,
    embedding_scatter,
    loss_curves,
    predicted_vs_observed,
    reference_query_scatter,
)
from ._training import training

__all__ = [
    # user functions: adata first (scanpy style)
    "embedding", "umap", "annotation", "query_mapping", "perturbation", "gene_map", "imputation", "training",
    # array-level helpers (the reports' building blocks)
    "category_colors", "embedding_panels", "embedding_scatter", "loss_curves", "predicted_vs_observed",
    "reference_query_scatter",
]
