"""The development panel's pieces: dataset selection, calibration error, the goal summary."""

from __future__ import annotations

import numpy as np
import pytest

from cellweave import datasets
from cellweave.bench import available_tasks, resolve_tasks
from cellweave.bench._results import make_records
from cellweave.bench.tasks.panel import expected_calibration_error, panel_datasets, panel_seed_table, panel_summary


def test_panel_is_standalone_and_has_enough_datasets() -> None:
    assert "panel" not in available_tasks() and "panel" not in resolve_tasks("all")
    assert resolve_tasks(["panel"]) == ["panel"]
    tagged = [n for n, e in datasets.REGISTRY.items() if "panel" in e.tasks]
    assert len(tagged) >= 8
    for name in tagged:
        entry = datasets.info(name)
        assert entry.label_key and entry.x_kind == "counts", name


def test_panel_datasets_drop_unlabelled_and_rare_types() -> None:
    if datasets.data_dir() is None:
        pytest.skip("no data mirror")
    data = {d.name: d for d in panel_datasets()}
    assert len(data) >= 8
    pbmc = data["scrna_pbmc4k_10x_soupx"]
    assert "unknown" not in set(pbmc.labels) and pbmc.adata.n_obs == 2150  # 20 'unknown' cells left out
    prot = data["prot_citeseq_adt_13studies_adtnorm"]
    assert list(prot.model_input.mod) == ["prot"] and prot.adata.n_obs == 6000
    assert prot.shift_key == "study_name" and "undefined" not in set(prot.labels)
    for d in data.values():
        _, counts = np.unique(d.labels, return_counts=True)
        assert counts.min() >= 10, d.name


def test_expected_calibration_error() -> None:
    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    assert expected_calibration_error(conf, np.array([1, 1, 1, 1, 1, 0])) == pytest.approx(
        4 / 6 * 0.05 + 2 / 6 * 0.05)
    assert expected_calibration_error(conf, np.zeros(6)) == pytest.approx((4 * 0.95 + 2 * 0.55) / 6)


def test_summary_states_the_goal() -> None:
    recs = []
    for ds, ours, base in [("a", 0.90, 0.80), ("b", 0.70, 0.75)]:
        for seed in (0, 1):
            recs += make_records("panel", ds, "zero-shot kNN", seed, "cellweave", {"macro_f1": ours})
            recs += make_records("panel", ds, "zero-shot kNN", seed, "PCA (HVG)", {"macro_f1": base})
    s = panel_summary(recs).set_index("protocol")
    row = s.loc["zero-shot kNN macro-F1"]
    assert row["gap (mean)"] == pytest.approx(0.025)
    assert row["worst dataset gap"] == "-0.050 (b)"
    assert not row["goal met"]  # mean is ahead, but dataset b is 0.05 behind
    assert s.loc["novel-type AUROC", "datasets"] == 0
    # A protocol with cellweave but no baseline is listed, without a comparison.
    alone = panel_summary([r for r in recs if r.method == "cellweave"]).set_index("protocol")
    assert alone.loc["zero-shot kNN macro-F1", "datasets"] == 2 and "gap (mean)" not in alone.columns


def test_seed_table_averages_splits_then_datasets_then_seeds() -> None:
    recs = []
    # dataset a: two shifts per seed (splits averaged first); dataset b: one shift; c: seed 0 only
    values = {0: {"a": (0.8, 0.6), "b": (0.9,), "c": (0.1,)}, 1: {"a": (0.9, 0.9), "b": (0.7,)}}
    for seed, per in values.items():
        for ds, vals in per.items():
            for i, v in enumerate(vals):
                recs += make_records("panel", ds, f"across shift (batch={i})", seed, "cellweave",
                                     {"macro_f1": v, "ece": 0.1 * (seed + 1)})
    recs += make_records("panel", "a", "novel type", 0, "kNN distance (PCA)", {"novel_auroc": 0.7})
    table = panel_seed_table(recs).set_index(["protocol", "method"])
    row = table.loc[("annotation across a shift, macro-F1", "cellweave")]
    # seed 0: (0.7 + 0.9) / 2 = 0.8; seed 1: (0.9 + 0.7) / 2 = 0.8; "c" lacks seed 1 and is left out
    assert row["datasets"] == 2 and row["seeds"] == 2
    assert row["seed 0"] == pytest.approx(0.8) and row["seed 1"] == pytest.approx(0.8)
    assert row["mean"] == pytest.approx(0.8) and row["sd"] == pytest.approx(0.0)
    ece = table.loc[("across a shift, expected calibration error", "cellweave")]
    assert ece["mean"] == pytest.approx(0.15) and ece["sd"] == pytest.approx(np.std([0.1, 0.2], ddof=1))
    one = table.loc[("novel-type AUROC", "kNN distance (PCA)")]
    assert one["seeds"] == 1 and np.isnan(one["sd"]) and one["mean"] == pytest.approx(0.7)
    assert panel_seed_table([]).empty


def test_summary_compares_on_common_datasets() -> None:
    recs = []
    for ds, ours, base, other in [("a", 0.90, 0.80, 0.95), ("b", 0.70, 0.60, None)]:
        recs += make_records("panel", ds, "zero-shot kNN", 0, "cellweave", {"macro_f1": ours})
        recs += make_records("panel", ds, "zero-shot kNN", 0, "PCA (HVG)", {"macro_f1": base})
        if other is not None:
            recs += make_records("panel", ds, "zero-shot kNN", 0, "scVI latent", {"macro_f1": other})
    row = panel_summary(recs).set_index("protocol").loc["zero-shot kNN macro-F1"]
    # scVI ran on "a" only: compared there it is 0.05 ahead, which makes it the best baseline
    assert row["best baseline"] == "scVI latent 0.950 (1 datasets)"
    assert row["gap (mean)"] == pytest.approx(-0.05)


def test_panel_variants_adapted_and_untrained_beside_zero_shot(monkeypatch) -> None:
    import torch

    from cellweave.bench._runner import BenchmarkContext
    from cellweave.bench.tasks import panel
    from cellweave.data import build_vocabulary, log_normalize, synthetic_adata
    from cellweave.models import CellWeave

    adata = synthetic_adata(n_cells=120, n_genes=120, seed=2)
    vocab, _ = build_vocabulary({"s": adata}, min_cells=1)
    torch.manual_seed(1)
    model = CellWeave.from_preset("tiny", vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                  context_length={"rna": 32, "prot": 0, "atac": 0, "gene_activity": 0})
    d = panel.PanelData("syn", adata, adata, adata.obs["cell_type"].astype(str).to_numpy(), None, "batch",
                        log_normalize(adata))
    ctx = BenchmarkContext(model=model, seeds=(0,), quick=True, adapt=("pretrained", "untrained"),
                           adapt_max_steps=2, progress=False)
    embs, records = panel._model_embeddings(ctx, d, seed=0)
    assert set(embs) == {"cellweave", panel.ADAPTED, panel.UNTRAINED}
    assert all(e.shape[0] == adata.n_obs and np.isfinite(e).all() for e in embs.values())
    assert not np.allclose(embs["cellweave"], embs[panel.UNTRAINED])
    # The adapted model (method "head") embeds cells as its readout's latent.
    assert embs[panel.ADAPTED].shape == (adata.n_obs, 10) and embs["cellweave"].shape[1] == model.module.embedding_dim
    steps = [r for r in records if r.metric == "steps"]
    assert len(steps) == 1 and steps[0].value == 2 and steps[0].split == "adaptation"
    # --adapt-lr and --adapt-max-steps reach the adaptation, with the panel's method.
    import cellweave.train

    seen = {}
    real = cellweave.train.adapt

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    frozen = BenchmarkContext(model=model, seeds=(0,), quick=True, adapt=("pretrained",), adapt_max_steps=2,
                              adapt_lr=1e-12, progress=False)
    monkeypatch.setattr(cellweave.train, "adapt", spy)
    panel._model_embeddings(frozen, d, seed=0)
    assert seen["lr"] == 1e-12 and seen["max_steps"] == 2 and seen["method"] == panel.ADAPT_METHOD == "head"
    # The summary counts the untrained control as a baseline, not as a cellweave variant.
    recs = panel._zero_shot(ctx, d, embs, seed=0)
    assert {r.method for r in recs} >= {"cellweave", panel.ADAPTED, panel.UNTRAINED, "PCA (HVG)"}
    # Across a shift, each cellweave variant is also scored aligned to the reference by Harmony; baselines are not.
    import dataclasses

    shift = panel._across_shift(dataclasses.replace(d, shift_key="batch"), embs, seed=0)
    methods = {r.method for r in shift}
    assert {f"cellweave{panel.ALIGNED}", f"{panel.ADAPTED}{panel.ALIGNED}"} <= methods
    assert f"{panel.UNTRAINED}{panel.ALIGNED}" not in methods and "logreg-L2 (HVG)" in methods
    aligned_unknown = [r for r in shift if r.method.endswith(panel.ALIGNED) and r.metric == "unknown_rate"]
    assert aligned_unknown and all(0.0 <= r.value <= 1.0 for r in aligned_unknown)


def test_panel_saves_each_finished_dataset_and_resumes(tmp_path, monkeypatch) -> None:
    """A panel run stopped on its second dataset keeps the first one's records; ``resume`` continues
    from them without recomputing them, refuses records written under other settings, and the
    checkpoint is gone once the panel ends."""
    import json

    from cellweave._exceptions import CellWeaveInputError
    from cellweave.bench._report import HtmlReport
    from cellweave.bench._runner import BenchmarkContext
    from cellweave.bench.tasks import panel

    class Model:
        model_hash = "abc"

    data = [panel.PanelData(name, None, None, np.array(["a", "b"]), None, None, None) for name in ("one", "two")]
    monkeypatch.setattr(panel, "panel_datasets", lambda quick=False: data)
    monkeypatch.setattr(panel, "tissue_groups", lambda: [])
    monkeypatch.setattr(panel, "_model_embeddings", lambda ctx, d, seed: ({}, []))
    monkeypatch.setattr(panel, "_novel_type", lambda ctx, d, embs, seed: [])
    scored = []

    def zero_shot(ctx, d, embs, seed):
        if d.name == "two" and stop["now"]:
            raise KeyboardInterrupt
        scored.append((d.name, seed))
        return make_records("panel", d.name, "zero-shot kNN", seed, "cellweave", {"macro_f1": 0.5 + seed / 10})

    stop = {"now": True}
    monkeypatch.setattr(panel, "_zero_shot", zero_shot)
    ctx = BenchmarkContext(model=Model(), seeds=(0, 1), quick=True, out=tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        panel.run(ctx, HtmlReport("t"))
    saved = json.loads((tmp_path / panel.PARTIAL).read_text())
    assert {(r["dataset"], r["seed"]) for r in saved["records"]} == {("one", 0), ("one", 1)}

    # Other settings: refused with the fix, nothing run.
    other = BenchmarkContext(model=Model(), seeds=(0, 1), quick=False, out=tmp_path, progress=False, resume=True)
    with pytest.raises(CellWeaveInputError, match="quick: True there, False now"):
        panel.run(other, HtmlReport("t"))
    # Records of a run before softmax_when_far became the default (no such key): refused too.
    before = {**saved, "config": {k: v for k, v in saved["config"].items() if k != "softmax_when_far"}}
    (tmp_path / panel.PARTIAL).write_text(json.dumps(before))
    with pytest.raises(CellWeaveInputError, match="softmax_when_far: None there, True now"):
        panel.run(BenchmarkContext(model=Model(), seeds=(0, 1), quick=True, out=tmp_path, progress=False,
                                   resume=True), HtmlReport("t"))
    # Nor of a run before sharpen_when_far became the default.
    before = {**saved, "config": {k: v for k, v in saved["config"].items() if k != "sharpen_when_far"}}
    (tmp_path / panel.PARTIAL).write_text(json.dumps(before))
    with pytest.raises(CellWeaveInputError, match="sharpen_when_far: None there, True now"):
        panel.run(BenchmarkContext(model=Model(), seeds=(0, 1), quick=True, out=tmp_path, progress=False,
                                   resume=True), HtmlReport("t"))
    (tmp_path / panel.PARTIAL).write_text(json.dumps(saved))

    stop["now"] = False
    scored.clear()
    ctx.resume = True
    records = panel.run(ctx, HtmlReport("t"))
    assert scored == [("two", 0), ("two", 1)]  # the first dataset is not scored again
    assert sorted((r.dataset, r.seed, r.value) for r in records) == [
        ("one", 0, 0.5), ("one", 1, 0.6), ("two", 0, 0.5), ("two", 1, 0.6)]
    assert not (tmp_path / panel.PARTIAL).exists()
    over_seeds = json.loads((tmp_path / "panel.json").read_text())["over seeds"]
    assert [(r["method"], r["datasets"], r["seeds"]) for r in over_seeds] == [("cellweave", 2, 2)]
    assert over_seeds[0]["mean"] == pytest.approx(0.55) and over_seeds[0]["seed 1"] == pytest.approx(0.6)


def test_dataset_mixing_reads_islands_and_mixtures() -> None:
    from cellweave.bench import dataset_mixing

    rng = np.random.default_rng(0)
    groups = np.repeat(["a", "b"], 100)
    islands = rng.normal(size=(200, 5)) + 20 * (groups == "b")[:, None]
    assert dataset_mixing(islands, groups) == 0.0
    assert dataset_mixing(rng.normal(size=(200, 5)), groups) > 0.85  # one cloud: about as mixed as expected
    with pytest.raises(ValueError, match="two groups"):
        dataset_mixing(islands, np.zeros(200))


def test_tissue_integration_scores_every_representation(monkeypatch) -> None:
    """Protocol 5: cellweave raw and with Harmony beside PCA and Harmony, the total is 0.6 F1 + 0.4
    mixing, the F1 reads only labelled cells, and Harmony mixes datasets that PCA keeps apart."""
    from cellweave.bench._runner import BenchmarkContext
    from cellweave.bench.tasks import panel
    from cellweave.data import log_normalize, synthetic_adata

    data = synthetic_adata(n_cells=300, n_genes=100, n_batches=2, seed=0)  # batches with a batch effect
    data.obs[panel.TISSUE_BATCH] = data.obs["batch"].astype(str)
    labels = data.obs["cell_type"].astype(str).to_numpy().astype(object)
    second = data.obs[panel.TISSUE_BATCH].to_numpy() == sorted(set(data.obs[panel.TISSUE_BATCH]))[1]
    labels[second] = ""  # the second dataset is unlabelled
    d = panel.PanelData("tissue", data, data, labels, None, panel.TISSUE_BATCH, log_normalize(data))
    monkeypatch.setattr(panel, "_scvi_latent", lambda ctx, d, seed: None)
    ctx = BenchmarkContext(model=None, seeds=(0,), quick=True, progress=False)
    emb = np.random.default_rng(0).normal(size=(data.n_obs, 8)).astype(np.float32)
    records = panel._tissue_integration(ctx, d, {"cellweave": emb}, seed=0)
    by = {(r.method, r.metric): r.value for r in records}
    assert {m for m, _ in by} == {"PCA (HVG)", "Harmony", "cellweave", "cellweave (harmony)"}
    for method in ("PCA (HVG)", "cellweave"):
        assert by[method, "tissue total"] == pytest.approx(
            0.6 * by[method, "labelled kNN macro-F1"] + 0.4 * by[method, "dataset mixing"])
    assert by["cellweave", "labelled kNN macro-F1"] < 0.6  # noise carries no type
    assert by["PCA (HVG)", "labelled kNN macro-F1"] > 0.9
    assert by["Harmony", "dataset mixing"] > by["PCA (HVG)", "dataset mixing"]
    assert all(r.split == "tissue integration" for r in records)


def test_tissue_groups_join_the_pbmc_datasets_on_shared_genes() -> None:
    if datasets.data_dir() is None:
        pytest.skip("no data mirror")
    from cellweave.bench.tasks import panel

    (group,) = panel.tissue_groups()
    names = panel.TISSUE_GROUPS[group.name]
    batches = group.adata.obs[panel.TISSUE_BATCH].astype(str).to_numpy()
    assert set(batches) == set(names)
    labelled = group.labels != ""
    assert set(batches[labelled]) == {"scrna_pbmc4k_10x_soupx"}  # the only labelled one
    assert "unknown" not in set(group.labels) and labelled.sum() == 2150
    assert group.adata.n_obs == sum(datasets.load(n, modality="rna").n_obs for n in names)
