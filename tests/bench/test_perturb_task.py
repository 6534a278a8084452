"""The perturb benchmark's metrics and baselines, on synthetic numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellweave.bench.tasks.perturb import DIRECTIONS, on_target_down, score
from cellweave.models import spread_ratio


def test_score_perfect_constant_and_opposite_predictions() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=50)
    top = np.argsort(-np.abs(true))[:20]
    perfect = score(true, true, top)
    assert perfect["pearson_delta"] == pytest.approx(1.0) and perfect["pearson_delta_top20"] == pytest.approx(1.0)
    assert perfect["mse"] == pytest.approx(0.0) and perfect["direction_top20"] == 1.0
    none = score(np.zeros(50), true, top)
    assert none["pearson_delta"] == 0.0 and none["direction_top20"] == 0.0  # no change gets no direction right
    assert none["mse"] == pytest.approx(np.mean(true ** 2))
    flipped = score(-2 * true, true, top)
    assert flipped["pearson_delta"] == pytest.approx(-1.0) and flipped["direction_top20"] == 0.0


def test_training_mean_is_flagged_as_collapsed() -> None:
    rng = np.random.default_rng(1)
    observed = rng.normal(size=(5, 30))
    train_mean = np.repeat(rng.normal(size=(1, 30)), 5, axis=0)
    assert spread_ratio(train_mean, observed) == pytest.approx(0.0, abs=1e-9)
    assert spread_ratio(observed + 0.01, observed) == pytest.approx(1.0)


def test_on_target_down_is_a_note_and_spread_ratio_is_never_ranked() -> None:
    """on_target_down separates no method (the training mean predicts most targets lower): it is
    not among the scored metrics; spread_ratio has no better direction, so the table names no best."""
    from cellweave.bench import comparison_table, make_records

    true = np.linspace(-1, 1, 10)
    assert "on_target_down" not in score(true, true, np.arange(5))
    assert on_target_down(true, 0) == 1.0 and on_target_down(true, 9) == 0.0 and np.isnan(on_target_down(true, -1))
    assert DIRECTIONS["spread_ratio"] is None and DIRECTIONS["mse"] is False
    recs = (make_records("perturb", "d", "s", 0, "cellweave", {"spread_ratio": 0.6, "mse": 0.1}, DIRECTIONS)
            + make_records("perturb", "d", "s", 0, "training mean", {"spread_ratio": 0.0, "mse": 0.2}, DIRECTIONS))
    t = comparison_table(recs).set_index("metric")
    assert pd.isna(t.loc["spread_ratio (diagnostic)", "best"])
    assert pd.isna(t.loc["spread_ratio (diagnostic)", "cellweave vs best baseline"])
    assert t.loc["mse (lower better)", "best"] == "cellweave"
