"""benchmarks/panel_seeds.py: pooling the seeds of separate panel runs of one model."""

from __future__ import annotations

import json

import pytest

from cellweave._exceptions import CellWeaveInputError
from cellweave.bench._results import make_records


@pytest.fixture(scope="module")
def panel_seeds(benchmark_script):
    return benchmark_script("panel_seeds")


def _run(folder, seed: int, *, ours: float, sha: str = "abc", methods=("cellweave", "PCA (HVG)")) -> str:
    folder.mkdir(parents=True)
    recs = []
    for m in methods:
        recs += make_records("panel", "d", "zero-shot kNN", seed, m, {"macro_f1": ours if m == "cellweave" else 0.5})
    (folder / "results.json").write_text(json.dumps([r.to_dict() for r in recs]))
    (folder / "summary.json").write_text(json.dumps({"model_sha256": sha, "quick": True, "precision": "32-true",
                                                     "tasks": ["panel"], "seeds": [seed]}))
    return str(folder / "results.json")


def test_pools_seeds_of_one_model(panel_seeds, tmp_path) -> None:
    records, settings = panel_seeds.load_runs([_run(tmp_path / "s0", 0, ours=0.6), _run(tmp_path / "s1", 1, ours=0.8)])
    assert settings["seeds"] == [0, 1] and settings["model_sha256"] == "abc"
    from cellweave.bench.tasks.panel import panel_seed_table

    row = panel_seed_table(records).set_index("method").loc["cellweave"]
    assert row["mean"] == pytest.approx(0.7) and row["sd"] == pytest.approx(0.1414, abs=1e-4)


@pytest.mark.parametrize("second, match", [
    ({"seed": 0}, "seed 0 is in both"),
    ({"seed": 1, "sha": "other"}, "another model or settings"),
    ({"seed": 1, "methods": ("cellweave",)}, "other methods"),
])
def test_refuses_what_cannot_be_pooled(panel_seeds, tmp_path, second, match) -> None:
    first = _run(tmp_path / "a", 0, ours=0.6)
    other = _run(tmp_path / "b", second.pop("seed"), ours=0.8, **second)
    with pytest.raises(CellWeaveInputError, match=match):
        panel_seeds.load_runs([first, other])


def test_a_results_file_without_its_summary_is_refused(panel_seeds, tmp_path) -> None:
    path = tmp_path / "results.json"
    path.write_text("[]")
    with pytest.raises(CellWeaveInputError, match="summary.json"):
        panel_seeds.load_runs([str(path)])
