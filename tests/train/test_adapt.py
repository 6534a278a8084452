"""Self-supervised adaptation (``cellweave adapt``, ``--adapt``): tiny models on synthetic data."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pytest
import torch

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import build_vocabulary, synthetic_adata
from cellweave.models import CellWeave
from cellweave.nn._decoder import CountDecoder, nb_nll, vicreg_loss
from cellweave.train import adapt


@pytest.fixture(scope="module")
def data_and_model(tiny_arch, tmp_path_factory):
    adata = synthetic_adata(n_cells=240, n_genes=200, n_batches=2, seed=1)
    vocab, _ = build_vocabulary({"s": adata}, min_cells=1)
    torch.manual_seed(0)
    model = CellWeave.from_preset("tiny", vocab, **tiny_arch)
    model.card = {"name": "tiny-base"}
    folder = tmp_path_factory.mktemp("base") / "model"
    model.save(folder)
    return adata, model, folder


def test_nb_nll_is_minimal_at_the_true_mean() -> None:
    x = torch.tensor([[0.0, 3.0, 10.0]])
    theta = torch.ones(3) * 5
    at_truth = nb_nll(x, x.clamp_min(1e-3), theta).sum()
    for scale in (0.5, 2.0):
        assert nb_nll(x, (x * scale).clamp_min(1e-3), theta).sum() > at_truth
    # A known value: NB(mean 1, theta 1) is geometric(1/2): P(0) = 1/2.
    assert torch.isclose(nb_nll(torch.zeros(1), torch.ones(1), torch.ones(1)), torch.log(torch.tensor([2.0])))


def test_sparse_nb_sum_equals_the_elementwise_nll() -> None:
    from cellweave.nn._decoder import nb_nll_sum

    torch.manual_seed(0)
    x = torch.poisson(torch.rand(40, 25) * 0.5)  # mostly zeros, as counts are
    mu, theta = torch.rand(40, 25) * 3 + 0.01, torch.rand(25) + 0.1
    assert (x == 0).float().mean() > 0.5
    assert torch.isclose(nb_nll_sum(x, mu, theta), nb_nll(x, mu, theta).sum(), rtol=1e-5)


def test_count_decoder_means_sum_to_the_library() -> None:
    dec = CountDecoder(8, 20, n_batches=3)
    mu, theta = dec(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]), torch.tensor([[10.0], [20.0], [5.0], [1.0]]))
    assert mu.shape == (4, 20) and theta.shape == (20,)
    assert torch.allclose(mu.sum(1), torch.tensor([10.0, 20.0, 5.0, 1.0]), rtol=1e-4)


def test_vicreg_is_lower_for_matching_views_than_for_collapsed_ones() -> None:
    torch.manual_seed(0)
    z = torch.randn(64, 16)
    matching = vicreg_loss(z, z + 0.01 * torch.randn_like(z))
    collapsed = vicreg_loss(torch.zeros(64, 16), torch.zeros(64, 16))
    unrelated = vicreg_loss(z, torch.randn(64, 16))
    assert matching < unrelated and matching < collapsed


def test_adapt_lowers_both_losses_saves_a_loadable_model_and_leaves_the_base_alone(data_and_model, tmp_path) -> None:
    adata, model, _ = data_and_model
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    out = tmp_path / "adapted"
    adapted = adapt(adata, model=model, method="encoder", batch_key="batch", max_epochs=6, max_steps=None, batch_size=32, lr=2e-3,
                    out=out, progress=False)
    rec = adapted.card["adaptation"]
    assert rec["count_likelihood"] and rec["n_batches"] == 2 and rec["decoded_genes"] > 10
    assert rec["vicreg_weight"] > 0 and "vicreg" in rec["losses_after"]
    assert rec["steps"] == 6 * (240 // 32)
    assert rec["losses_after"]["count_nll"] < rec["losses_before"]["count_nll"]
    assert rec["losses_after"]["masked_loss"] < rec["losses_before"]["masked_loss"]
    assert rec["base_model"] == "tiny-base" and rec["base_model_sha256"] == model.model_hash
    for k, v in model.module.state_dict().items():  # the input model is not changed
        assert torch.equal(v, before[k])
    loaded = CellWeave.load(out)
    assert loaded.card["adaptation"]["steps"] == rec["steps"] and loaded.name == "tiny-base-adapted"
    assert loaded.model_hash != model.model_hash
    emb, _ = loaded.embed(adata, progress=False)
    assert emb.shape == (adata.n_obs, loaded.module.embedding_dim) and np.isfinite(emb).all()


def test_adapt_from_scratch_and_without_counts(data_and_model, recwarn) -> None:
    adata, model, _ = data_and_model
    scratch = adapt(adata, model=model, method="encoder", max_epochs=1, max_steps=2, batch_size=32, from_scratch=True, progress=False)
    # Adaptation has no validation loop; Lightning must not warn about a missing val_dataloader.
    assert not [w for w in recwarn if "val_dataloader" in str(w.message)]
    assert scratch.card["adaptation"]["from_scratch"] and scratch.card["adaptation"]["base_model_sha256"] is None
    assert scratch.card["adaptation"]["steps"] == 2
    lognorm = adata.copy()
    lognorm.X = np.log1p(lognorm.X.toarray() / lognorm.X.sum(1).A * 1e4).astype(np.float32)
    lognorm.uns["x_kind"] = "log_normalized"
    masked_only = adapt(lognorm, model=model, method="encoder", max_epochs=1, max_steps=2, batch_size=32, vicreg_weight=0.0,
                        progress=False)
    assert not masked_only.card["adaptation"]["count_likelihood"]
    assert set(masked_only.card["adaptation"]["losses_after"]) == {"masked_loss"}


def test_adapt_start_genes_keeps_only_the_pretrained_gene_tables(data_and_model) -> None:
    from cellweave.nn import CellWeaveModule
    from cellweave.train import start_module

    adata, model, _ = data_and_model
    model = copy.deepcopy(model)  # the fixture is shared
    # Give the base model gene embeddings no random initialization would produce.
    with torch.no_grad():
        model.module.feature_embedding.weight.add_(5.0)
    genes = start_module(model, "genes", seed=3)
    random = start_module(model, "random", seed=3)
    assert torch.equal(genes.feature_embedding.weight, model.module.feature_embedding.weight)
    assert genes.feature_embedding.weight is not model.module.feature_embedding.weight  # a copy
    assert not torch.equal(random.feature_embedding.weight, model.module.feature_embedding.weight)
    fresh = CellWeaveModule(model.config).state_dict()
    for name, value in genes.state_dict().items():  # every other weight is re-drawn, not copied
        if name != "feature_embedding.weight" and value.numel() > 1 and value.std() > 0:
            assert not torch.equal(value, model.module.state_dict()[name]), name
            assert value.shape == fresh[name].shape
    adapted = adapt(adata, model=model, method="encoder", start="genes", max_epochs=1, max_steps=2, batch_size=32, progress=False)
    rec = adapted.card["adaptation"]
    assert rec["start"] == "genes" and not rec["from_scratch"] and rec["base_model_sha256"] == model.model_hash
    assert adapted.name.endswith("-genes-adapted")
    with pytest.raises(CellWeaveInputError, match="start"):
        adapt(adata, model=model, start="genes", from_scratch=True, progress=False)
    with pytest.raises(CellWeaveInputError, match="give one of"):
        adapt(adata, model=model, start="weights", progress=False)


def test_adapt_trains_feature_tables_unless_told_not_to(tiny_arch, data_and_model, tmp_path) -> None:
    import dataclasses

    adata, model, _ = data_and_model
    torch.manual_seed(5)
    fixed = CellWeave.from_preset("tiny", model.vocab, **tiny_arch, profile_skip=True, fixed_feature_tables=True)
    fixed.save(tmp_path / "fixed")
    fixed = CellWeave.load(tmp_path / "fixed")  # the flag and the codes survive saving
    assert fixed.config.fixed_feature_tables and not fixed.module.feature_embedding.weight.requires_grad
    assert dataclasses.asdict(fixed.config) == dataclasses.asdict(CellWeave.load(tmp_path / "fixed").config)
    tables = ("feature_embedding.weight", "profile_embedding.weight")
    before = {k: v.clone() for k, v in fixed.module.state_dict().items()}
    kept = adapt(adata, model=fixed, method="encoder", max_epochs=1, max_steps=3, batch_size=32, lr=1e-2, progress=False,
                 train_feature_tables=False)
    for name in tables:
        assert torch.equal(before[name], kept.module.state_dict()[name]), name
    assert not torch.equal(before["cell_key.weight"], kept.module.state_dict()["cell_key.weight"])
    assert kept.config.fixed_feature_tables and kept.card["adaptation"]["feature_tables"] == "fixed"
    # The default trains them, in a copy: the input model keeps its fixed codes and its flag.
    trained = adapt(adata, model=fixed, method="encoder", max_epochs=1, max_steps=3, batch_size=32, lr=1e-2, progress=False)
    for name in tables:
        assert not torch.equal(before[name], trained.module.state_dict()[name]), name
        assert torch.equal(before[name], fixed.module.state_dict()[name]), name
    assert fixed.config.fixed_feature_tables and not fixed.module.feature_embedding.weight.requires_grad
    assert not trained.config.fixed_feature_tables and trained.card["adaptation"]["feature_tables"] == "trained"
    trained.save(tmp_path / "trained")  # a later adaptation or resumed training sees trainable tables
    reloaded = CellWeave.load(tmp_path / "trained")
    assert not reloaded.config.fixed_feature_tables and reloaded.module.feature_embedding.weight.requires_grad
    # A model with learned tables can keep them fixed too.
    frozen = adapt(adata, model=model, method="encoder", max_epochs=1, max_steps=3, batch_size=32, lr=1e-2, progress=False,
                   train_feature_tables=False)
    assert torch.equal(model.module.feature_embedding.weight, frozen.module.feature_embedding.weight)
    assert not model.config.fixed_feature_tables


def test_cli_adapt_keeps_feature_tables_fixed_when_asked(data_and_model, tmp_path) -> None:
    from cellweave.cli import main

    adata, model, folder = data_and_model
    adata.write_h5ad(tmp_path / "cells.h5ad")
    rc = main(["-q", "adapt", str(tmp_path / "cells.h5ad"), "--model", str(folder), "--out", str(tmp_path / "a"),
               "--method", "encoder", "--max-epochs", "1", "--max-steps", "2", "--lr", "0.01", "--no-train-feature-tables"])
    assert rc == 0
    adapted = CellWeave.load(tmp_path / "a")
    assert adapted.card["adaptation"]["feature_tables"] == "fixed" and adapted.config.fixed_feature_tables
    assert torch.equal(adapted.module.feature_embedding.weight, model.module.feature_embedding.weight)


def test_adapt_refuses_a_missing_batch_key_and_an_empty_budget(data_and_model) -> None:
    adata, model, _ = data_and_model
    with pytest.raises(CellWeaveInputError, match="nope"):
        adapt(adata, model=model, batch_key="nope", progress=False)
    with pytest.raises(CellWeaveInputError, match="max_steps"):
        adapt(adata, model=model, max_steps=0, progress=False)


def _knn_accuracy(emb: np.ndarray, labels) -> float:
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(15), emb, np.asarray(labels, dtype=str), cv=5).mean())


def test_adapt_head_trains_a_readout_of_the_frozen_model(data_and_model, tmp_path) -> None:
    adata, model, _ = data_and_model
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    out = tmp_path / "head"
    adapted = adapt(adata, model=model, batch_key="batch", max_epochs=50, n_latent=6, out=out, progress=False)
    rec = adapted.card["adaptation"]
    assert rec["method"] == "head" and rec["n_latent"] == 6 and rec["n_batches"] == 2
    assert rec["steps"] == 50 * 2 and rec["batch_size"] == 128  # 240 cells: 2 batches of at most 128 a pass
    assert rec["losses_after"]["count_nll"] < 0.9 * rec["losses_before"]["count_nll"]
    for k, v in model.module.state_dict().items():  # the input model is not changed ...
        assert torch.equal(v, before[k])
    for k, v in adapted.module.state_dict().items():  # ... and the adapted encoder is the frozen model
        if not k.startswith("readout."):
            assert torch.equal(v, before[k]), k
    assert adapted.config.readout_latent == 6 and model.config.readout_latent == 0
    emb, _ = adapted.embed(adata, progress=False)
    assert emb.shape == (adata.n_obs, 6) and adapted.module.embedding_dim == 6
    loaded = CellWeave.load(out)
    assert loaded.config.readout_latent == 6 and loaded.card["adaptation"]["method"] == "head"
    np.testing.assert_allclose(loaded.embed(adata, progress=False)[0], emb, atol=1e-5)
    # The readout reads the whole profile through the count likelihood: cell types separate better than
    # in the frozen model's embedding, and the batch (the decoder's covariate) no better.
    base = model.embed(adata, progress=False)[0]
    assert _knn_accuracy(emb, adata.obs["cell_type"]) > max(_knn_accuracy(base, adata.obs["cell_type"]), 0.95)
    assert _knn_accuracy(emb, adata.obs["batch"]) <= _knn_accuracy(base, adata.obs["batch"]) + 0.05
    # A fine-tuned encoder invalidates the readout: the encoder method drops it.
    tuned = adapt(adata, model=loaded, method="encoder", max_epochs=1, max_steps=2, batch_size=32, progress=False)
    assert tuned.config.readout_latent == 0 and not hasattr(tuned.module, "readout")
    assert tuned.embed(adata, progress=False)[0].shape[1] == model.module.embedding_dim


def test_fit_count_readout_warm_starts_from_a_readout_and_refuses_another_shape() -> None:
    from cellweave.nn import LatentReadout
    from cellweave.train import fit_count_readout

    rng = np.random.default_rng(0)
    emb = rng.normal(3.0, 2.0, size=(64, 12)).astype(np.float32)
    counts = rng.poisson(2.0, size=(64, 20)).astype(np.float32)
    torch.manual_seed(5)
    init = LatentReadout(12, 4, 128)
    before = {k: v.clone() for k, v in init.state_dict().items()}
    # No steps: the warm-started encoder is the init's network on these cells' own standardization.
    warm, rec = fit_count_readout(emb, counts, max_steps=0, n_latent=4, init=init)
    assert rec["init"] is True and rec["steps"] == 0
    x = torch.as_tensor(emb)
    with torch.no_grad():
        expected = init.net((x - x.mean(0)) / x.std(0))[:, :4]
        torch.testing.assert_close(warm(x), expected)
        cold = fit_count_readout(emb, counts, max_steps=0, n_latent=4)[0]
        assert not torch.allclose(cold(x), expected)  # a random start differs
    # Training moves a copy: the init itself is left as it was.
    trained, rec = fit_count_readout(emb, counts, epochs=3, n_latent=4, init=init)
    assert rec["steps"] == 3 and not torch.equal(trained.net[0].weight, init.net[0].weight)
    for k, v in init.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(CellWeaveInputError, match="latent 4.*latent 6.*init=None"):
        fit_count_readout(emb, counts, max_steps=0, n_latent=6, init=init)
    with pytest.raises(CellWeaveInputError, match="input 12.*input 8"):
        fit_count_readout(emb[:, :8], counts, max_steps=0, n_latent=4, init=init)


def test_adapt_head_needs_counts_and_says_what_to_do(data_and_model) -> None:
    adata, model, _ = data_and_model
    lognorm = adata.copy()
    lognorm.X = np.log1p(lognorm.X.toarray() / lognorm.X.sum(1).A * 1e4).astype(np.float32)
    lognorm.uns["x_kind"] = "log_normalized"
    with pytest.raises(CellWeaveInputError, match="method='encoder'"):
        adapt(lognorm, model=model, progress=False)
    with pytest.raises(CellWeaveInputError, match="method="):
        adapt(adata, model=model, method="lora", progress=False)
    with pytest.raises(CellWeaveInputError, match="n_latent"):
        adapt(adata, model=model, n_latent=0, progress=False)


def test_cli_adapt_then_embed_and_embed_with_adapt(data_and_model, tmp_path) -> None:
    from cellweave.cli import main

    adata, model, folder = data_and_model
    adata.write_h5ad(tmp_path / "cells.h5ad")
    out = tmp_path / "adapted"
    rc = main(["-q", "adapt", str(tmp_path / "cells.h5ad"), "--model", str(folder), "--out", str(out),
               "--batch-key", "batch", "--max-epochs", "4", "--max-steps", "3"])
    assert rc == 0
    adapted = CellWeave.load(out)
    assert adapted.card["adaptation"]["steps"] == 3 and adapted.card["adaptation"]["batch_key"] == "batch"
    assert adapted.card["adaptation"]["method"] == "head" and adapted.config.readout_latent == 10
    assert "adapt" in adapted.card["adaptation"]["command"]
    rc = main(["-q", "embed", str(tmp_path / "cells.h5ad"), "--model", str(out), "--out", str(tmp_path / "e.h5ad")])
    assert rc == 0
    by_folder = ad.read_h5ad(tmp_path / "e.h5ad")
    assert by_folder.uns["cellweave"]["X_cellweave"]["model_sha256"] == adapted.model_hash
    # --adapt does the same in one step (same seed, same budget -> the same weights).
    rc = main(["-q", "embed", str(tmp_path / "cells.h5ad"), "--model", str(folder), "--adapt",
               "--adapt-batch-key", "batch", "--adapt-epochs", "4", "--adapt-max-steps", "3",
               "--out", str(tmp_path / "e2.h5ad")])
    assert rc == 0
    one_step = ad.read_h5ad(tmp_path / "e2.h5ad")
    np.testing.assert_allclose(one_step.obsm["X_cellweave"], by_folder.obsm["X_cellweave"], atol=1e-5)


def test_annotate_with_adapt_uses_reference_and_query(data_and_model, tmp_path) -> None:
    from cellweave.cli import main

    adata, _, folder = data_and_model
    ref, query = adata[adata.obs["batch"] == adata.obs["batch"].cat.categories[0]].copy(), \
        adata[adata.obs["batch"] != adata.obs["batch"].cat.categories[0]].copy()
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    rc = main(["-q", "annotate", str(tmp_path / "query.h5ad"), "--reference", str(tmp_path / "ref.h5ad"),
               "--label-key", "cell_type", "--model", str(folder), "--adapt", "--adapt-epochs", "1",
               "--adapt-max-steps", "2", "--out", str(tmp_path / "a.h5ad")])
    assert rc == 0
    out = ad.read_h5ad(tmp_path / "a.h5ad")
    assert out.n_obs == query.n_obs and "cellweave_prediction" in out.obs
    assert out.uns["cellweave"]["annotate"]["model"] == "tiny-base-adapted"


def test_cells_without_a_batch_are_one_more_batch_with_a_warning(caplog) -> None:
    from cellweave.train._adapt import _obs_column

    adata = synthetic_adata(n_cells=12, n_genes=10, seed=0)
    adata.obs["b"] = ["x", "y", None, "x", "", "y"] * 2
    with caplog.at_level("WARNING", logger="cellweave"):
        values = _obs_column(adata, "b")
    assert list(values[:6]) == ["x", "y", "missing", "x", "missing", "y"]
    assert "4 of 12 cells have no value in obs['b']" in caplog.text


def test_adapt_is_bit_reproducible_at_one_thread_count_and_records_it(data_and_model) -> None:
    """Same seed, same torch thread count: the same readout bit for bit; the card's ``hardware`` records the
    count, so a published adaptation can be rerun exactly (another count sums in another order)."""
    adata, model, _ = data_and_model
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        runs = [adapt(adata, model=model, max_epochs=3, seed=4, progress=False) for _ in range(2)]
    finally:
        torch.set_num_threads(n)
    a, b = (r.module.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].card["adaptation"]["hardware"].endswith("torch threads 1")
    other = adapt(adata, model=model, max_epochs=3, seed=5, progress=False).module.state_dict()
    assert not torch.equal(other["readout.net.0.weight"], a["readout.net.0.weight"])  # the seed matters


def test_adapt_head_in_bf16_embeds_under_autocast_and_reads_out_in_float32(data_and_model, attention_dtypes) -> None:
    """``precision="bf16-mixed"`` with the head: the frozen model's embedding pass runs in bf16, the
    readout is trained and applied in float32, and the adapted embedding stays close to float32's."""
    adata, model, _ = data_and_model
    fp32 = adapt(adata, model=model, max_epochs=20, n_latent=6, progress=False)
    assert set(attention_dtypes) == {torch.float32}
    attention_dtypes.clear()
    bf16 = adapt(adata, model=model, max_epochs=20, n_latent=6, precision="bf16-mixed", progress=False)
    assert attention_dtypes and set(attention_dtypes) == {torch.bfloat16}
    assert (fp32.card["adaptation"]["precision"], bf16.card["adaptation"]["precision"]) == ("32-true", "bf16-mixed")
    assert all(p.dtype == torch.float32 for p in bf16.module.parameters())
    a, b = fp32.embed(adata, progress=False)[0], bf16.embed(adata, progress=False)[0]
    assert not np.array_equal(a, b)  # the readout was trained on the bf16 embedding
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    # The readout itself ignores autocast: the same input gives the same float32 latent.
    x = torch.randn(5, bf16.module.pooled_dim)
    with torch.no_grad(), bf16.autocast("bf16-mixed"):
        inside = bf16.module.readout(x)
    with torch.no_grad():
        outside = bf16.module.readout(x)
    assert inside.dtype == torch.float32 and torch.equal(inside, outside)


def test_adapt_encoder_in_bf16_runs_linear_layers_in_bf16_and_attention_in_float32(data_and_model,
                                                                                   attention_dtypes,
                                                                                   training_linear_dtypes) -> None:
    """``method="encoder"`` with ``precision="bf16-mixed"``: Lightning's bf16 mixed precision, whose
    linear layers compute in bf16 while attention stays float32 on a CPU during training; the
    weights stay float32 and the run is recorded."""
    adata, model, _ = data_and_model
    tuned = adapt(adata, model=model, method="encoder", max_epochs=1, max_steps=2, batch_size=32,
                  precision="bf16-mixed", progress=False)
    assert training_linear_dtypes == {torch.bfloat16}
    assert set(attention_dtypes) == {torch.float32}
    assert tuned.card["adaptation"]["precision"] == "bf16-mixed" and tuned.card["adaptation"]["steps"] == 2
    assert all(p.dtype == torch.float32 for p in tuned.module.parameters())
    with pytest.raises(CellWeaveInputError, match="32-true, bf16-mixed"):
        adapt(adata, model=model, precision="bf16-true", progress=False)
