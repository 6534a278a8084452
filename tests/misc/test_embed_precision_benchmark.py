"""The pure helpers of benchmarks/embed_precision.py: per-cell cosines and the summary over datasets."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("embed_precision")


def test_cosines_are_per_cell(script) -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(script.cosines(a, b), [1.0, 0.0, 0.0])  # a zero row gives 0, not NaN


def test_summary_leaves_the_warm_up_dataset_out_of_the_speed_up(script) -> None:
    rows = [
        {"knn 32-true": 0.8, "knn bf16-mixed": 0.81, "seconds 32-true": 30.0, "seconds bf16-mixed": 5.0, "min cosine": 0.999},
        {"knn 32-true": 0.6, "knn bf16-mixed": 0.59, "seconds 32-true": 4.0, "seconds bf16-mixed": 2.0, "min cosine": 0.998},
        {"knn 32-true": 0.7, "knn bf16-mixed": 0.70, "seconds 32-true": 6.0, "seconds bf16-mixed": 4.0, "min cosine": 0.9999},
    ]
    s = script.summarize(rows)
    assert s["datasets"] == 3
    assert s["knn 32-true"] == 0.7 and s["knn bf16-mixed"] == 0.7
    assert s["knn difference min"] == -0.01 and s["knn difference max"] == 0.01
    assert s["min cosine"] == 0.998
    # (4 + 6) / (2 + 4), not (30 + 4 + 6) / (5 + 2 + 4): the first dataset's float32 pass had the warm-up.
    assert s["speed-up (total seconds, first dataset left out)"] == pytest.approx(1.67)
    assert (s["speed-up min"], s["speed-up max"]) == (1.5, 2.0)


def test_summary_of_the_adapted_path_sums_adaptation_and_embedding(script) -> None:
    base = {"knn 32-true": 0.7, "knn bf16-mixed": 0.7, "seconds 32-true": 2.0, "seconds bf16-mixed": 1.0,
            "min cosine": 0.999}
    rows = [
        {**base, "adapt seconds 32-true": 10.0, "adapted embed seconds 32-true": 2.0, "adapted knn 32-true": 0.80,
         "adapt seconds bf16-mixed": 8.0, "adapted embed seconds bf16-mixed": 1.0, "adapted knn bf16-mixed": 0.82},
        {**base, "adapt seconds 32-true": 20.0, "adapted embed seconds 32-true": 4.0, "adapted knn 32-true": 0.90,
         "adapt seconds bf16-mixed": 14.0, "adapted embed seconds bf16-mixed": 1.0, "adapted knn bf16-mixed": 0.89},
    ]
    s = script.summarize(rows)
    assert s["adapted knn 32-true"] == 0.85 and s["adapted knn bf16-mixed"] == 0.855
    assert (s["adapted knn difference min"], s["adapted knn difference max"]) == (-0.01, 0.02)
    assert s["adapt + embed seconds 32-true"] == 36.0 and s["adapt + embed seconds bf16-mixed"] == 24.0
    assert s["adapt + embed speed-up"] == 1.5
    assert "adapted knn 32-true" not in script.summarize([base])  # without --adapt: the embedding rows only
