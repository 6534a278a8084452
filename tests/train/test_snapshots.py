"""``pretrain(snapshot_every=)`` / ``--snapshot-every``: a model folder per chosen epoch, loadable as
``--model``, whose last one holds exactly the run's final weights. Tiny models on synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellweave import CellWeave
from cellweave._exceptions import CellWeaveInputError
from cellweave.cli import main
from cellweave.data import synthetic_adata
from cellweave.tl import embed
from cellweave.train import pretrain


@pytest.fixture(scope="module")
def run(tiny_arch, tmp_path_factory):
    out = tmp_path_factory.mktemp("snap") / "m"
    data = {"a": synthetic_adata(n_cells=160, n_genes=120, seed=1)}
    model = pretrain(data, out=out, max_epochs=4, batch_size=32, seed=0, config_overrides=tiny_arch, progress=False,
                     snapshot_every=2, embed_hvg_tokens=60, name="snaptest")
    return out, model, data


def test_snapshots_are_written_at_the_chosen_epochs_and_load(run) -> None:
    out, model, data = run
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["epoch002", "epoch004"]  # no epoch 1 or 3, and no temporary left
    first, last = (CellWeave.load(out / "snapshots" / s) for s in snaps)
    steps = model.card["steps"]
    assert first.card["snapshot"]["epoch"] == 2 and last.card["snapshot"]["epoch"] == 4
    assert first.card["steps"] == steps // 2 and last.card["steps"] == steps
    assert first.card["snapshot"]["max_epochs"] == 4 and first.card["snapshot"]["run"] == str(out)
    # The snapshot's recorded validation loss is that epoch's line of the history it carries.
    assert len(first.history) == 3 and first.history[-1]["epoch"] == 2
    assert first.card["metrics"]["val_loss"] == pytest.approx(first.history[-1]["val_loss"])
    assert first.card["metrics"]["val_loss"] == pytest.approx(model.history[2]["val_loss"])
    # The last snapshot is the final model; the earlier one is not.
    final = (out / "model.safetensors").read_bytes()
    assert (out / "snapshots" / "epoch004" / "model.safetensors").read_bytes() == final
    assert (out / "snapshots" / "epoch002" / "model.safetensors").read_bytes() != final
    # A snapshot embeds as the model would be saved: with the --embed-hvg-tokens setting.
    assert first.config.hvg_tokens == 60 == model.config.hvg_tokens
    adata = data["a"].copy()
    embed(adata, model=first)
    assert np.isfinite(adata.obsm["X_cellweave"]).all()
    assert "epoch 2 of 4" in (out / "snapshots" / "epoch002" / "MODEL_CARD.md").read_text()


def test_a_negative_interval_is_refused_before_anything_is_written(tiny_arch, tmp_path) -> None:
    data = {"a": synthetic_adata(n_cells=60, n_genes=50, seed=1)}
    with pytest.raises(CellWeaveInputError, match="snapshot_every=-1"):
        pretrain(data, out=tmp_path / "m", snapshot_every=-1, config_overrides=tiny_arch, progress=False)
    assert not (tmp_path / "m").exists()


def test_the_cli_passes_the_interval_on(tmp_path) -> None:
    path = tmp_path / "cells.h5ad"
    synthetic_adata(n_cells=80, n_genes=60, seed=2).write_h5ad(path)
    out = tmp_path / "m"
    assert main(["-q", "pretrain", str(path), "--out", str(out), "--max-epochs", "1", "--batch-size", "32",
                 "--rna-context", "16", "--snapshot-every", "1", "--accelerator", "cpu"]) == 0
    card = json.loads((out / "snapshots" / "epoch001" / "model_card.json").read_text())
    assert card["snapshot"]["epoch"] == 1 and "--snapshot-every 1" in card["command"]
