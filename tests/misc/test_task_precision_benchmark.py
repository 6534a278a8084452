"""The pure helpers of benchmarks/task_precision.py: Pearson, the top-k overlap and a task's row."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("task_precision")


def test_pearson_flattens_and_gives_zero_for_a_constant(script) -> None:
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert script.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert script.pearson(a, -a) == pytest.approx(-1.0)
    assert script.pearson(a, np.ones_like(a)) == 0.0  # not NaN


def test_top_overlap_ranks_by_absolute_value_per_row(script) -> None:
    a = np.array([5.0, -4.0, 0.1, 0.2])
    assert script.top_overlap(a, np.array([-5.0, 4.0, 0.2, 0.1]), 2) == 1.0  # signs do not matter
    assert script.top_overlap(a, np.array([0.0, 0.0, 1.0, 2.0]), 2) == 0.0
    rows_a = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    rows_b = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    assert script.top_overlap(rows_a, rows_b, 2) == pytest.approx(0.75)  # (1/2 + 2/2) / 2
    assert script.top_overlap(a, a, 10) == 1.0  # k larger than the row: all of it


def test_a_row_carries_both_timings_and_the_speed_up(script) -> None:
    r = script.row("grn attention", {"32-true": 3.0, "bf16-mixed": 2.0}, **{"score pearson": 0.999951})
    assert r == {"task": "grn attention", "seconds 32-true": 3.0, "seconds bf16-mixed": 2.0, "speed-up": 1.5,
                 "score pearson": 1.0}
