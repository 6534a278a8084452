"""Scores shared by layers that may not import each other: pretraining's kNN monitor (``train``) and
the benchmarks (``bench``) rate an embedding by the same rule. numpy and scikit-learn only."""

from __future__ import annotations

import numpy as np


def knn_accuracy(
    X: np.ndarray, labels, *, k: int = 15, n_splits: int = 5, seed: int = 0
) -> dict[str, float]:
    """Accuracy and macro-F1 of a k-nearest-neighbour classifier, stratified ``n_splits``-fold by cells.

    Returns the mean and standard deviation over folds.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    y = np.asarray(labels).astype(str)
    _, counts = np.unique(y, return_counts=True)
    n_splits = int(min(n_splits, counts.min())) if counts.min() >= 2 else 2
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    acc, f1 = [], []
    for train, test in folds.split(X, y):
        clf = KNeighborsClassifier(n_neighbors=min(k, len(train))).fit(X[train], y[train])
        pred = clf.predict(X[test])
        acc.append(accuracy_score(y[test], pred))
        f1.append(f1_score(y[test], pred, average="macro"))
    return {
        "accuracy": float(np.mean(acc)),
        "accuracy_std": float(np.std(acc)),
        "macro_f1": float(np.mean(f1)),
        "macro_f1_std": float(np.std(f1)),
        "n_splits": n_splits,
    }
