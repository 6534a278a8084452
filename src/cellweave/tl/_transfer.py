"""Label transfer on embeddings: a classifier, a novelty score and a threshold set on the reference.

Shared by :func:`cellweave.tl.annotate`, :func:`cellweave.tl.map_query` and the benchmark, so
that the benchmark measures exactly what users run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cellweave._exceptions import CellWeaveInputError

#: Label given to query cells whose novelty is above the threshold.
UNKNOWN_LABEL = "unknown"
#: Neighbours averaged in the novelty score.
N_NOVELTY_NEIGHBORS = 15
#: Share of the reference held out to calibrate the novelty threshold.
CALIBRATION_FRACTION = 0.2


@dataclass
class TransferResult:
    """Per-query-cell outputs of :class:`LabelTransfer`."""

    prediction: np.ndarray  # object array of labels, "unknown" where novel
    raw_prediction: np.ndarray  # the classifier's label before the novelty cut
    confidence: np.ndarray  # float32 max class probability
    novelty: np.ndarray  # float32 mean distance to the k nearest reference cells
    unknown: np.ndarray  # bool
    proba: np.ndarray = field(repr=False)  # (n, n_classes)


class LabelTransfer:
    """Logistic regression + kNN-distance novelty, fit on reference embeddings only.

    The embedding is standardized on the reference. A multinomial logistic regression
    (``C``) predicts labels; the novelty of a cell is its mean Euclidean distance to the
    ``k`` nearest cells of an index built on 80% of the reference (stratified, seeded). The
    threshold is the ``novelty_quantile`` quantile of the scores of the held-out 20%: cells of
    known types unseen by the index, the right yardstick for query cells. Nothing here looks at
    the query.
    """

    def __init__(self, *, novelty_quantile: float = 0.99, n_neighbors: int = N_NOVELTY_NEIGHBORS, C: float = 1.0,
                 seed: int = 0) -> None:
        if not 0.0 < novelty_quantile <= 1.0:
            raise CellWeaveInputError(f"novelty_quantile must be in (0, 1], got {novelty_quantile}.")
        self.novelty_quantile = novelty_quantile
        self.n_neighbors = n_neighbors
        self.C = C
        self.seed = seed

    def fit(self, embedding: np.ndarray, labels: np.ndarray) -> LabelTransfer:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
        from sklearn.neighbors import NearestNeighbors
        from sklearn.preprocessing import StandardScaler

        labels = np.asarray(labels).astype(str)
        self.scaler_ = StandardScaler().fit(embedding)
        z = self.scaler_.transform(embedding)
        # lbfgs fits the multinomial (softmax) model for more than two classes.
        self.classifier_ = LogisticRegression(C=self.C, max_iter=1000, random_state=self.seed).fit(z, labels)
        self.classes_ = [str(c) for c in self.classifier_.classes_]
        n_test = max(len(self.classes_), math.ceil(CALIBRATION_FRACTION * len(labels)))
        fit_idx, calib_idx = train_test_split(
            np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=self.seed
        )
        self.k_ = min(self.n_neighbors, len(fit_idx))
        self.index_ = NearestNeighbors(n_neighbors=self.k_).fit(z[fit_idx])
        calib = self.index_.kneighbors(z[calib_idx])[0].mean(axis=1)
        self.threshold_ = float(np.quantile(calib, self.novelty_quantile))
        return self

    def predict(self, embedding: np.ndarray) -> TransferResult:
        z = self.scaler_.transform(embedding)
        proba = self.classifier_.predict_proba(z)
        raw = self.classifier_.classes_[proba.argmax(axis=1)].astype(object)
        novelty = self.index_.kneighbors(z)[0].mean(axis=1).astype(np.float32)
        unknown = novelty > self.threshold_
        pred = raw.copy()
        pred[unknown] = UNKNOWN_LABEL
        return TransferResult(pred, raw, proba.max(axis=1).astype(np.float32), novelty, unknown, proba)
