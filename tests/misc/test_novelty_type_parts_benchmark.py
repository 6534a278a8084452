"""benchmarks/novelty_type_parts.py: each novelty part's AUROC for a left-out type, and their means by type."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def type_parts(benchmark_script):
    return benchmark_script("novelty_type_parts")


def test_parts_are_scored_alone_and_beside_the_default(type_parts) -> None:
    rng = np.random.default_rng(0)
    centers = 8.0 * np.eye(3, 10)
    ref = np.concatenate([c + rng.standard_normal((150, 10)) for c in centers]).astype(np.float32)
    y = np.repeat(["a", "b", "c"], 150)
    far = np.full((60, 10), -6.0) + rng.standard_normal((60, 10))  # a type the reference lacks, far from all
    query = np.concatenate([*(c + rng.standard_normal((60, 10)) for c in centers), far]).astype(np.float32)
    is_novel = np.r_[np.zeros(180, bool), np.ones(60, bool)]
    row = type_parts.part_aurocs(ref, y, query, is_novel, seed=0)
    assert set(row) == {"default", "weights", *type_parts.PARTS}
    assert row["distance"] > 0.95 and row["composition"] > 0.95 and row["default"] > 0.95
    assert sum(row["weights"].values()) == pytest.approx(1.0, abs=0.01)
    # A query that is the reference's types only, with one of them relabelled novel: no part can tell it.
    same = np.concatenate([c + rng.standard_normal((60, 10)) for c in centers]).astype(np.float32)
    chance = type_parts.part_aurocs(ref, y, same, np.repeat([False, False, True], 60), seed=0)
    assert chance["distance"] < 0.75 and chance["default"] < 0.75

    rows = [{"dataset": "d", "type": "t", "seed": s, "default": v, "distance": 0.5} for s, v in ((0, 0.6), (1, 0.8))]
    rows.append({"dataset": "d", "type": "u", "seed": 0, "default": 1.0, "distance": 0.2})
    table = type_parts.by_type(rows)
    assert table["d: t"] == {"default": pytest.approx(0.7), "distance": pytest.approx(0.5), "splits": 2}
    assert table["d: all"]["default"] == pytest.approx(0.8) and table["d: all"]["splits"] == 3
