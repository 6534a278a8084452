"""What the issue-12 diagnostic scripts share: the panel datasets they run on and how they score."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def panel_selection(names: Iterable[str] | None = None) -> Iterator[Any]:
    """The development panel's datasets (``cellweave.bench.tasks.panel``), only those in ``names``
    when given, in the panel's order."""
    from cellweave.bench.tasks.panel import panel_datasets

    wanted = None if names is None else set(names)
    return (d for d in panel_datasets() if wanted is None or d.name in wanted)


def knn_f1(embedding, labels) -> float:
    """The panel's zero-shot score: kNN macro-F1 (k = the panel's, 5-fold, seed 0), 3 decimals."""
    from cellweave.bench import knn_accuracy
    from cellweave.bench.tasks.panel import N_NEIGHBORS

    return round(float(knn_accuracy(embedding, labels, k=N_NEIGHBORS, seed=0)["macro_f1"]), 3)
