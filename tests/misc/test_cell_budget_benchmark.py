"""benchmarks/cell_budget.py: representations computed from a few drawn cells, scored on their well-represented
types, and the paired pretrained-minus-control differences per number of cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture()
def cell_budget(benchmark_script, monkeypatch):
    module = benchmark_script("cell_budget")
    monkeypatch.syspath_prepend(str(Path(module.__file__).parent))
    return module


def test_draw_cells_is_seeded_sorted_and_leaves_out_small_datasets(cell_budget) -> None:
    a, b = cell_budget.draw_cells(500, 100, 0), cell_budget.draw_cells(500, 100, 1)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0) and a.max() < 500
    np.testing.assert_array_equal(a, cell_budget.draw_cells(500, 100, 0))
    assert not np.array_equal(a, b)
    assert cell_budget.draw_cells(100, 100, 0) is None  # the whole dataset is not a budget


def test_scored_cells_keeps_types_with_enough_drawn_cells(cell_budget) -> None:
    labels = np.array(["a"] * 12 + ["b"] * 10 + ["c"] * 9)
    kept = cell_budget.scored_cells(labels)
    np.testing.assert_array_equal(kept, np.arange(22))  # "c" has 9 < 10 cells
    assert cell_budget.scored_cells(np.array(["a"] * 30 + ["b"] * 3)) is None  # one type left


def test_summarize_pairs_rows_and_counts_wins_per_dataset(cell_budget) -> None:
    def row(ds, n, seed, pre, rnd):
        return {"dataset": ds, "n": n, "seed": seed,
                "scores": {"cellweave, zero-shot": pre, "untrained, zero-shot": rnd, "PCA (HVG)": 0.5}}

    # dataset x: +0.2 then -0.1 (mean +0.05, a win); y: +0.1 then -0.3 (a loss); n=300 only on x
    rows = [row("x", 100, 0, 0.7, 0.5), row("x", 100, 1, 0.4, 0.5), row("y", 100, 0, 0.6, 0.5),
            row("y", 100, 1, 0.2, 0.5), row("x", 300, 0, 0.9, 0.8)]
    s = cell_budget.summarize(rows)
    assert list(s) == ["100", "300"] and s["100"]["datasets"] == 2 and s["300"]["datasets"] == 1
    # sd over seeds of the mean over datasets: seed 0 (0.7 + 0.6) / 2, seed 1 (0.4 + 0.2) / 2
    assert s["100"]["cellweave, zero-shot"] == {"mean": 0.475, "sd": round(float(np.std([0.65, 0.3])), 3),
                                                "datasets": 2}
    contrast = s["100"]["pretrained - random, zero-shot"]
    assert contrast == {"mean": round((0.2 - 0.1 + 0.1 - 0.3) / 4, 3), "wins": "1 of 2"}
    assert s["300"]["pretrained - random, zero-shot"]["wins"] == "1 of 1"
    assert "scVI" not in s["100"] and "pretrained + readout - scVI" not in s["100"]  # methods no row has


def test_budget_scores_scores_every_representation_on_the_drawn_cells(cell_budget, tiny_rna_model) -> None:
    from cellweave.bench.tasks.panel import PanelData
    from cellweave.data import log_normalize, synthetic_adata

    from _diagnostics import random_weights

    adata = synthetic_adata(n_cells=160, n_genes=200, n_cell_types=2, seed=3)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    d = PanelData("toy", adata, adata, labels, None, "batch", log_normalize(adata))
    idx = cell_budget.draw_cells(adata.n_obs, 80, 0)
    scores = cell_budget.budget_scores(d, idx, tiny_rna_model, random_weights(tiny_rna_model), seed=0, scvi_epochs=2)
    assert list(scores) == list(cell_budget.METHODS)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["PCA (HVG)"] > 0.9  # two types, each up-regulating its own genes six-fold
    one_type = PanelData("one", adata, adata, np.where(np.arange(160) < 155, "a", "b"), None, None, d.lognorm)
    assert cell_budget.budget_scores(one_type, idx, tiny_rna_model, tiny_rna_model, seed=0, scvi_epochs=2) is None
    only = ("PCA (HVG), 10 components", "untrained + readout")
    some = cell_budget.budget_scores(d, idx, None, random_weights(tiny_rna_model), seed=0, scvi_epochs=2, methods=only)
    assert list(some) == list(only)  # no model needed (None) when no cellweave row is asked for
    assert some["PCA (HVG), 10 components"] > 0.9


def test_merged_joins_finished_runs_and_refuses_what_does_not_join(cell_budget) -> None:
    def run(dataset, model="m", partial=False):
        rows = [{"dataset": dataset, "n": 100, "seed": s, "scores": {"PCA (HVG)": 0.5 + s / 10}} for s in (0, 1)]
        out = {"rows": rows, "summary": cell_budget.summarize(rows)}
        if partial:
            return {"partial": True, **out}
        return {"command": f"cell_budget.py --datasets {dataset}", "model": model, "metric": "kNN", "threads": "1",
                "scvi_epochs": 200, "seconds": 1.0, **out}

    both = cell_budget.merged([run("x"), run("y")])
    assert both["commands"] == ["cell_budget.py --datasets x", "cell_budget.py --datasets y"]
    assert both["summary"]["100"]["datasets"] == 2 and len(both["rows"]) == 4
    assert both["summary"]["100"]["PCA (HVG)"]["mean"] == 0.55
    with pytest.raises(SystemExit, match="unfinished"):
        cell_budget.merged([run("x"), run("y", partial=True)])
    with pytest.raises(SystemExit, match="differ in model"):
        cell_budget.merged([run("x"), run("y", model="other")])
    with pytest.raises(SystemExit, match="both score 'PCA"):
        cell_budget.merged([run("x"), run("x")])
    other = run("x")  # the same cells scored by another method (--methods) join the rows
    for r in other["rows"]:
        r["scores"] = {"cellweave, zero-shot": 0.9}
    joined = cell_budget.merged([run("x"), other])
    assert len(joined["rows"]) == 2
    assert joined["rows"][0]["scores"] == {"cellweave, zero-shot": 0.9, "PCA (HVG)": 0.5}  # in METHODS' order
    assert joined["summary"]["100"]["pretrained - PCA, zero-shot"]["mean"] == round(0.9 - 0.55, 3)
