"""Pretraining's optional terms: counts recovered from the corpus, the decoded gene panel across
datasets with different genes, the masked count decoder, VICReg + count likelihood in
``pretrain`` with a step budget, and VICReg's neighbour positives. Tiny models on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import build_vocabulary, corpus_counts, prepare_cells, synthetic_adata
from cellweave.nn import CountDecoder
from cellweave.data import TokenDataset, Tokenizer
from cellweave.nn import CellWeaveConfig, CellWeaveModule
from cellweave.train import PretrainPlan, cell_labels, neighbour_partners, pretrain, principal_targets
from cellweave.train._plan import LABEL_COSINE_SCALE, CountTokenDataset
from cellweave.train._pretrain import decoded_gene_panel


@pytest.fixture(scope="module")
def two_datasets():
    a = synthetic_adata(n_cells=120, n_genes=150, seed=1)
    b = synthetic_adata(n_cells=100, n_genes=150, seed=2)
    b = b[:, 60:].copy()  # shares genes 60-149 with a only
    return {"a": a, "b": b}


def test_corpus_counts_gives_back_the_raw_counts(two_datasets) -> None:
    a = two_datasets["a"]
    vocab, _ = build_vocabulary({"a": a}, min_cells=1)
    corpus = prepare_cells(a, vocab, value_encoding="log1p")
    counts = corpus_counts(corpus, "log1p")
    raw = sp.csr_matrix(a.X)
    block = corpus.blocks[0]
    assert block.token_ids.size == a.n_vars  # every synthetic gene is in the vocabulary
    assert counts.shape == raw.shape
    # Columns are in vocabulary order; each cell's multiset of counts is its raw one, exactly.
    for i in range(a.n_obs):
        assert np.array_equal(np.sort(counts[i].data), np.sort(raw[i].data[raw[i].data > 0]))
    # Quantile-encoded corpora cannot be inverted: None, never wrong counts.
    assert corpus_counts(prepare_cells(a, vocab, value_encoding="quantile"), "quantile") is None


def test_decoded_panel_masks_genes_a_dataset_did_not_measure(two_datasets) -> None:
    vocab, _ = build_vocabulary(two_datasets, min_cells=1)
    corpora = [prepare_cells(d, vocab, dataset=n, value_encoding="log1p") for n, d in two_datasets.items()]
    counts, codes, masks, panel = decoded_gene_panel(corpora, "log1p", n_per_dataset=50)
    assert counts.shape == (220, panel.size) and codes.tolist() == [0] * 120 + [1] * 100
    assert 50 <= panel.size <= 100
    b_ids = set(corpora[1].blocks[0].token_ids.tolist())
    # Dataset b measured only its own genes; dataset a every panel gene it has.
    assert masks[1].sum() == sum(int(t) in b_ids for t in panel)
    assert masks[1].sum() < panel.size
    assert not counts[120:][:, ~masks[1]].count_nonzero()
    assert counts[:120].sum() > 0
    assert decoded_gene_panel(corpora, "quantile") is None


def test_masked_count_decoder_spends_the_library_on_measured_genes() -> None:
    dec = CountDecoder(8, 6, n_batches=2)
    mask = torch.tensor([[True, True, False, True, False, True], [False, True, True, True, True, True]])
    library = torch.tensor([[10.0], [4.0]])
    mu, _ = dec(torch.randn(2, 8), torch.tensor([0, 1]), library, gene_mask=mask)
    assert torch.all(mu[~mask] == 0)
    assert torch.allclose(mu.sum(1), library.ravel(), rtol=1e-5)


def test_pretrain_with_count_likelihood_vicreg_and_a_step_budget(tiny_arch, two_datasets, tmp_path) -> None:
    model = pretrain(two_datasets, out=tmp_path / "m", max_epochs=3, max_steps=5, batch_size=32, seed=0,
                     count_likelihood=True, n_decoded_genes=40, vicreg_weight=0.04, progress=False,
                     config_overrides={**tiny_arch, "value_encoding": "log1p"})
    card = model.card
    assert card["steps"] == 5 and card["max_steps"] == 5
    assert card["objective"]["count_likelihood_genes"] >= 40 and card["objective"]["vicreg_weight"] == 0.04
    assert "VICReg" in card["description"] and "negative-binomial" in card["description"]
    emb = model.embed(two_datasets["a"], progress=False)[0]
    assert emb.shape[0] == 120 and np.isfinite(emb).all()


def test_pretrain_refuses_count_likelihood_on_quantiles_and_an_empty_step_budget(
    tiny_arch, two_datasets, tmp_path,
) -> None:
    with pytest.raises(CellWeaveInputError, match="log1p"):
        pretrain(two_datasets, out=tmp_path / "q", count_likelihood=True, config_overrides=tiny_arch, progress=False)
    with pytest.raises(CellWeaveInputError, match="max_steps"):
        pretrain(two_datasets, out=tmp_path / "z", max_steps=0, config_overrides=tiny_arch, progress=False)
    assert not (tmp_path / "q").exists() and not (tmp_path / "z").exists()


def test_feature_mean_baselines_read_a_seeded_sample_of_a_large_corpus(tiny_rna_model, tiny_vocab_and_data) -> None:
    """Above max_cells, both constant baselines come from the same seeded cells (a 1M-cell store is not
    read in full before training); at or below it, from every cell."""
    from cellweave.train import feature_mean_baselines

    model = tiny_rna_model
    corpus = model.prepare(tiny_vocab_and_data[1], dataset="synthetic")
    n_vocab = len(model.vocab)
    full = feature_mean_baselines([corpus], model.tokenizer, n_vocab, seed=0, max_cells=len(corpus))
    sampled = feature_mean_baselines([corpus], model.tokenizer, n_vocab, seed=0, max_cells=30)
    cells = np.sort(np.random.default_rng(7).choice(len(corpus), 30, replace=False))
    subset = feature_mean_baselines([corpus.subset(cells)], model.tokenizer, n_vocab, seed=0, max_cells=30)
    np.testing.assert_allclose(sampled["cell_mean"], subset["cell_mean"])
    assert not np.allclose(sampled["cell_mean"], full["cell_mean"])


def test_neighbour_partners_are_cells_of_the_same_type_in_the_same_dataset(two_datasets) -> None:
    vocab, _ = build_vocabulary(two_datasets, min_cells=1)
    corpora = [prepare_cells(d, vocab, dataset=n, value_encoding="log1p") for n, d in two_datasets.items()]
    tiny = prepare_cells(two_datasets["a"][:6].copy(), vocab, dataset="tiny", value_encoding="log1p")
    partners = neighbour_partners(corpora + [tiny], k=5, n_top=100)
    assert partners.shape == (226, 5)
    own = np.arange(226)
    assert not (partners[:220] == own[:220, None]).any()  # never the cell itself
    assert ((partners[:120] < 120).all() and (partners[120:220] >= 120).all() and (partners[120:220] < 220).all())
    # A corpus too small for 5 neighbours pairs each cell with itself (plain VICReg).
    assert (partners[220:] == own[220:, None]).all()
    types = np.concatenate([d.obs["cell_type"].to_numpy() for d in two_datasets.values()])
    same = float((types[partners[:220]] == types[:220, None]).mean())
    assert same > 0.8  # chance is 1/3


def test_count_token_dataset_draws_the_second_view_from_a_partner(tiny_arch, two_datasets) -> None:
    vocab, _ = build_vocabulary(two_datasets, min_cells=1)
    corpus = prepare_cells(two_datasets["a"], vocab, dataset="a", value_encoding="log1p")
    config = CellWeaveConfig.from_preset("tiny", vocab_size=len(vocab), value_encoding="log1p", **tiny_arch)
    tokens = TokenDataset([corpus], Tokenizer.from_config(config), mode="train", seed=3)
    partners = np.tile(np.array([[7, 9]]), (120, 1))
    cells = CountTokenDataset(tokens, None, np.zeros(120), two_views=True, partners=partners)
    drawn = set()
    for epoch in range(6):
        cells.set_epoch(epoch)
        item = cells[0]
        matches = [j for j in (7, 9) if np.array_equal(item["view2"]["token_ids"], tokens.item(j, view=1)["token_ids"])]
        assert len(matches) == 1  # the second view is one of the partners, never cell 0 itself
        drawn.add(matches[0])
        assert np.array_equal(cells[0]["view2"]["token_ids"], item["view2"]["token_ids"])  # fixed per (seed, epoch)
    assert drawn == {7, 9}
    with pytest.raises(ValueError, match="one row per cell"):
        CountTokenDataset(tokens, None, np.zeros(120), two_views=True, partners=partners[:5])


def test_pretrain_with_neighbour_positives_records_them_and_refuses_them_without_vicreg(
    tiny_arch, two_datasets, tmp_path,
) -> None:
    model = pretrain(two_datasets, out=tmp_path / "m", max_epochs=1, max_steps=3, batch_size=32, seed=0,
                     vicreg_weight=0.04, vicreg_neighbours=5, progress=False,
                     config_overrides={**tiny_arch, "value_encoding": "log1p"})
    assert model.card["objective"]["vicreg_neighbours"] == 5 and "5 nearest neighbours" in model.card["description"]
    with pytest.raises(CellWeaveInputError, match="--vicreg-weight"):
        pretrain(two_datasets, out=tmp_path / "n", vicreg_neighbours=5, config_overrides=tiny_arch, progress=False)
    assert not (tmp_path / "n").exists()


def test_principal_targets_are_each_datasets_pca_scaled_alike(two_datasets) -> None:
    vocab, _ = build_vocabulary(two_datasets, min_cells=1)
    corpora = [prepare_cells(d, vocab, dataset=n, value_encoding="log1p") for n, d in two_datasets.items()]
    tiny = prepare_cells(two_datasets["a"][:6].copy(), vocab, dataset="tiny", value_encoding="log1p")
    targets = principal_targets(corpora + [tiny], n_pcs=8, n_top=100)
    assert targets.shape == (226, 8) and targets.dtype == np.float32
    assert np.isnan(targets[220:]).all()  # too few cells for components: no target
    for rows in (slice(0, 120), slice(120, 220)):
        var = targets[rows].var(axis=0)
        np.testing.assert_allclose(var.mean(), 1.0, rtol=1e-4)  # every dataset weighs alike
        assert (np.diff(var) <= 1e-6).all() and var[0] > 1.5 * var[-1]  # leading components keep their share
        np.testing.assert_allclose(targets[rows].mean(axis=0), 0.0, atol=1e-4)
    # The first component separates the synthetic cell types, as the panel's PCA does.
    types = two_datasets["a"].obs["cell_type"].to_numpy()
    means = [targets[:120][types == t, :2].mean(axis=0) for t in np.unique(types)]
    assert max(np.linalg.norm(m - n) for m in means for n in means) > 1.0


def test_principal_component_term_trains_a_map_per_dataset_and_skips_cells_without_targets(tiny_arch) -> None:
    config = CellWeaveConfig.from_preset("tiny", vocab_size=40, **tiny_arch)
    plan = PretrainPlan(CellWeaveModule(config), n_pc_targets=3, n_codes=2)
    g = torch.Generator().manual_seed(0)
    b, n = 6, 10
    batch = {"token_ids": torch.randint(1, 40, (b, n), generator=g), "values": torch.rand(b, n, generator=g),
             "modality_ids": torch.zeros(b, n, dtype=torch.long), "padding_mask": torch.ones(b, n, dtype=torch.bool),
             "value_mask": torch.rand(b, n, generator=g) < 0.3, "batch": torch.tensor([0, 0, 1, 1, 1, 0]),
             "pcs": torch.randn(b, 3, generator=g)}
    batch["pcs"][5] = float("nan")  # a cell without RNA
    losses = plan.losses(batch)
    assert torch.isfinite(losses["pc_mse"]) and losses["pc_mse"] > 0
    losses["loss"].backward()
    grad = plan.pc_maps.grad
    assert grad is not None and (grad[0].abs().sum() > 0) and (grad[1].abs().sum() > 0)
    # The NaN cell adds nothing: dropping it leaves the term unchanged.
    keep = {k: v[:5] for k, v in batch.items()}
    torch.testing.assert_close(plan.losses(keep)["pc_mse"], losses["pc_mse"])
    without = PretrainPlan(CellWeaveModule(config))
    assert "pc_mse" not in without.losses(batch) and without.pc_maps is None


def test_pretrain_with_principal_component_targets_records_them_and_refuses_a_negative_count(tiny_arch, 
        two_datasets, tmp_path) -> None:
    model = pretrain(two_datasets, out=tmp_path / "m", max_epochs=2, batch_size=32, seed=0,
                     pc_targets=4, progress=False, config_overrides={**tiny_arch, "value_encoding": "log1p"})
    assert model.card["objective"]["pc_targets"] == 4 and "4 principal components" in model.card["description"]
    # The history keeps each epoch's training terms beside the validation losses: the term seen
    # only in training (validation cells carry no targets) is in the record.
    epochs = [h for h in model.history if h["epoch"] >= 1]
    assert [h["epoch"] for h in epochs] == [1, 2]
    assert all(h["train_pc_mse"] > 0 and h["train_token_mse"] > 0 and "val_loss" in h for h in epochs)
    assert not any(k.endswith(("_step", "_epoch")) for h in epochs for k in h)
    with pytest.raises(CellWeaveInputError, match="components"):
        pretrain(two_datasets, out=tmp_path / "n", pc_targets=-1, config_overrides=tiny_arch, progress=False)
    with pytest.raises(CellWeaveInputError, match="pc_weight"):
        pretrain(two_datasets, out=tmp_path / "n", pc_targets=2, pc_weight=-1.0, config_overrides=tiny_arch,
                 progress=False)
    assert not (tmp_path / "n").exists()


def test_cell_labels_take_the_first_key_present_and_mark_missing_labels(two_datasets) -> None:
    a = two_datasets["a"].copy()
    a.obs["zone"] = "z1"  # one class: nothing to tell apart
    assert cell_labels(a, ["zone"]) is None
    assert cell_labels(a, ["absent"]) is None
    a.obs.loc[a.obs_names[:7], "cell_type"] = None
    codes, classes, key = cell_labels(a, ["absent", "cell_type", "zone"])
    assert key == "cell_type" and len(codes) == a.n_obs
    assert (codes[:7] == -1).all() and (codes[7:] >= 0).all()
    np.testing.assert_array_equal(np.asarray(classes)[codes[7:]], a.obs["cell_type"].to_numpy()[7:].astype(str))


def _labelled_batch(*, codes: list[int], labels: list[int], n_tokens: int = 10) -> dict[str, torch.Tensor]:
    """A batch of random tokens of a 40-gene vocabulary, the cells' dataset codes and labels (-1: none)."""
    g = torch.Generator().manual_seed(0)
    b = len(codes)
    return {"token_ids": torch.randint(1, 40, (b, n_tokens), generator=g),
            "values": torch.rand(b, n_tokens, generator=g), "modality_ids": torch.zeros(b, n_tokens, dtype=torch.long),
            "padding_mask": torch.ones(b, n_tokens, dtype=torch.bool),
            "value_mask": torch.rand(b, n_tokens, generator=g) < 0.3, "batch": torch.tensor(codes),
            "label": torch.tensor(labels)}


def _fit_label_term(plan: PretrainPlan, batch: dict[str, torch.Tensor], *, steps: int) -> float:
    """The label term's loss on ``batch`` after ``steps`` Adam steps on it alone."""
    opt = torch.optim.Adam(plan.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        plan.losses(batch)["label_ce"].backward()
        opt.step()
    return float(plan.losses(batch)["label_ce"])


def test_label_term_trains_a_classifier_per_dataset_over_its_own_classes(tiny_arch) -> None:
    config = CellWeaveConfig.from_preset("tiny", vocab_size=40, **tiny_arch)
    plan = PretrainPlan(CellWeaveModule(config), label_classes=[3, 0, 2])
    batch = _labelled_batch(codes=[0, 0, 2, 2, 1, 0], labels=[2, 0, 1, 0, -1, -1])
    losses = plan.losses(batch)
    # Dataset 2 has two classes, so its cells' loss is at most log 2 for a classifier at chance:
    # the third slot never gets probability.
    assert torch.isfinite(losses["label_ce"]) and 0 < losses["label_ce"] < np.log(3) + 0.5
    losses["loss"].backward()
    grad = plan.label_maps.grad
    assert grad[0].abs().sum() > 0 and grad[2, :2].abs().sum() > 0
    assert grad[1].abs().sum() == 0 and grad[2, 2].abs().sum() == 0  # unlabelled dataset, missing class slot
    # Cells without a label add nothing.
    keep = {k: v[:4] for k, v in batch.items()}
    torch.testing.assert_close(plan.losses(keep)["label_ce"], losses["label_ce"])
    # A few steps on these labels alone fit them: the cell state can carry the class.
    assert _fit_label_term(plan, keep, steps=60) < 0.1
    assert "label_ce" not in PretrainPlan(CellWeaveModule(config)).losses(batch)


def test_cosine_label_term_reads_only_the_direction_of_the_cell_state(tiny_arch) -> None:
    config = CellWeaveConfig.from_preset("tiny", vocab_size=40, **tiny_arch)
    plan = PretrainPlan(CellWeaveModule(config), label_classes=[3, 2], label_cosine=True)
    batch = _labelled_batch(codes=[0, 0, 0, 1, 1, 1], labels=[0, 1, 2, 0, 1, 0])
    losses = plan.losses(batch)
    # Logits are bounded by the scale: each cell's loss is at least log(1 + (C - 1) e^(-2 s)) and at most
    # log(1 + (C - 1) e^(2 s)).
    assert torch.isfinite(losses["label_ce"]) and 0 < losses["label_ce"] < 2 * LABEL_COSINE_SCALE + np.log(3)
    losses["loss"].backward()
    assert plan.label_maps.grad.abs().sum() > 0
    assert plan.label_bias.grad is None  # no bias: only directions
    # Scaling a proxy changes nothing: the logits are cosines.
    before = plan.losses(batch)["label_ce"].detach()
    with torch.no_grad():
        plan.label_maps[0, 1] *= 7.0
    torch.testing.assert_close(plan.losses(batch)["label_ce"].detach(), before)
    assert _fit_label_term(plan, batch, steps=80) < 0.1


def test_pretrain_with_labels_records_them_and_refuses_labels_nowhere(tiny_arch, two_datasets, tmp_path) -> None:
    data = {"a": two_datasets["a"], "b": two_datasets["b"].copy()}
    del data["b"].obs["cell_type"]
    model = pretrain(data, out=tmp_path / "m", max_epochs=2, batch_size=32, seed=0, label_keys=["cell_type"],
                     label_weight=0.5, progress=False, config_overrides=tiny_arch)
    objective = model.card["objective"]
    assert objective["label_keys"] == ["cell_type"] and objective["label_weight"] == 0.5
    assert list(objective["labelled_datasets"]) == ["a"]
    assert objective["labelled_datasets"]["a"]["classes"] == data["a"].obs["cell_type"].nunique()
    assert "linear classifier per dataset" in model.card["description"]
    assert objective["label_loss"] == "linear"
    epochs = [h for h in model.history if h["epoch"] >= 1]
    assert all(h["train_label_ce"] > 0 for h in epochs)
    with pytest.raises(CellWeaveInputError, match="no dataset has one of these obs columns"):
        pretrain(data, out=tmp_path / "n", label_keys=["tissue"], config_overrides=tiny_arch, progress=False)
    with pytest.raises(CellWeaveInputError, match="label_loss='triplet'"):
        pretrain(data, out=tmp_path / "n", label_keys=["cell_type"], label_loss="triplet", config_overrides=tiny_arch,
                 progress=False)
    with pytest.raises(CellWeaveInputError, match="label_weight"):
        pretrain(data, out=tmp_path / "n", label_keys=["cell_type"], label_weight=-1.0, config_overrides=tiny_arch,
                 progress=False)
    assert not (tmp_path / "n").exists()


def test_last_checkpoint_is_the_latest_epoch_when_validation_gets_worse(
    tiny_arch, two_datasets, tmp_path, monkeypatch,
) -> None:
    # A validation loss that rises every epoch: the best checkpoint stays at the first epoch, and
    # last.ckpt (what --resume reads) must still be the end of the run, not the best epoch.
    from cellweave.train._plan import PretrainPlan

    monkeypatch.setattr(PretrainPlan, "on_validation_epoch_end",
                        lambda self: self.log("val_loss", float(self.current_epoch)))
    out = tmp_path / "m"
    model = pretrain(two_datasets, out=out, max_epochs=3, batch_size=32, seed=0, progress=False,
                     config_overrides=tiny_arch)
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["epoch"] == 2 and last["global_step"] == model.card["steps"] > 0
    best = torch.load(out / "checkpoints" / "epoch000.ckpt", weights_only=True, map_location="cpu")
    assert best["global_step"] < last["global_step"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]


def _count_batch(n_cells: int = 8, n_tokens: int = 10, n_genes: int = 12) -> dict[str, torch.Tensor]:
    """A batch of random tokens of a 40-gene vocabulary with raw counts of ``n_genes`` decoded genes."""
    batch = _labelled_batch(codes=[0] * (n_cells // 2) + [1] * (n_cells - n_cells // 2), labels=[-1] * n_cells,
                            n_tokens=n_tokens)
    del batch["label"]
    batch["counts"] = torch.poisson(torch.full((n_cells, n_genes), 3.0), generator=torch.Generator().manual_seed(1))
    return batch


def test_count_latent_is_a_variational_bottleneck_read_off_the_visible_tokens(tiny_arch) -> None:
    config = CellWeaveConfig.from_preset("tiny", vocab_size=40, **tiny_arch, readout_latent=3)
    module = CellWeaveModule(config)
    plan = PretrainPlan(module, CountDecoder(3, 12, n_batches=2))
    batch = _count_batch()
    losses = plan.losses(batch)
    assert losses["count_kl"] > 0 and torch.isfinite(losses["count_nll"])
    # The loss is the per-gene negative ELBO: likelihood plus KL divided by the decoded genes (12).
    kl_cells = plan._latent(plan.module(batch["token_ids"], batch["values"], batch["modality_ids"],
                                        batch["padding_mask"], batch["value_mask"]), batch)[1]
    torch.testing.assert_close(losses["count_kl"], (kl_cells / 12).mean(), rtol=1e-4, atol=1e-6)
    losses["loss"].backward()
    assert module.readout.net[0].weight.grad.abs().sum() > 0  # the readout trains with the encoder
    assert module.blocks[0].ln1.weight.grad.abs().sum() > 0  # and reaches the transformer through it
    # Training samples the latent; outside training the decoder reads its mean, so losses repeat exactly.
    plan.eval()
    torch.testing.assert_close(plan.losses(batch)["count_nll"], plan.losses(batch)["count_nll"])
    plan.train()
    torch.manual_seed(0)
    a = plan.losses(batch)["count_nll"]
    torch.manual_seed(1)
    assert not torch.allclose(a, plan.losses(batch)["count_nll"])
    # The posterior reads visible tokens only: changing a hidden (masked) value leaves it unchanged.
    changed = {**batch, "values": batch["values"].clone()}
    changed["values"][batch["value_mask"]] += 5.0
    plan.eval()
    out = plan.module(batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"],
                      batch["value_mask"])
    out2 = plan.module(changed["token_ids"], changed["values"], changed["modality_ids"], changed["padding_mask"],
                       changed["value_mask"])
    torch.testing.assert_close(plan._latent(out, batch)[0], plan._latent(out2, changed)[0])
    # Without a readout the decoder reads the cell state and there is no KL term.
    plain = PretrainPlan(CellWeaveModule(CellWeaveConfig.from_preset("tiny", vocab_size=40, **tiny_arch)),
                         CountDecoder(16, 12, n_batches=2))
    assert "count_kl" not in plain.losses(batch)


def test_pretrain_with_a_count_latent_embeds_through_it_and_refuses_it_alone(tiny_arch, two_datasets, tmp_path) -> None:
    model = pretrain(two_datasets, out=tmp_path / "m", max_epochs=2, batch_size=32, seed=0, count_likelihood=True,
                     n_decoded_genes=40, count_latent=4, progress=False,
                     config_overrides={**tiny_arch, "value_encoding": "log1p"})
    assert model.card["objective"]["count_latent"] == 4 and "4-dimensional Gaussian latent" in model.card["description"]
    epochs = [h for h in model.history if h["epoch"] >= 1]
    assert all(h["train_count_kl"] > 0 for h in epochs)
    # The saved model embeds cells as the latent's posterior mean, and keeps it when loaded again.
    emb = model.embed(two_datasets["a"], progress=False)[0]
    assert emb.shape == (120, 4) and np.isfinite(emb).all()
    from cellweave.models import CellWeave

    again = CellWeave.load(tmp_path / "m")
    assert again.config.readout_latent == 4
    np.testing.assert_allclose(again.embed(two_datasets["a"], progress=False)[0], emb, rtol=1e-4, atol=1e-5)
    for bad, match in ((dict(count_latent=4), "count_likelihood"),
                       (dict(count_latent=-1, count_likelihood=True), "count_latent=-1")):
        with pytest.raises(CellWeaveInputError, match=match):
            pretrain(two_datasets, out=tmp_path / "n", progress=False,
                     config_overrides={**tiny_arch, "value_encoding": "log1p"}, **bad)
    assert not (tmp_path / "n").exists()


def test_count_latent_without_rna_counts_keeps_no_untrained_readout(tiny_arch, two_datasets, tmp_path, caplog) -> None:
    """With no RNA counts nothing trains the bottleneck, so the model must not embed through a random readout."""
    lognorm = {}
    for name, adata in two_datasets.items():
        x = adata.copy()
        dense = x.X.toarray() if hasattr(x.X, "toarray") else np.asarray(x.X)
        x.X = np.log1p(dense / np.maximum(dense.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
        x.uns["x_kind"] = "log_normalized"
        lognorm[name] = x
    with caplog.at_level("WARNING", logger="cellweave"):
        model = pretrain(lognorm, out=tmp_path / "m", max_epochs=1, batch_size=32, seed=0, count_likelihood=True,
                         n_decoded_genes=40, count_latent=4, progress=False,
                         config_overrides={**tiny_arch, "value_encoding": "log1p"})
    assert "No latent bottleneck either" in caplog.text
    assert model.config.readout_latent == 0 and not hasattr(model.module, "readout")
    assert model.card["objective"]["count_latent"] == 0
    emb = model.embed(lognorm["a"], progress=False)[0]
    assert emb.shape == (120, model.module.embedding_dim) and model.module.embedding_dim != 4
