"""tl.impute, spatial context in tl.embed, and `cellweave impute` on tiny synthetic models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cellweave
from cellweave._exceptions import CellWeaveInputError
from cellweave.cli import main
from cellweave.data import synthetic_adata, synthetic_mudata
from cellweave.models import CellWeave

TINY = dict(d_model=32, n_layers=2, n_heads=2, d_ff=64, n_cell_targets=32,
            context_length={"rna": 64, "prot": 16, "atac": 32, "gene_activity": 32})


def _cells():
    # One draw: synthetic programs (which protein marks which type) depend on the seed, so
    # held-out cells must come from the same draw as the training cells.
    return synthetic_mudata(n_cells=420, n_genes=200, n_proteins=12, n_peaks=60, seed=0)


def _train(tmp_path_factory, modality_dropout: float) -> CellWeave:
    from cellweave.train import pretrain

    train = _cells()[:300].copy()
    out = tmp_path_factory.mktemp(f"model_md{modality_dropout}")
    return pretrain({"train": train}, out=out, max_epochs=6, batch_size=32, lr=3e-3, seed=0, progress=False,
                    config_overrides={**TINY, "modality_dropout": modality_dropout})


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> CellWeave:
    return _train(tmp_path_factory, 1.0)


@pytest.fixture(scope="module")
def query():
    """Cells never seen in pretraining, with their measured protein."""
    return _cells()[300:].copy()


def test_cross_modal_masking_teaches_the_missing_modality(model, tmp_path_factory) -> None:
    """Held-out cells with one modality left out of the input: trained with modality dropout,
    the cell head predicts the missing values better than each feature's mean; trained without
    it (no protein was ever a target: a cell's input holds all its proteins), it does worse."""
    with_dropout = model.card["metrics"]
    without = _train(tmp_path_factory, 0.0).card["metrics"]
    assert with_dropout["val_cross_modal_values"] > 100
    assert with_dropout["val_cross_modal_mse"] < with_dropout["val_cross_modal_feature_mean_mse"]
    assert with_dropout["val_cross_modal_mse"] < 0.7 * without["val_cross_modal_mse"]


def test_impute_does_not_read_the_target(model, query) -> None:
    a = query.copy()
    b = query.copy()
    b["prot"].X = np.full(b["prot"].shape, 7.0, dtype=np.float32)  # other measured protein: same prediction
    cellweave.tl.impute(a, target="prot", model=model, progress=False)
    cellweave.tl.impute(b, target="prot", model=model, progress=False)
    np.testing.assert_allclose(a.obsm["cellweave_prot"], b.obsm["cellweave_prot"], rtol=1e-5, atol=1e-6)


def test_impute_anndata_writes_obsm_and_uns(model) -> None:
    adata = synthetic_adata(n_cells=30, n_genes=200, seed=2)
    cellweave.tl.impute(adata, target="prot", model=model, progress=False)
    rec = adata.uns["cellweave"]["cellweave_prot"]
    keys = model.modality_features("prot")
    assert adata.obsm["cellweave_prot"].shape == (30, len(keys))
    assert list(rec["features"]) == keys and rec["input_modalities"] == ["rna"]
    assert rec["model_sha256"] == model.model_hash
    assert np.isfinite(adata.obsm["cellweave_prot"]).all()
    assert (adata.obsm["cellweave_prot"].std(0) > 0).all()  # predictions depend on the cell


def test_impute_mudata_adds_or_fills_the_modality(model) -> None:
    md = synthetic_mudata(n_cells=40, n_genes=200, n_proteins=12, n_peaks=60, modalities=("rna", "atac"), seed=3)
    cellweave.tl.impute(md, target="prot", model=model, progress=False)
    assert "prot" in md.mod and md["prot"].n_obs == 40
    np.testing.assert_allclose(md["prot"].X, md.obsm["cellweave_prot"])
    part = synthetic_mudata(n_cells=40, n_genes=200, n_proteins=12, n_peaks=60, missing={"prot": 0.5}, seed=4)
    n_measured = part["prot"].n_obs
    cellweave.tl.impute(part, target="prot", model=model, progress=False)
    filled = part["prot"]
    assert filled.n_obs == 40 and int(filled.obs["cellweave_measured"].sum()) == n_measured
    assert np.isfinite(filled.layers["cellweave_imputed"]).any(axis=1).all()


def test_impute_errors_name_the_fix(model, tmp_path) -> None:
    adata = synthetic_adata(n_cells=20, n_genes=200, seed=2)
    with pytest.raises(CellWeaveInputError, match="not a modality"):
        cellweave.tl.impute(adata, target="hto", model=model)
    with pytest.raises(CellWeaveInputError, match="nothing to predict"):
        cellweave.tl.impute(adata, target="rna", model=model)
    vocab = type(model.vocab)(model.modality_features("rna")[:50])
    config = type(model.config).from_dict({**model.config.to_dict(), "vocab_size": 50})
    rna_only = CellWeave(config, vocab)
    with pytest.raises(CellWeaveInputError, match="knows no 'prot' features"):
        cellweave.tl.impute(adata, target="prot", model=rna_only)


def test_predict_features_matches_the_cell_head(model) -> None:
    m = model.module
    torch.manual_seed(0)
    cell = torch.randn(3, m.config.d_model)
    ids = torch.tensor([1, 5, 9])
    mods = torch.tensor([1, 1, 1])
    batched = m.predict_from_cell(cell, ids.expand(3, -1), mods.expand(3, -1))
    np.testing.assert_allclose(m.predict_features(cell, ids, mods).detach(), batched.detach(), rtol=1e-5, atol=1e-6)


def test_embed_spatial_context(model) -> None:
    adata = synthetic_adata(n_cells=60, n_genes=200, spatial=True, seed=1)
    plain = cellweave.tl.embed(adata, model=model, progress=False, copy=True)
    assert plain.uns["cellweave"]["X_cellweave"]["spatial"] is False  # the model does not ask for it
    ctx = cellweave.tl.embed(adata, model=model, progress=False, spatial=True, n_spatial_neighbors=4, copy=True)
    d = plain.obsm["X_cellweave"].shape[1]
    assert ctx.obsm["X_cellweave"].shape == (60, 2 * d)
    np.testing.assert_allclose(ctx.obsm["X_cellweave"][:, :d], plain.obsm["X_cellweave"], rtol=1e-5, atol=1e-6)
    rec = ctx.uns["cellweave"]["X_cellweave"]["spatial_context"]
    assert rec["n_neighbors"] == 4 and rec["section_key"] == "batch" and rec["n_sections"] == 2
    # the context is the mean over 4 neighbours of the same section (never the other section)
    from cellweave.data._spatial import spatial_neighbors

    b = adata.obs["batch"].astype(str).to_numpy()
    nbr = spatial_neighbors(adata.obsm["spatial"], b, n_neighbors=4)
    assert (b[nbr] == b[:, None]).all()
    expected = plain.obsm["X_cellweave"][nbr].mean(1)
    np.testing.assert_allclose(ctx.obsm["X_cellweave"][:, d:], expected, rtol=1e-4, atol=1e-5)
    del adata.obsm["spatial"]
    with pytest.raises(CellWeaveInputError, match="no obsm"):
        cellweave.tl.embed(adata, model=model, progress=False, spatial=True)


def test_cli_impute(model, tmp_path) -> None:
    adata = synthetic_adata(n_cells=25, n_genes=200, seed=6)
    src = tmp_path / "in.h5ad"
    adata.write_h5ad(src)
    out = tmp_path / "out.h5ad"
    assert main(["-q", "impute", str(src), "--target", "prot", "--model", str(model.path), "--out", str(out)]) == 0
    res = cellweave.io.read(out)
    assert res.obsm["cellweave_prot"].shape == (25, len(model.modality_features("prot")))
    assert list(res.uns["cellweave"]["cellweave_prot"]["features"]) == model.modality_features("prot")
    assert main(["-q", "impute", str(src), "--target", "prot", "--model", str(model.path),
                 "--out", str(tmp_path / "out.h5mu")]) == 2


def _clr(X) -> np.ndarray:
    L = np.log1p(np.asarray(X.todense() if hasattr(X, "todense") else X, dtype=np.float64))
    return L - L.mean(1, keepdims=True)


def _mean_pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred - pred.mean(0), truth - truth.mean(0)
    return float(np.nanmean((p * t).sum(0) / np.sqrt((p**2).sum(0) * (t**2).sum(0))))


@pytest.fixture(scope="module")
def finetuned(model, query):
    """RNA-only query cells, protein predicted by a decoder fine-tuned on the CITE-seq training cells."""
    reference = _cells()[:300].copy()
    rna_only = query["rna"].copy()
    cellweave.tl.impute(rna_only, target="prot", model=model, reference=reference, max_epochs=8, progress=False)
    return rna_only


def test_impute_with_reference_records_the_fine_tuning(model, query, finetuned) -> None:
    pred = finetuned.obsm["cellweave_prot"]
    assert pred.shape == query["prot"].shape and np.isfinite(pred).all()
    names = [str(n) for n in query["prot"].var_names]
    rec = finetuned.uns["cellweave"]["cellweave_prot"]
    assert rec["mode"] == "fine-tuned" and "CLR" in rec["units"] and list(rec["feature_names"]) == names
    assert rec["n_reference_cells"] == 300 and 1 <= rec["finetune"]["best_epoch"] <= 8
    assert rec["finetune"]["n_train"] + rec["finetune"]["n_val"] == 300
    assert rec["model_sha256"] == model.model_hash  # the user's model is not modified
    # Predictions come back in CLR units: centred near the reference's per-protein means.
    ref_mean = _clr(_cells()[:300]["prot"].X).mean(0)
    assert np.abs(pred.mean(0) - ref_mean).max() < 1.0


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_impute_with_reference_beats_zero_shot_on_real_citeseq() -> None:
    """Shipped model, bundled 10x PBMC CITE-seq: fine-tuned on one batch, the protein predicted
    for the other batch's RNA follows its measured CLR protein, far better than zero-shot."""
    shipped = CellWeave.load(None)
    data = cellweave.datasets.load("citeseq_pbmc_10x_scvi_tests")
    batch = np.asarray(data.obs["batch"]).astype(str)
    ref, qry = data[batch == batch[0]].copy(), data[batch != batch[0]].copy()
    truth = _clr(qry["prot"].X)
    tuned = qry["rna"].copy()
    cellweave.tl.impute(tuned, target="prot", model=shipped, reference=ref, max_epochs=40, progress=False)
    zero = qry["rna"].copy()
    cellweave.tl.impute(zero, target="prot", model=shipped, progress=False)
    rec = tuned.uns["cellweave"]["cellweave_prot"]
    keys = list(zero.uns["cellweave"]["cellweave_prot"]["features"])
    col = [keys.index(k) for k in rec["features"]]
    r_ft = _mean_pearson(tuned.obsm["cellweave_prot"], truth)
    r_zero = _mean_pearson(zero.obsm["cellweave_prot"][:, col], truth)
    assert r_ft > 0.35
    assert r_ft > r_zero + 0.15


def test_impute_with_reference_is_reproducible_and_ignores_query_protein(model, query) -> None:
    reference = _cells()[:300].copy()
    a, b = query.copy(), query.copy()
    b["prot"].X = np.full(b["prot"].shape, 3.0, dtype=np.float32)
    for md in (a, b):
        cellweave.tl.impute(md, target="prot", model=model, reference=reference, max_epochs=3, progress=False)
    # Same seed, same fine-tuning; the query's own protein never enters its prediction.
    np.testing.assert_array_equal(a.obsm["cellweave_prot"], b.obsm["cellweave_prot"])
    # The measured protein of the MuData is kept; predictions go to the imputed layer.
    assert np.allclose(b["prot"].X.toarray() if hasattr(b["prot"].X, "toarray") else b["prot"].X, 3.0)
    np.testing.assert_allclose(b["prot"].layers["cellweave_imputed"], b.obsm["cellweave_prot"], rtol=1e-6)
    assert b["prot"].obs["cellweave_measured"].all()


def test_impute_reference_errors(model, query) -> None:
    rna_only = query["rna"].copy()
    with pytest.raises(CellWeaveInputError, match="not 'prot'"):
        cellweave.tl.impute(rna_only, target="prot", model=model, reference=_cells()[:50]["rna"].copy())
    with pytest.raises(CellWeaveInputError, match="at least 20"):
        cellweave.tl.impute(rna_only, target="prot", model=model, reference=_cells()[:10].copy())
    with pytest.raises(CellWeaveInputError, match="features= cannot"):
        cellweave.tl.impute(rna_only, target="prot", model=model, reference=_cells()[:50].copy(), features=["x"])


def test_cli_impute_with_reference(model, query, tmp_path) -> None:
    src, ref, out = tmp_path / "q.h5ad", tmp_path / "ref.h5mu", tmp_path / "out.h5ad"
    query["rna"].copy().write_h5ad(src)
    _cells()[:300].copy().write(ref)
    assert main(["-q", "impute", str(src), "--target", "prot", "--model", str(model.path), "--paired", str(ref),
                 "--max-epochs", "2", "--precision", "bf16-mixed", "--out", str(out)]) == 0
    res = cellweave.io.read(out)
    assert res.obsm["cellweave_prot"].shape == (query.n_obs, query["prot"].n_vars)
    assert res.uns["cellweave"]["cellweave_prot"]["finetune"]["max_epochs"] == 2
    assert res.uns["cellweave"]["cellweave_prot"]["precision"] == "bf16-mixed"


def test_impute_in_bf16_when_asked_zero_shot_and_fine_tuned(model, query, attention_dtypes) -> None:
    """``precision="bf16-mixed"``: the encoder's passes (and the fine-tuning's) under bf16 autocast,
    predictions float32 and close to float32's, the choice recorded; a wrong one refused first."""
    reference = _cells()[:300].copy()
    out = {}
    for precision, dtype in (("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)):
        for mode, kwargs in (("zero-shot", {}), ("fine-tuned", {"reference": reference, "max_epochs": 3})):
            rna_only = query["rna"].copy()
            attention_dtypes.clear()
            cellweave.tl.impute(rna_only, target="prot", model=model, progress=False, precision=precision, **kwargs)
            # Fine-tuning keeps attention float32 on a CPU while training (nn.attention_in_float32):
            # its prediction passes and the linear start's embedding pass are bf16.
            assert attention_dtypes and dtype in attention_dtypes, (precision, mode)
            if precision == "32-true":
                assert set(attention_dtypes) == {torch.float32}
            rec = rna_only.uns["cellweave"]["cellweave_prot"]
            assert rec["precision"] == precision
            if mode == "fine-tuned":
                assert rec["finetune"]["precision"] == precision
            assert rna_only.obsm["cellweave_prot"].dtype == np.float32
            out[precision, mode] = rna_only.obsm["cellweave_prot"]
    for mode in ("zero-shot", "fine-tuned"):
        a, b = out["32-true", mode], out["bf16-mixed", mode]
        assert not np.array_equal(a, b)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95, mode
    with pytest.raises(CellWeaveInputError, match="32-true, bf16-mixed"):
        cellweave.tl.impute(query["rna"].copy(), target="prot", model=model, reference=reference, precision="fp16")
