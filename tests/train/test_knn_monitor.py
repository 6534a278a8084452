"""``pretrain(monitor=, select_epoch=)`` / ``--knn-monitor``, ``--select-epoch``: a run's epochs scored by
kNN on held-out labelled cells, as the saved model would embed them, and the run ending on the best.
Tiny models on synthetic data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cellweave import CellWeave
from cellweave._exceptions import CellWeaveInputError
from cellweave.bench import knn_accuracy
from cellweave.cli import main
from cellweave.data import synthetic_adata
from cellweave.train import KNN_METRIC, KnnMonitorCallback, pretrain


@pytest.fixture(scope="module")
def run(tiny_arch, tmp_path_factory):
    out = tmp_path_factory.mktemp("knn") / "m"
    data = {"a": synthetic_adata(n_cells=160, n_genes=120, seed=1)}
    held = synthetic_adata(n_cells=90, n_genes=120, seed=5)
    model = pretrain(data, out=out, max_epochs=3, batch_size=32, seed=1, config_overrides=tiny_arch, progress=False,
                     snapshot_every=1, embed_hvg_tokens=60, monitor={"held": held}, select_epoch="knn")
    return out, model, held


def test_the_monitor_scores_what_each_epoch_saved_model_embeds(run) -> None:
    out, model, held = run
    scores = [row[KNN_METRIC] for row in model.history]
    assert [row["epoch"] for row in model.history] == [0, 1, 2, 3] and all(0.0 <= s <= 1.0 for s in scores)
    labels = held.obs["cell_type"].astype(str).to_numpy()
    for epoch in (1, 2, 3):
        snap = CellWeave.load(out / "snapshots" / f"epoch{epoch:03d}")
        # The snapshot's card and the history carry the score of that epoch ...
        assert snap.card["metrics"][KNN_METRIC] == pytest.approx(scores[epoch])
        # ... which is the kNN macro-F1 of the snapshot's own embedding of the held-out cells (folds drawn
        # with seed 0 whatever the run's seed).
        emb = snap.embed(held, seed=0, progress=False)[0]
        assert knn_accuracy(emb, labels, seed=0)["macro_f1"] == pytest.approx(scores[epoch], abs=1e-6)
    card = model.card["monitor"]
    assert card["datasets"][0] == {"name": "held", "n_cells": 90, "label_key": "cell_type", "classes": 3} | (
        {"sha256": card["datasets"][0]["sha256"]} if "sha256" in card["datasets"][0] else {})
    assert card["before_training"] == pytest.approx(scores[0])
    assert [r["epoch"] for r in card["scores"]] == [1, 2, 3]
    # its cost is recorded: the seconds of each epoch's scoring, and their sum
    assert all(r["seconds"] > 0 for r in card["scores"])
    assert card["seconds"] == pytest.approx(sum(r["seconds"] for r in card["scores"]), abs=0.06)


def test_the_run_ends_on_the_best_epoch(run) -> None:
    out, model, _ = run
    scores = {row["epoch"]: row[KNN_METRIC] for row in model.history if row["epoch"] > 0}
    best = max(scores, key=scores.get)
    card = json.loads((out / "model_card.json").read_text())["monitor"]
    assert card["saved_epoch"] == best == card["best"]["epoch"] and card["select_epoch"] == "knn"
    saved = (out / "model.safetensors").read_bytes()
    assert saved == (out / "snapshots" / f"epoch{best:03d}" / "model.safetensors").read_bytes()
    # Lightning's "best" checkpoint is chosen by the same score, not by the validation loss (its file
    # names count epochs from 0).
    assert [p.name for p in (out / "checkpoints").glob("epoch*.ckpt")] == [f"epoch{best - 1:03d}.ckpt"]


def test_the_callback_keeps_the_weights_of_the_best_epoch() -> None:
    """Three epochs whose embedding separates the labels only at the second: the callback logs each
    epoch's score and keeps the second epoch's weights, not the last."""
    labels = np.repeat(["x", "y"], 30)
    rng = np.random.default_rng(0)
    separated = np.where(labels[:, None] == "x", 0.0, 10.0) + rng.normal(size=(60, 4))
    noise = rng.normal(size=(60, 4))
    module = torch.nn.Linear(2, 2)
    embeddings = iter([noise, separated, noise])
    cb = KnnMonitorCallback(lambda m: {"d": next(embeddings)}, {"d": labels}, keep_best=True)
    logged = []
    plan = SimpleNamespace(module=module, log=lambda key, value, **kw: logged.append((key, value)))
    kept = None
    for epoch in range(3):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        if epoch == 1:
            kept = {k: v.clone() for k, v in module.state_dict().items()}
        trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch, global_step=10 * (epoch + 1),
                                  precision_plugin=SimpleNamespace(forward_context=torch.no_grad))
        cb.on_validation_epoch_end(trainer, plan)
    assert [key for key, _ in logged] == [KNN_METRIC] * 3
    assert logged[1][1] == 1.0 and logged[0][1] < 0.8 and logged[2][1] < 0.8
    assert cb.best["epoch"] == 2 and cb.best["step"] == 20
    assert torch.equal(cb.best["state"]["weight"], kept["weight"])
    restored = KnnMonitorCallback(lambda m: {}, {"d": labels})
    restored.load_state_dict(cb.state_dict())  # the record travels in the checkpoint
    assert restored.best["epoch"] == 2 and len(restored.scores) == 3


def test_bad_monitors_are_refused_before_anything_is_written(tiny_arch, tmp_path) -> None:
    data = {"a": synthetic_adata(n_cells=60, n_genes=50, seed=1)}
    unlabelled = synthetic_adata(n_cells=40, n_genes=50, seed=2)
    del unlabelled.obs["cell_type"]
    cases = [
        (dict(select_epoch="knn"), "give the labelled held-out data"),
        (dict(monitor={"a": data["a"]}), "also pretrained on"),
        (dict(monitor={"b": unlabelled}), "no obs column cell_type"),
        (dict(monitor={"b": data["a"]}, monitor_cells=5), "monitor_cells=5"),
        (dict(monitor={"b": data["a"]}, select_epoch="best"), "select_epoch='best'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(CellWeaveInputError, match=message):
            pretrain(data, out=tmp_path / "m", config_overrides=tiny_arch, progress=False, **kwargs)
        assert not (tmp_path / "m").exists()
    # The same file under another name is found by its hash.
    with pytest.raises(CellWeaveInputError, match=r"b \(the file of a\)"):
        pretrain(data, out=tmp_path / "m", config_overrides=tiny_arch, progress=False, monitor={"b": data["a"]},
                 data_hashes={"a": "0" * 64, "b": "0" * 64})


def test_the_cli_passes_the_monitor_on(tmp_path) -> None:
    corpus, held = tmp_path / "cells.h5ad", tmp_path / "held.h5ad"
    synthetic_adata(n_cells=80, n_genes=60, seed=2).write_h5ad(corpus)
    synthetic_adata(n_cells=50, n_genes=60, seed=3).write_h5ad(held)
    out = tmp_path / "m"
    assert main(["-q", "pretrain", str(corpus), "--out", str(out), "--max-epochs", "2", "--batch-size", "32",
                 "--rna-context", "16", "--knn-monitor", str(held), "--knn-monitor-cells", "40",
                 "--select-epoch", "knn", "--accelerator", "cpu"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert "--knn-monitor" in card["command"] and card["monitor"]["select_epoch"] == "knn"
    assert card["monitor"]["datasets"][0]["n_cells"] == 40 and len(card["monitor"]["datasets"][0]["sha256"]) == 64
    history = json.loads((out / "history.json").read_text())
    assert all(KNN_METRIC in row for row in history)


def test_a_resumed_run_chooses_among_all_its_epochs(tiny_arch, tmp_path) -> None:
    """The scores and the best epoch's weights travel in ``last.ckpt``: a run stopped after epoch 2 and resumed
    for a third ends on the best of all three epochs, not of the resumed one only."""
    data = {"a": synthetic_adata(n_cells=120, n_genes=80, seed=1)}
    kwargs = dict(out=tmp_path / "m", batch_size=32, seed=0, config_overrides=tiny_arch, progress=False,
                  snapshot_every=1, monitor={"held": synthetic_adata(n_cells=60, n_genes=80, seed=5)},
                  select_epoch="knn")
    pretrain(data, max_epochs=2, **kwargs)
    model = pretrain(data, max_epochs=3, resume=True, **kwargs)
    scores = {r["epoch"]: r[KNN_METRIC] for r in model.card["monitor"]["scores"]}
    assert sorted(scores) == [1, 2, 3]
    best = max(scores, key=scores.get)
    assert model.card["monitor"]["saved_epoch"] == best
    saved = (tmp_path / "m" / "model.safetensors").read_bytes()
    assert saved == (tmp_path / "m" / "snapshots" / f"epoch{best:03d}" / "model.safetensors").read_bytes()
