"""The annotate / map-query / integrate benchmark tasks on a user's file (``INPUT``), end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cellweave
from cellweave.bench import read_results, run_benchmark, summarize
from cellweave.cli import main


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    """300 cells of the cell-line mixture from two CEL-seq2 batches and the Drop-seq batch."""
    adata = cellweave.datasets.load("multibatch_cellbench_sc_mixology")
    rng = np.random.default_rng(0)
    keep = adata.obs["batch"].isin(["sc_celseq2_5cl_p1", "sc_celseq2_5cl_p2", "sc_dropseq"]).to_numpy()
    idx = np.sort(rng.choice(np.flatnonzero(keep), 300, replace=False))
    path = tmp_path_factory.mktemp("user") / "mine.h5ad"
    adata[idx].copy().write_h5ad(path)
    return path


def test_annotate_and_map_on_user_data(user_file, tmp_path) -> None:
    records = run_benchmark(["annotate", "map-query"], tmp_path, data=user_file, label_key="cell_type",
                            batch_key="batch", seeds=(0,), quick=True, progress=False)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == len(records) and read_results(tmp_path / "results.json") == records
    # the summary records torch's thread count: a rerun with it reproduces the run bit for bit
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["hardware"].endswith(f"torch threads {torch.get_num_threads()}")
    assert {r["dataset"] for r in rows} == {"mine"}
    assert {r["task"] for r in rows} == {"annotate", "map-query"}
    s = summarize(records)
    ann = s[s.task == "annotate"]
    assert set(ann.split) == {"5-fold", "across batch", "novel type"}
    # Every method ran on every split with the same metrics.
    for split, grp in ann[ann.metric == "accuracy"].groupby("split"):
        assert {"cellweave", "logreg-L2 (HVG)", "kNN (PCA)"} <= set(grp.method), split
    acc = ann[(ann.metric == "accuracy") & (ann.split == "5-fold")].set_index("method")["mean"]
    assert (acc > 0.5).all()  # five balanced lines: chance is 0.2
    auroc = ann[ann.metric == "novel_auroc"]
    assert ((auroc["mean"] >= 0) & (auroc["mean"] <= 1)).all() and len(auroc) >= 3
    mp = s[(s.task == "map-query") & (s.metric == "macro_f1")]
    assert {"cellweave", "cellweave (harmony)", "kNN (PCA)", "Harmony + kNN"} <= set(mp.method)
    # The query's cells are all of reference types: few are called unknown, by cellweave's rows only.
    unknown = s[(s.task == "map-query") & (s.metric == "known_flagged_unknown")].set_index("method")["mean"]
    assert set(unknown.index) == {"cellweave", "cellweave (harmony)"}
    assert (unknown < 0.1).all()
    html = (tmp_path / "report.html").read_text()
    assert "Benchmark: annotate" in html and "Benchmark: map-query" in html and "data:image/png;base64" in html


def test_benchmark_cli_errors(user_file, tmp_path, capsys) -> None:
    assert main(["benchmark", str(user_file), "--task", "annotate", "--out", str(tmp_path)]) == 2
    assert "--label-key" in capsys.readouterr().err
    assert main(["benchmark", str(user_file), "--task", "annotate", "--out", str(tmp_path),
                 "--label-key", "celltype"]) == 2
    assert "no column 'celltype'" in capsys.readouterr().err


@pytest.mark.slow  # scVI training and the scIB metrics (jax) take a few minutes on 2 cores
def test_integrate_task_on_user_data(user_file, tmp_path) -> None:
    records = run_benchmark("integrate", tmp_path, data=user_file, label_key="cell_type", batch_key="batch",
                            seeds=(0,), quick=True, progress=False)
    s = summarize(records).set_index(["method", "metric"])["mean"]
    for method in ("HVG+PCA", "Harmony", "scVI", "cellweave", "cellweave (harmony)"):
        assert 0 <= s[(method, "scIB total")] <= 1
    # Harmony mixes batches better than the unintegrated PCA.
    assert s[("Harmony", "iLISI")] > s[("HVG+PCA", "iLISI")]
