"""Downstream tasks, scanpy-style: ``adata`` first, keyword-only options, results in AnnData."""

from ._annotate import annotate
from ._embed import embed

__all__ = ["annotate", "embed"]
