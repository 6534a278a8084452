"""benchmarks/novelty_seeds.py: pooling ``novelty_scores.py`` seeds with the panel's for point 2's
per-dataset novel-type test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def novelty_seeds(benchmark_script):
    return benchmark_script("novelty_seeds")


def test_the_default_row_is_novelty_scores_default_row(novelty_seeds, benchmark_script) -> None:
    novelty_scores = benchmark_script("novelty_scores")
    assert novelty_seeds.DEFAULT_ROW == "combined+composition" + novelty_scores.SHIFTED + ": AUROC"


def _panel_records(values: dict[tuple[str, str, int], list[float]]) -> list[dict]:
    return [{"task": "panel", "dataset": d, "split": "novel type", "seed": s, "method": m, "metric": "novel_auroc",
             "value": v, "higher_is_better": True}
            for (d, m, s), vs in values.items() for v in vs]


def _scores(novelty_seeds, seed: int, per_dataset: dict[str, tuple[float, float]], complete: bool = True) -> dict:
    rows = {d: {novelty_seeds.DEFAULT_ROW: ours, **{f"{b}: AUROC": 0.5 for b in novelty_seeds.BASELINES},
                "kNN composition (PCA): AUROC": base}
            for d, (ours, base) in per_dataset.items()}
    return {"seed": seed, "complete": complete, "novel type": {"per_dataset": rows}}


def test_more_seeds_can_clear_a_gap_that_fails_on_the_panel_seeds(novelty_seeds) -> None:
    values = {}
    for seed, (ours, base) in enumerate([(0.60, 0.66), (0.62, 0.64), (0.58, 0.62)]):  # gap -0.04 on 3 seeds
        values[("haber", "cellweave", seed)] = [ours - 0.1, ours + 0.1]  # two left-out types, mean = ours
        values[("haber", "kNN composition (PCA)", seed)] = [base]
        for b in novelty_seeds.BASELINES[:3]:
            values[("haber", b, seed)] = [0.5]
        values[("other", "cellweave", seed)] = [0.9]
        values[("other", "cellweave (adapted)", seed)] = [0.1]  # another column: never read as cellweave
        for b in novelty_seeds.BASELINES:
            values[("other", b, seed)] = [0.8]
    means = novelty_seeds.panel_seed_means(_panel_records(values), "cellweave")
    assert means["haber"]["cellweave"][0] == pytest.approx(0.60)
    assert means["other"]["cellweave"][1] == pytest.approx(0.9)
    # Seed 0 again (as the panel has it: checked, not added) and seeds 3 and 4 with a gap of 0.0.
    assert novelty_seeds.add_seed(means, _scores(novelty_seeds, 0, {"haber": (0.60, 0.66)})) == []
    for seed in (3, 4):
        assert novelty_seeds.add_seed(means, _scores(novelty_seeds, seed, {"haber": (0.65, 0.65),
                                                                             "unknown dataset": (1.0, 0.0)})) == []
    assert "unknown dataset" not in means
    table = novelty_seeds.gap_table(means, [0, 1, 2])
    haber = table["haber"]
    assert haber["seeds"] == [0, 1, 2, 3, 4]
    assert haber["best baseline"] == "kNN composition (PCA)"
    assert haber["gap, panel seeds"] == pytest.approx(-0.04)
    assert haber["gap"] == pytest.approx(-0.024)
    assert haber["within 0.03, panel seeds"] is False and haber["within 0.03"] is True
    assert haber["per-seed gaps"] == pytest.approx([-0.06, -0.02, -0.04, 0.0, 0.0])
    assert table["other"]["seeds"] == [0, 1, 2] and table["other"]["gap"] == pytest.approx(0.1)


def test_a_seed_that_does_not_reproduce_the_panel_or_is_unfinished_is_refused(novelty_seeds) -> None:
    values = {("d", "cellweave", 0): [0.7], ("d", "kNN composition (PCA)", 0): [0.6],
              **{("d", b, 0): [0.5] for b in novelty_seeds.BASELINES[:3]}}
    means = novelty_seeds.panel_seed_means(_panel_records(values), "cellweave")
    mismatches = novelty_seeds.add_seed(means, _scores(novelty_seeds, 0, {"d": (0.75, 0.6)}))
    assert len(mismatches) == 1 and "d cellweave seed 0" in mismatches[0]
    assert means["d"]["cellweave"][0] == pytest.approx(0.7)  # the panel's value is kept
    with pytest.raises(ValueError, match="not complete"):
        novelty_seeds.add_seed(means, _scores(novelty_seeds, 3, {"d": (0.7, 0.6)}, complete=False))
    with pytest.raises(ValueError, match="--method"):
        novelty_seeds.panel_seed_means(_panel_records(values), "cellweave (adapted)")
