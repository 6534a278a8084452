"""Metrics and splits of the impute / multimodal / spatial benchmark tasks."""

from __future__ import annotations

import numpy as np
import pytest

from cellweave.bench.tasks._multimodal_common import per_feature_correlations, pretraining_heldout, top_variable
from cellweave.bench.tasks.multimodal import agreement
from cellweave.data import clr


def test_agreement_separates_matching_from_unrelated_views() -> None:
    rng = np.random.default_rng(0)
    joint = rng.normal(size=(200, 16))
    same = agreement(joint + 0.01 * rng.normal(size=joint.shape), joint)
    assert same["FOSCTTM"] < 0.01 and same["cosine (same cell)"] > 0.99 and same["kNN overlap"] > 0.9
    other = agreement(rng.normal(size=(200, 16)), joint)
    assert 0.35 < other["FOSCTTM"] < 0.65 and other["kNN overlap"] < 0.2


def test_per_feature_correlations() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(50, 3))
    pred = np.column_stack([truth[:, 0] * 2 + 1, -truth[:, 1], np.ones(50)])
    pear, spear = per_feature_correlations(pred, truth)
    np.testing.assert_allclose(pear[:2], [1.0, -1.0], atol=1e-9)
    np.testing.assert_allclose(spear[:2], [1.0, -1.0], atol=1e-9)
    assert np.isnan(pear[2]) and np.isnan(spear[2])  # a constant prediction has no correlation


def test_clr_and_training_only_feature_choice() -> None:
    X = np.array([[1.0, 3.0, 0.0], [10.0, 0.0, 5.0]])
    c = clr(X)
    np.testing.assert_allclose(c.mean(1), 0.0, atol=1e-12)
    M = np.zeros((6, 3))
    M[:3, 0] = [0, 5, 10]  # varies in the training cells only
    M[3:, 1] = [0, 50, 100]  # varies in the test cells only
    assert top_variable(M, np.arange(3), 1).tolist() == [0]


def test_pretraining_heldout_rebuilds_the_validation_split() -> None:
    from cellweave.train._pretrain import split_cells

    class _M:
        card = {"seed": 4, "val_fraction": 0.1, "max_cells_per_dataset": 50,
                "data": [{"name": "a", "n_train": 18, "n_val": 2}, {"name": "b", "n_train": 45, "n_val": 5}]}

    held = pretraining_heldout(_M(), "b", 80)
    keep = np.sort(np.random.default_rng(4 + 1000 + 1).choice(80, 50, replace=False))
    _, va = split_cells(50, val_fraction=0.1, seed=4 + 1)
    expected = np.union1d(np.setdiff1d(np.arange(80), keep), keep[va])
    np.testing.assert_array_equal(held, expected)
    assert held.size == 30 + 5
    assert pretraining_heldout(_M(), "c", 80) is None
    assert pretraining_heldout(_M(), "a", 21) is None  # the data changed since pretraining


@pytest.mark.parametrize("task", ["impute", "multimodal", "spatial"])
def test_tasks_are_registered(task) -> None:
    from cellweave.bench import available_tasks

    assert task in available_tasks()


def test_joint_vs_rna_results_ship_with_the_package() -> None:
    """The multimodal report reads the shipped copy (a wheel has no benchmarks/ folder); it must equal the
    published file that benchmarks/joint_vs_rna_pretraining.py writes, where the repository is present."""
    import json
    from pathlib import Path

    from cellweave._exceptions import CellWeaveInputError
    from cellweave.bench.tasks.multimodal import pretraining_results

    shipped = pretraining_results()
    assert shipped and {"task", "dataset", "method", "metric", "value"} <= set(shipped[0])
    published = Path(__file__).resolve().parents[2] / "benchmarks" / "published" / "joint_vs_rna" / "results.json"
    if published.is_file():
        assert shipped == json.loads(published.read_text()), (
            "benchmarks/published/joint_vs_rna/results.json changed: copy it to "
            "src/cellweave/bench/resources/joint_vs_rna_results.json")
        assert pretraining_results(published) == shipped
    with pytest.raises(CellWeaveInputError, match="is not a file"):
        pretraining_results(published.parent / "missing.json")


def test_pretraining_effect_section_is_built_from_the_shipped_results() -> None:
    from cellweave.bench import HtmlReport
    from cellweave.bench.tasks.multimodal import _pretraining_effect

    report = HtmlReport("multimodal")
    _pretraining_effect(report)
    html = "".join(map(str, report.parts))
    assert "Effect of joint pretraining" in html and "<table" in html


def test_pretraining_effect_table_holds_scores_only() -> None:
    """The shipped results carry the fine-tuning fit's best epoch and seconds as records: facts,
    not scores, so they stay out of the table; the pivot's 'pretraining' axis name is no column."""
    from cellweave.bench import HtmlReport
    from cellweave.bench.tasks.multimodal import NOT_METRICS, _pretraining_effect, pretraining_results

    assert {r["metric"] for r in pretraining_results()} & NOT_METRICS  # the shipped file has them
    report = HtmlReport("multimodal")
    _pretraining_effect(report)
    html = "".join(map(str, report.parts))
    assert "best epoch" not in html and "fine-tuning seconds" not in html
    assert "<th>pretraining</th>" not in html and "<th>RNA only</th>" in html and "<th>joint</th>" in html
    assert "<td></td>" not in html
