"""Downstream tasks, scanpy-style: ``adata`` first, keyword-only options, results in AnnData."""

from ._embed import embed

__all__ = ["embed"]
