"""The benchmark record format, the comparison table and the runner's task interface."""

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from cellweave._exceptions import CellWeaveInputError
from cellweave.bench import (
    HtmlReport,
    Record,
    comparison_table,
    make_records,
    read_results,
    resolve_tasks,
    summarize,
    write_results,
)
from cellweave.bench import _runner


def _records():
    recs = []
    for seed in (0, 1, 2):
        recs += make_records("annotate", "d1", "5-fold", seed, "cellweave", {"accuracy": 0.8 + 0.01 * seed, "mse": 0.5})
        recs += make_records("annotate", "d1", "5-fold", seed, "logreg", {"accuracy": 0.9, "mse": 0.4},
                             higher_is_better={"mse": False})
    # cellweave's mse records must agree on direction with the baseline's.
    return [Record(**{**r.to_dict(), "higher_is_better": False}) if r.metric == "mse" else r for r in recs]


def test_records_roundtrip_and_summary(tmp_path):
    recs = _records() + [Record("annotate", "d1", "5-fold", 0, "pca", "accuracy", float("nan"), True)]
    write_results(recs, tmp_path / "results.json")
    rows = json.loads((tmp_path / "results.json").read_text())
    assert set(rows[0]) == {"task", "dataset", "split", "seed", "method", "metric", "value", "higher_is_better"}
    assert rows[-1]["value"] is None  # NaN is written as null, valid JSON
    back = read_results(tmp_path / "results.json")
    assert back[:-1] == recs[:-1] and np.isnan(back[-1].value)
    s = summarize(recs)
    row = s[(s.method == "cellweave") & (s.metric == "accuracy")].iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.81) and row["std"] == pytest.approx(np.std([0.8, 0.81, 0.82]))


def test_comparison_table_marks_best_and_signed_gap():
    t = comparison_table(_records()).set_index("metric")
    assert t.loc["accuracy", "best"] == "logreg"
    assert t.loc["accuracy", "cellweave vs best baseline"] == pytest.approx(0.81 - 0.9)
    # Lower is better: cellweave's 0.5 loses to 0.4, so the gap is negative too.
    assert t.loc["mse (lower better)", "best"] == "logreg"
    assert t.loc["mse (lower better)", "cellweave vs best baseline"] == pytest.approx(-0.1)
    assert "±" in t.loc["accuracy", "cellweave"]


def test_read_results_rejects_bad_file(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"task": "x"}]))
    with pytest.raises(CellWeaveInputError, match="lacks"):
        read_results(tmp_path / "r.json")


def test_unknown_task_is_a_clear_error():
    with pytest.raises(CellWeaveInputError, match="Unknown benchmark task"):
        resolve_tasks(["nope"])


def test_task_names_are_verb_names_and_the_old_ones_still_work(caplog):
    """map -> map-query and genes -> gene-map: the old names run their task with a warning, once even
    when both spellings are given, and ``all`` lists each task once, under its name now."""
    from cellweave.bench import RENAMED_TASKS, TASKS

    assert {"map-query", "gene-map"} <= set(TASKS) and not set(RENAMED_TASKS) & set(TASKS)
    assert set(RENAMED_TASKS.values()) <= set(TASKS)
    with caplog.at_level("WARNING", logger="cellweave"):
        assert resolve_tasks(["map", "genes", "map-query"]) == ["map-query", "gene-map"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'map' is deprecated" in warned and "'map-query' instead" in warned and "'gene-map' instead" in warned
    caplog.clear()
    with caplog.at_level("WARNING", logger="cellweave"):
        every = resolve_tasks("all")
        assert resolve_tasks(["map-query"]) == ["map-query"]
    assert not caplog.records
    assert "map" not in every and "genes" not in every and len(every) == len(set(every))


def test_runner_runs_a_task_module(monkeypatch, tmp_path):
    module = types.ModuleType("fake_task")
    module.DESCRIPTION = "A fake task."

    def run(ctx, report):
        report.text("fake section")
        return [r for s in ctx.seeds for r in make_records("fake", "d", "all", s, "cellweave", {"score": s})]

    module.run = run
    monkeypatch.setitem(sys.modules, "fake_task", module)
    monkeypatch.setattr(_runner, "TASKS", {"fake": "fake_task"})
    ctx = _runner.BenchmarkContext(model=None, seeds=(0, 1))
    report = HtmlReport("t")
    records, seconds = _runner.run_tasks(ctx, ["fake"], report)
    assert [r.value for r in records] == [0.0, 1.0] and set(seconds) == {"fake"}
    html = report.render()
    assert "Benchmark: fake" in html and "fake section" in html and "A fake task." in html
    assert resolve_tasks("all") == ["fake"]


def test_diagnostic_records_roundtrip_and_are_never_ranked(tmp_path):
    """higher_is_better=None marks a diagnostic: written as null, read back as None, shown with
    '(diagnostic)' and never named best, even beside ranked metrics of the same task."""
    recs = []
    for seed in (0, 1):
        for method, ratio in (("cellweave", 0.6), ("baseline", 0.2)):
            recs += make_records("t", "d", "s", seed, method, {"ratio": ratio, "accuracy": 0.5 + (method == "baseline")},
                                 higher_is_better={"ratio": None})
    write_results(recs, tmp_path / "results.json")
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {r["higher_is_better"] for r in rows if r["metric"] == "ratio"} == {None}
    back = read_results(tmp_path / "results.json")
    assert back == recs
    s = summarize(back).set_index(["method", "metric"])
    assert s.loc[("cellweave", "ratio"), "higher_is_better"] is None
    assert s.loc[("cellweave", "accuracy"), "higher_is_better"] is True
    t = comparison_table(back).set_index("metric")
    assert "ratio (diagnostic)" in t.index and pd.isna(t.loc["ratio (diagnostic)", "best"])
    assert t.loc["accuracy", "best"] == "baseline"


def test_report_table_has_no_empty_axis_column_and_scrolls_when_wide():
    """A pivot's column-axis name used to render as a header over an empty column ('pretraining',
    'method'); every table sits in a horizontally scrolling box so a wide one stays on the page."""

    wide = (pd.DataFrame({"target": ["a", "a", "b"], "method": ["x", "y", "x"], "v": [1.0, 2.0, 3.0]})
            .pivot(index="target", columns="method", values="v").reset_index())
    assert wide.columns.name == "method"
    report = HtmlReport("t")
    report.table(wide)
    html = report.parts[-1]
    assert html.startswith('<div class="table-wrap">') and html.endswith("</div>")
    assert "<th>method</th>" not in html and "<th></th>" not in html
    assert html.count("<th>") == 3  # target, x, y
    assert ".table-wrap" in report.render() and "overflow-x: auto" in report.render()
    report.table(pd.DataFrame({"cellweave": ["0.500 ± 0.010"]}))
    assert "0.500\u00a0±\u00a00.010" in report.parts[-1]  # mean ± sd stays on one line


def test_runner_says_a_shared_dataset_and_split_once_above_the_table(monkeypatch):
    module = types.ModuleType("fake_task2")
    module.DESCRIPTION = "A fake task."
    module.run = lambda ctx, report: (make_records("fake", "only_dataset", "one split", 0, "cellweave", {"a": 1.0})
                                      + make_records("fake", "only_dataset", "one split", 0, "base", {"a": 0.5}))
    monkeypatch.setitem(sys.modules, "fake_task2", module)
    monkeypatch.setattr(_runner, "TASKS", {"fake": "fake_task2"})
    report = HtmlReport("t")
    _runner.run_tasks(_runner.BenchmarkContext(model=None, seeds=(0,)), ["fake"], report)
    html = report.render()
    assert "Dataset: only_dataset. Split: one split." in html
    assert "<th>dataset</th>" not in html and "<th>split</th>" not in html and "<th>metric</th>" in html
