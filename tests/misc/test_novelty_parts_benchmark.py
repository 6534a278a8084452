"""benchmarks/novelty_parts.py: each part's conformal rank for a query, and the unknown calls with and
without ``sharpen_when_shifted``, overall and by type."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def novelty_parts(benchmark_script):
    return benchmark_script("novelty_parts")


def test_part_table_ranks_each_part_and_counts_unknown_as_the_transfer_calls_it(novelty_parts) -> None:
    from cellweave.tl import LabelTransfer

    rng = np.random.default_rng(0)
    centers = 8.0 * np.eye(3, 10)
    ref = np.concatenate([c + rng.standard_normal((150, 10)) for c in centers]).astype(np.float32)
    y = np.repeat(["a", "b", "c"], 150)
    # Known types pulled towards each other (the classifier less sure of them), and a new type.
    known = np.concatenate([0.78 * c + rng.standard_normal((100, 10)) for c in centers])
    novel = np.full((40, 10), -5.0) + rng.standard_normal((40, 10))
    query = np.concatenate([known, novel]).astype(np.float32)
    labels = np.r_[np.repeat(["a", "b", "c"], 100), np.full(40, "new")]
    transfer = LabelTransfer(seed=0).fit(ref, y)
    table = novelty_parts.part_table(transfer, query, labels)
    expected = transfer.predict(query)
    assert table["all"]["unknown"] == pytest.approx(expected.unknown.mean())
    assert table["by_type"]["new"]["unknown"] == pytest.approx(expected.unknown[labels == "new"].mean())
    assert sum(row["cells"] for row in table["by_type"].values()) == len(query)
    # The query is sharpened (temperature below 1) and the rule before ranks its softmax part higher.
    assert 0 < table["temperature"] < 1
    assert (table["all"]["softmax, not sharpened when shifted: median rank"]
            > table["all"]["softmax: median rank"])
    assert table["all"]["unknown, not sharpened when shifted"] >= table["all"]["unknown"]
    for row in [table["all"], *table["by_type"].values()]:
        assert all(0.0 <= v <= 1.0 for k, v in row.items() if "rank" in k or "share" in k)
    # The new type is the one the parts rank highest.
    assert table["by_type"]["new"]["distance: median rank"] > table["by_type"]["a"]["distance: median rank"]
    # The transfer is left in its default's state.
    assert transfer.sharpen_when_shifted and transfer.temperature_ == pytest.approx(table["temperature"])
