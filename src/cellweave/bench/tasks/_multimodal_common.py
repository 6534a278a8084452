"""Pieces shared by the impute, multimodal and spatial benchmark tasks."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)


def dense(X: Any) -> np.ndarray:
    return np.asarray(X.todense() if sp.issparse(X) else X, dtype=np.float64)


def log_normalize(X: Any) -> np.ndarray:
    """log1p(counts per 10k), dense float64 (the baselines' input); see :func:`cellweave.data.log_normalize`."""
    from cellweave.data import log_normalize as _log_normalize

    return _log_normalize(X).toarray().astype(np.float64)


def top_variable(X: np.ndarray, train: np.ndarray, n: int = 2000) -> np.ndarray:
    """Columns of the ``n`` most variable features over the training cells only."""
    var = X[train].var(0)
    return np.argsort(-var)[: min(n, X.shape[1])]


def per_feature_correlations(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson and Spearman of every column of ``pred`` with the same column of ``truth``
    (NaN where either is constant over the cells)."""
    from scipy.stats import rankdata

    def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a - a.mean(0)
        b = b - b.mean(0)
        den = np.sqrt((a**2).sum(0) * (b**2).sum(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 1e-12, (a * b).sum(0) / np.where(den > 0, den, 1.0), np.nan)

    return _pearson(pred, truth), _pearson(rankdata(pred, axis=0), rankdata(truth, axis=0))


def pretraining_heldout(model: Any, dataset: str, n_cells: int) -> np.ndarray | None:
    """Positions of the cells of ``dataset`` that the model's pretraining held out for validation
    (rebuilt from the seed and caps in its model card), or ``None`` when the model was not
    pretrained on ``dataset``. Cells subsampled away by the cap are counted as held out."""
    from cellweave.train import split_cells

    card = getattr(model, "card", {}) or {}
    names = [d.get("name") for d in card.get("data", [])]
    if dataset not in names:
        return None
    i = names.index(dataset)
    seed = int(card.get("seed", 0))
    cap = card.get("max_cells_per_dataset")
    idx = np.arange(n_cells)
    if cap is not None and n_cells > int(cap):
        idx = np.sort(np.random.default_rng(seed + 1000 + i).choice(n_cells, int(cap), replace=False))
    rec = card["data"][i]
    if int(rec.get("n_train", -1)) + int(rec.get("n_val", -1)) != idx.size:
        return None  # the data changed since pretraining: cannot rebuild the split
    tr, _ = split_cells(idx.size, val_fraction=float(card.get("val_fraction", 0.1)), seed=seed + i)
    seen = np.zeros(n_cells, dtype=bool)
    seen[idx[tr]] = True
    return np.flatnonzero(~seen)
