"""Zero-shot in silico perturbation and fine-tuned response prediction, on tiny synthetic models."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import cellweave
from cellweave._exceptions import CellWeaveInputError
from cellweave.cli import main
from cellweave.models import CellWeave, PerturbationModel, spread_ratio
from cellweave.models._insilico import _edit_tokens
from cellweave.train import finetune_perturbation

TINY = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64,
            context_length={"rna": 64, "prot": 16, "atac": 16, "gene_activity": 16})


@pytest.fixture(scope="module")
def tiny_model(tiny_vocab_and_data, tmp_path_factory) -> CellWeave:
    vocab, _ = tiny_vocab_and_data
    import torch

    torch.manual_seed(0)
    model = CellWeave.from_preset("tiny", vocab, **TINY)
    model.save(tmp_path_factory.mktemp("model"))
    return model


@pytest.fixture(scope="module")
def condition_data(tiny_vocab_and_data) -> ad.AnnData:
    """Control cells and 'stim' cells whose first 20 genes are up 4-fold."""
    _, adata = tiny_vocab_and_data
    ctrl = adata[adata.obs["perturbation"] == "control"].copy()
    stim = ctrl.copy()
    X = stim.X.toarray()
    X[:, :20] *= 4
    stim.X = sp.csr_matrix(X)
    stim.obs_names = [f"{n}_stim" for n in stim.obs_names]
    out = ad.concat([ctrl, stim])
    out.obs["condition"] = ["ctrl"] * ctrl.n_obs + ["stim"] * stim.n_obs
    out.var = adata.var.copy()
    return out


def test_edit_tokens_sets_present_and_adds_missing() -> None:
    ids = np.array([5, 7, 9])
    vals = np.array([0.2, 0.5, 1.0], dtype=np.float32)
    mods = np.zeros(3, dtype=np.int64)
    e_ids, e_vals, e_mods = _edit_tokens(ids, vals, mods, np.array([7, 11]), 0.0, rna_id=0)
    assert e_ids.tolist() == [5, 7, 9, 11]
    assert e_vals.tolist() == [pytest.approx(0.2), 0.0, 1.0, 0.0]
    assert e_mods.shape == e_ids.shape and vals[1] == pytest.approx(0.5)  # input left untouched
    assert e_mods.tolist() == [0, 0, 0, 0]


def test_perturb_writes_fields_and_is_deterministic(tiny_model, tiny_vocab_and_data, tmp_path) -> None:
    _, adata = tiny_vocab_and_data
    target = str(adata.var_names[3])
    a = cellweave.tl.perturb(adata, genes=[target], model=tiny_model, groupby="cell_type", progress=False,
                             copy=True)
    assert "cellweave_shift" not in adata.obs  # copy=True leaves the input alone
    shift = a.obs["cellweave_shift"].to_numpy()
    assert shift.dtype == np.float32 and shift.shape == (adata.n_obs,)
    # Cells whose input held the gene (or lacked it: it is added as a zero token) move; a cell whose input
    # already sampled it as a zero is unchanged.
    assert (shift > 0).mean() > 0.5
    layer = a.layers["cellweave_perturb_delta"]
    assert layer.shape == adata.shape
    np.testing.assert_allclose(a.var["cellweave_perturb_delta"].to_numpy(), layer.mean(axis=0), atol=1e-5)
    rec = a.uns["cellweave"]["perturb"]
    assert rec["genes"] == [target] and rec["mode"] == "knockout"
    assert rec["cells_shifted"] == pytest.approx(float((shift > 1e-6).mean()))
    assert rec["model_sha256"] == tiny_model.model_hash
    assert set(rec["top_groups"]["group"]) == set(adata.obs["cell_type"].astype(str))
    assert np.all(np.diff(rec["top_groups"]["mean_shift"]) <= 0)  # ranked, most shifted first
    b = cellweave.tl.perturb(adata, genes=target, model=tiny_model, progress=False, copy=True)
    np.testing.assert_array_equal(b.obs["cellweave_shift"].to_numpy(), shift)
    # Over-expression is a different edit and moves cells differently.
    c = cellweave.tl.perturb(adata, genes=target, mode="overexpress", model=tiny_model, progress=False, copy=True)
    assert not np.allclose(c.obs["cellweave_shift"].to_numpy(), shift)
    cellweave.io.write(a, tmp_path / "p.h5ad")  # uns is h5ad-safe
    assert ad.read_h5ad(tmp_path / "p.h5ad").uns["cellweave"]["perturb"]["genes"] == [target]


def test_perturb_rejects_bad_input(tiny_model, tiny_vocab_and_data) -> None:
    _, adata = tiny_vocab_and_data
    with pytest.raises(CellWeaveInputError, match="not in the model's vocabulary"):
        cellweave.tl.perturb(adata, genes=["NOTAGENE1"], model=tiny_model, progress=False, copy=True)
    with pytest.raises(CellWeaveInputError, match="mode"):
        cellweave.tl.perturb(adata, genes=[str(adata.var_names[0])], mode="delete", model=tiny_model, copy=True)
    with pytest.raises(CellWeaveInputError, match="groupby"):
        cellweave.tl.perturb(adata, genes=[str(adata.var_names[0])], groupby="nope", model=tiny_model, copy=True)


def test_trained_objects_live_in_models_with_train_aliases_until_0_3() -> None:
    import cellweave.models
    import cellweave.train

    assert cellweave.train.PerturbationModel is PerturbationModel
    assert cellweave.train.CrossModalPredictor is cellweave.models.CrossModalPredictor
    assert PerturbationModel.__module__ == "cellweave.models._perturb"
    assert cellweave.models.CrossModalPredictor.__module__ == "cellweave.models._impute"


def test_spread_ratio_detects_collapse() -> None:
    rng = np.random.default_rng(0)
    observed = rng.normal(size=(6, 40))
    assert spread_ratio(np.repeat(observed.mean(0, keepdims=True), 6, axis=0), observed) == pytest.approx(0.0, abs=1e-9)
    assert spread_ratio(observed, observed) == pytest.approx(1.0)
    assert spread_ratio(0.5 * observed, observed) == pytest.approx(0.5)


def test_finetune_condition_label_learns_and_round_trips(tiny_model, condition_data, tmp_path) -> None:
    out = tmp_path / "ft"
    pm = finetune_perturbation(condition_data, model=tiny_model, perturbation_key="condition", control="ctrl",
                               steps=150, n_control_cells=64, min_cells=5, seed=0, out=out, progress=False)
    assert pm.meta["labels"] == ["stim"] and pm.meta["training_perturbations"] == ["stim"]
    files = {p.name for p in out.iterdir()}
    assert {"perturb_head.safetensors", "perturbation.json", "control_cells.h5ad", "model.safetensors"} <= files
    assert not any(p.suffix in (".pt", ".pkl", ".ckpt") for p in out.iterdir())  # nothing to unpickle

    pred = cellweave.tl.predict_perturbation(model=out, perturbation="stim", progress=False)
    n_ctrl = int((condition_data.obs["condition"] == "ctrl").sum())
    assert pred.n_obs == min(64, n_ctrl) and list(pred.var_names) == list(condition_data.var_names)
    delta = pred.var["cellweave_predicted_delta"].to_numpy()
    # Truth: log(4) ~ 1.39 up on the first 20 genes (less where counts are 0), unchanged elsewhere.
    assert delta[:20].mean() > 0.4
    assert np.abs(delta[20:]).mean() < 0.25 * delta[:20].mean()
    assert (pred.layers["cellweave_predicted"] >= 0).all()
    rec = pred.uns["cellweave"]["predict_perturbation"]
    assert rec["kind"] == "seen label" and rec["units"] == "log1p(counts per 1e4)"

    # The loaded folder gives the same numbers as the object that was fitted.
    again = PerturbationModel.load(out).predict(None, "stim", progress=False)
    np.testing.assert_allclose(again.layers["cellweave_predicted"], pred.layers["cellweave_predicted"], atol=1e-5)
    with pytest.raises(CellWeaveInputError, match="neither a gene"):
        cellweave.tl.predict_perturbation(model=out, perturbation="not_a_condition", progress=False)


def test_finetune_unseen_gene_uses_its_token(tiny_model, tiny_vocab_and_data) -> None:
    _, adata = tiny_vocab_and_data
    targets = [t for t in adata.obs["perturbation"].cat.categories if t != "control"]
    held = targets[0]
    pm = finetune_perturbation(adata, model=tiny_model, exclude=[held], steps=60, n_control_cells=32, min_cells=3,
                               progress=False)
    assert held not in pm.meta["training_perturbations"]
    emb = np.random.default_rng(0).normal(size=(4, pm.head.d_cell)).astype(np.float32)
    d_held = pm.predict_delta(held, emb)
    d_other = pm.predict_delta(targets[1], emb)
    assert d_held.shape == (4, adata.n_vars) and np.isfinite(d_held).all()
    assert not np.allclose(d_held, d_other)  # different tokens give different predictions
    combo = pm.predict_delta(f"{targets[1]}+{targets[2]}", emb)
    assert combo.shape == d_held.shape


def test_finetune_rejects_bad_keys(tiny_model, tiny_vocab_and_data) -> None:
    _, adata = tiny_vocab_and_data
    with pytest.raises(CellWeaveInputError, match="no column"):
        finetune_perturbation(adata, model=tiny_model, perturbation_key="guide_call", progress=False)
    with pytest.raises(CellWeaveInputError, match="--control"):
        finetune_perturbation(adata, model=tiny_model, control="NT", progress=False)


def test_cli_perturb_commands(tiny_model, condition_data, tmp_path) -> None:
    data = tmp_path / "cond.h5ad"
    cellweave.io.write(condition_data, data)
    model_dir = str(tiny_model.path)
    gene = str(condition_data.var_names[0])
    assert main(["-q", "perturb", str(data), "--model", model_dir, "--genes", gene, "--out",
                 str(tmp_path / "zs.h5ad")]) == 0
    assert "cellweave_shift" in ad.read_h5ad(tmp_path / "zs.h5ad").obs
    assert main(["-q", "perturb", str(data), "--model", model_dir, "--genes", "NOTAGENE1", "--out",
                 str(tmp_path / "x.h5ad")]) == 2
    ft = tmp_path / "ft"
    assert main(["-q", "finetune-perturb", str(data), "--model", model_dir, "--perturbation-key",
                 "condition", "--control", "ctrl", "--max-steps", "40", "--n-control-cells", "32", "--out", str(ft)]) == 0
    ctrl = condition_data[condition_data.obs["condition"] == "ctrl"][:10].copy()
    cellweave.io.write(ctrl, tmp_path / "cells.h5ad")
    assert main(["-q", "predict-perturb", str(tmp_path / "cells.h5ad"), "--model", str(ft), "--perturbation",
                 "stim", "--out", str(tmp_path / "pred.h5ad")]) == 0
    pred = ad.read_h5ad(tmp_path / "pred.h5ad")
    assert pred.n_obs == 10 and pred.layers["cellweave_predicted"].shape == (10, condition_data.n_vars)
    assert Path(ft / "perturbation.json").is_file()
