"""Short pretraining on a real bundled dataset, then embedding: the whole spine end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cellweave
from cellweave.models import CellWeave
from cellweave.train import pretrain

SMALL = dict(d_model=64, n_layers=2, n_heads=4, d_ff=128,
             context_length={"rna": 64, "prot": 16, "atac": 32, "gene_activity": 32})


@pytest.fixture(scope="module")
def osmfish():
    return cellweave.datasets.load("spatial_osmfish_scvi")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, osmfish):
    out = tmp_path_factory.mktemp("pretrain") / "model"
    model = pretrain(
        {"osmfish": osmfish[:1500].copy()}, out=out, preset="tiny", max_epochs=3, batch_size=64,
        lr=2e-3, seed=0, config_overrides=SMALL, progress=False,
    )
    return model, out


def test_pretraining_beats_epoch0_and_the_mean_predictors(trained) -> None:
    model, _ = trained
    m = model.card["metrics"]
    assert m["val_masked_mse"] < 0.8 * m["val_masked_mse_epoch0"]
    assert m["val_masked_mse"] < m["val_feature_mean_mse"]
    assert m["val_masked_mse"] < m["val_token_mean_mse"]
    epochs = [h["epoch"] for h in model.history]
    assert epochs == [0, 1, 2, 3]


def test_saved_model_embeds_and_separates_cell_types(trained, osmfish) -> None:
    _, out = trained
    model = CellWeave.load(out)
    adata = osmfish[1500:2500].copy()
    cellweave.tl.embed(adata, model=model, progress=False)
    emb = adata.obsm["X_cellweave"]
    assert emb.shape == (1000, 64) and np.isfinite(emb).all()
    rec = adata.uns["cellweave"]["X_cellweave"]
    assert rec["model_sha256"] == model.model_hash
    assert rec["coverage"]["rna"]["n_in_vocab"] == rec["coverage"]["rna"]["n_mapped"] == 32  # 1 of 33 unmapped
    from cellweave.bench import knn_accuracy

    acc = knn_accuracy(emb, adata.obs["cell_type"], seed=0)["accuracy"]
    majority = adata.obs["cell_type"].value_counts(normalize=True).iloc[0]
    assert acc > majority + 0.1


def test_checkpoint_resume(trained, osmfish) -> None:
    model, out = trained
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    state = torch.load(ckpt, weights_only=True, map_location="cpu")  # loadable without pickle
    assert state["epoch"] == 2
    resumed = pretrain(
        {"osmfish": osmfish[:1500].copy()}, out=out, preset="tiny", max_epochs=4, batch_size=64,
        lr=2e-3, seed=0, config_overrides=SMALL, resume=True, progress=False,
    )
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3, 4]
    assert resumed.card["steps"] > model.card["steps"]
