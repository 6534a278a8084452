"""The comparison of benchmarks/bench_precision.py: cellweave's rows and the baselines' apart, per task."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("bench_precision")


def _rec(method: str, value: float, task: str = "annotate", metric: str = "macro_f1", seed: int = 0) -> dict:
    return {"task": task, "dataset": "d", "split": "5-fold", "seed": seed, "method": method, "metric": metric,
            "value": value, "higher_is_better": True}


def test_compare_separates_cellweave_from_the_baselines(script) -> None:
    rows = {"32-true": [_rec("cellweave", 0.80), _rec("cellweave (harmony)", 0.70), _rec("PCA", 0.75),
                        _rec("PCA", 0.60, seed=1), _rec("cellweave", 0.5, task="grn", metric="auprc"),
                        _rec("GRNBoost2", float("nan"), task="grn")],
            "bf16-mixed": [_rec("cellweave", 0.78), _rec("cellweave (harmony)", 0.70), _rec("PCA", 0.75),
                           _rec("PCA", 0.61, seed=1), _rec("cellweave", 0.5, task="grn", metric="auprc"),
                           _rec("GRNBoost2", 0.2, task="grn")]}
    seconds = {"32-true": {"annotate": 30.0, "grn": 10.0}, "bf16-mixed": {"annotate": 20.0}}
    table = {r["task"]: r for r in script.compare(rows, seconds)}
    ann = table["annotate"]
    assert ann["speed-up"] == 1.5 and ann["seconds bf16-mixed"] == 20.0
    assert ann["cellweave records"] == 2 and ann["cellweave identical"] == 1
    assert ann["cellweave max |difference|"] == pytest.approx(0.02)
    assert ann["cellweave mean |difference|"] == pytest.approx(0.01)
    assert ann["baselines records"] == 2 and ann["baselines identical"] == 1
    assert ann["baselines max |difference|"] == pytest.approx(0.01)  # run-to-run noise, read as the floor
    grn = table["grn"]
    assert grn["speed-up"] is None  # a task timed in one run only
    assert grn["cellweave identical"] == 1 and grn["baselines records"] == 0  # a NaN value is left out
    assert grn["records in one run only"] == 1 and grn["baselines max |difference|"] is None


def test_two_runs_must_differ_only_in_precision(script, tmp_path, capsys) -> None:
    for name, precision, quick in (("a", "32-true", True), ("b", "bf16-mixed", False), ("c", "32-true", True)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps([_rec("cellweave", 0.8)]))
        (folder / "summary.json").write_text(json.dumps({
            "precision": precision, "quick": quick, "seconds": {"annotate": 1.0}, "model_sha256": "x",
            "tasks": ["annotate"], "seeds": [0]}))
    with pytest.raises(SystemExit):
        script.main(["--runs", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o.json")])
    assert "differ beyond the precision" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--runs", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "o.json")])
    assert "one run of each" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
