"""The perturb benchmark's metrics and baselines, on synthetic numbers."""

from __future__ import annotations

import numpy as np
import pytest

from cellweave.bench.tasks.perturb import score
from cellweave.train._perturb import spread_ratio


def test_score_perfect_constant_and_opposite_predictions() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=50)
    top = np.argsort(-np.abs(true))[:20]
    perfect = score(true, true, top, target_col=3)
    assert perfect["pearson_delta"] == pytest.approx(1.0) and perfect["pearson_delta_top20"] == pytest.approx(1.0)
    assert perfect["mse"] == pytest.approx(0.0) and perfect["direction_top20"] == 1.0
    assert perfect["on_target_down"] == float(true[3] < 0)
    none = score(np.zeros(50), true, top, target_col=-1)
    assert none["pearson_delta"] == 0.0 and none["direction_top20"] == 0.0  # no change gets no direction right
    assert none["mse"] == pytest.approx(np.mean(true ** 2)) and np.isnan(none["on_target_down"])
    flipped = score(-2 * true, true, top, target_col=3)
    assert flipped["pearson_delta"] == pytest.approx(-1.0) and flipped["direction_top20"] == 0.0


def test_training_mean_is_flagged_as_collapsed() -> None:
    rng = np.random.default_rng(1)
    observed = rng.normal(size=(5, 30))
    train_mean = np.repeat(rng.normal(size=(1, 30)), 5, axis=0)
    assert spread_ratio(train_mean, observed) == pytest.approx(0.0, abs=1e-9)
    assert spread_ratio(observed + 0.01, observed) == pytest.approx(1.0)
