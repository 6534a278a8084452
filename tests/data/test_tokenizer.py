"""Corpus preparation and tokenization on synthetic and real data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellweave.data import TokenDataset, Tokenizer, build_vocabulary, collate_tokens, prepare_cells, synthetic_mudata


def test_prepare_normalizes_counts(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    corpus = prepare_cells(adata, vocab, dataset="syn")
    block = corpus.blocks[0]
    assert block.modality == "rna" and block.x_kind == "counts"
    # log1p(counts per 10k): expm1 of a row sums to 1e4 when every gene is in the vocabulary.
    covered = corpus.coverage[0]["n_in_vocab"] == adata.n_vars
    row = np.expm1(block.values[0].toarray()).sum()
    if covered:
        assert row == pytest.approx(1e4, rel=1e-3)
    assert len(corpus) == adata.n_obs
    assert corpus.coverage[0]["n_features"] == adata.n_vars


def test_tokenizer_respects_budget_and_zero_share(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    corpus = prepare_cells(adata, vocab)
    tok = Tokenizer({"rna": 40}, zero_fraction=0.25, mask_ratio=0.3)
    rng = np.random.default_rng(0)
    for i in range(20):
        ids, vals, mods = tok.tokenize(corpus, i, rng)
        assert ids.size <= 40
        assert len(set(ids.tolist())) == ids.size  # no feature twice
        assert (mods == tok.modality_ids["rna"]).all()
        n_nonzero_cell = corpus.blocks[0].values[i].nnz
        n_zero_tokens = int((vals == 0).sum())
        if n_nonzero_cell >= 40:
            assert n_zero_tokens == 10  # 25% of the budget goes to measured zeros
        # Every nonzero token carries the cell's true value for that feature.
        row = dict(zip(corpus.blocks[0].token_ids[corpus.blocks[0].values[i].indices], corpus.blocks[0].values[i].data))
        for t, v in zip(ids, vals):
            assert row.get(t, 0.0) == pytest.approx(v)


def test_eval_mode_is_deterministic_and_train_mode_is_not(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    corpus = prepare_cells(adata, vocab)
    tok = Tokenizer({"rna": 30}, 0.1, 0.3)
    a = TokenDataset([corpus], tok, mode="eval", seed=3)[5]
    b = TokenDataset([corpus], tok, mode="eval", seed=3)[5]
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    np.testing.assert_array_equal(a["value_mask"], b["value_mask"])
    train = TokenDataset([corpus], tok, mode="train", seed=3)
    # Training draws change with the epoch (and the view) but are a function of (seed, epoch, cell,
    # view), so a resumed run draws what an uninterrupted one would.
    draws = set()
    for epoch in range(5):
        train.set_epoch(epoch)
        draws.add(tuple(train[5]["token_ids"].tolist()))
    assert len(draws) > 1
    again = TokenDataset([corpus], tok, mode="train", seed=3)
    again.set_epoch(4)
    np.testing.assert_array_equal(again[5]["value_mask"], train[5]["value_mask"])
    assert not np.array_equal(train.item(5, view=1)["value_mask"], train[5]["value_mask"]) or \
        tuple(train.item(5, view=1)["token_ids"].tolist()) != tuple(train[5]["token_ids"].tolist())


def test_mask_ratio_and_collate(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    corpus = prepare_cells(adata, vocab)
    ds = TokenDataset([corpus], Tokenizer({"rna": 50}, 0.1, 0.3), mode="train", seed=0)
    batch = collate_tokens([ds[i] for i in range(8)])
    n_real = batch["padding_mask"].sum(1)
    n_masked = batch["value_mask"].sum(1)
    assert ((n_masked.float() / n_real.float() - 0.3).abs() < 0.05).all()
    assert not (batch["value_mask"] & ~batch["padding_mask"]).any()  # never mask padding
    assert batch["token_ids"].shape == batch["values"].shape == batch["modality_ids"].shape


def test_multimodal_with_missing_cells() -> None:
    mdata = synthetic_mudata(n_cells=60, modalities=("rna", "prot", "atac"), seed=1, missing={"prot": 0.5})
    vocab, _ = build_vocabulary({"m": mdata}, min_cells=1)
    corpus = prepare_cells(mdata, vocab, dataset="m")
    assert sorted(corpus.modalities) == ["atac", "prot", "rna"]
    prot = next(b for b in corpus.blocks if b.modality == "prot")
    assert 0 < prot.present.sum() < len(corpus)
    tok = Tokenizer({"rna": 32, "prot": 8, "atac": 16}, 0.1, 0.3)
    rng = np.random.default_rng(0)
    for i in range(len(corpus)):
        _, _, mods = tok.tokenize(corpus, i, rng)
        assert (tok.modality_ids["prot"] in mods) == bool(prot.present[i])


def test_duplicate_features_are_summed_not_dropped(tiny_vocab_and_data) -> None:
    import anndata as ad

    vocab, adata = tiny_vocab_and_data
    a = adata[:, :10].copy()
    b = ad.concat([a[:, :5], a[:, :5]], axis=1, merge="first")
    b.var_names = [f"copy{i}" for i in range(10)]
    b.var["gene_id"] = list(a.var["gene_id"][:5]) * 2
    b.X = sp.csr_matrix(b.X)
    corpus = prepare_cells(b, vocab)
    assert corpus.blocks[0].values.shape[1] == 5


def test_top_values_are_kept_and_targets_lie_outside_the_input(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    corpus = prepare_cells(adata, vocab)
    block = corpus.blocks[0]
    tok = Tokenizer({"rna": 20}, zero_fraction=0.0, mask_ratio=0.3)
    rng = np.random.default_rng(0)
    for i in range(10):
        ids, vals, _, t_ids, t_vals, _ = tok.tokenize(corpus, i, rng, n_targets=16)
        row = block.values[i]
        if row.nnz > 20:
            # Inference keeps the cell's 20 highest values (ties broken at random).
            assert vals.min() >= np.sort(row.data)[-20] - 1e-6
        assert not set(ids.tolist()) & set(t_ids.tolist())
        truth = dict(zip(block.token_ids[row.indices], row.data))
        np.testing.assert_allclose(t_vals, [truth.get(t, 0.0) for t in t_ids], rtol=1e-6)
        assert 0 < t_ids.size <= 16


def test_within_cell_quantiles_in_blocks_equal_one_pass() -> None:
    """Ranking rows in blocks of a few values (bounded memory) gives the one-pass quantiles."""
    from cellweave.data._corpus import within_cell_quantiles

    rng = np.random.default_rng(0)
    X = sp.random(60, 40, density=0.3, format="csr", random_state=1, dtype=np.float32)
    X.data = rng.integers(1, 4, X.data.size).astype(np.float32)  # many ties
    X[5:9] = 0  # empty rows inside a block
    X.eliminate_zeros()
    whole = within_cell_quantiles(X, block_values=10**9)
    for block in (1, 7, 50):  # smaller than a row, a few rows
        np.testing.assert_array_equal(within_cell_quantiles(X, block_values=block), whole)
    assert whole.min() > 0 and whole.max() == 1.0


def test_quantile_encoding_ignores_how_the_input_was_normalized(tiny_vocab_and_data) -> None:
    from cellweave.data._corpus import within_cell_quantiles

    X = sp.csr_matrix(np.array([[0, 1, 1, 3, 0], [2, 0, 0, 0, 0], [5, 4, 1, 1, 1]], dtype=np.float32))
    np.testing.assert_allclose(within_cell_quantiles(X), [0.5, 0.5, 1.0, 1.0, 1.0, 0.8, 0.4, 0.4, 0.4])

    vocab, adata = tiny_vocab_and_data
    # The same cells given as log-normalized values (target sum 1e6, not 1e4): a monotone
    # transform of each cell, so the quantiles must not change; log1p values would.
    import scanpy as sc

    lognorm = adata.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e6)
    sc.pp.log1p(lognorm)
    a = prepare_cells(adata, vocab, value_encoding="quantile").blocks[0].values
    with pytest.warns(UserWarning, match="log-normalized"):
        b = prepare_cells(lognorm, vocab, value_encoding="quantile").blocks[0].values
    assert not np.allclose(prepare_cells(adata, vocab).blocks[0].values.data, b.data)
    np.testing.assert_allclose(a.toarray(), b.toarray(), rtol=1e-6)
    assert a.data.min() > 0 and a.data.max() <= 1
    with pytest.raises(ValueError, match="value_encoding"):
        prepare_cells(adata, vocab, value_encoding="bins")


def _housekeeping_corpus(n_cells: int):
    """Gene 0 is high in every cell (5); cell i's marker, gene 1 + i % 5, is 3; the rest are 1.
    Cells from ``n_cells`` on are marked as not measured."""
    import pandas as pd

    from cellweave.data import CellCorpus, ModalityBlock

    n = n_cells + 2
    X = np.ones((n, 6), dtype=np.float32)
    X[:, 0] = 5.0
    X[np.arange(n), 1 + np.arange(n) % 5] = 3.0
    present = np.arange(n) < n_cells
    X[~present] = 0.0
    block = ModalityBlock("rna", sp.csr_matrix(X), np.arange(10, 16), present, "counts")
    return CellCorpus([block], pd.DataFrame(index=[f"c{i}" for i in range(n)]))


def test_deviation_selection_keeps_what_sets_a_cell_apart() -> None:
    from cellweave.data import feature_means

    corpus = _housekeeping_corpus(30)
    by_value = Tokenizer({"rna": 1}, zero_fraction=0.0)
    by_deviation = Tokenizer({"rna": 1}, zero_fraction=0.0, selection="deviation")
    rng = np.random.default_rng(0)
    for i in range(30):
        ids, vals, _ = by_value.tokenize(corpus, i, rng)
        assert ids.tolist() == [10] and vals.tolist() == [5.0]
        ids, vals, _ = by_deviation.tokenize(corpus, i, rng)
        # The marker, with its value unchanged (selection does not alter values).
        assert ids.tolist() == [11 + i % 5] and vals.tolist() == [3.0]
    # Means are over the measured cells only (the two unmeasured rows are left out).
    X = corpus.blocks[0].values.toarray()[:30]
    np.testing.assert_allclose(feature_means(corpus.blocks[0]), X.mean(axis=0), rtol=1e-6)


def test_deviation_selection_falls_back_to_value_on_too_few_cells(caplog) -> None:
    corpus = _housekeeping_corpus(5)
    tok = Tokenizer({"rna": 1}, zero_fraction=0.0, selection="deviation")
    with caplog.at_level("WARNING", logger="cellweave.data._tokenize"):
        ids, _, _ = tok.tokenize(corpus, 0, np.random.default_rng(0))
    assert ids.tolist() == [10]
    assert "too few for gene means" in caplog.text


def test_token_selection_comes_from_the_config_and_is_checked() -> None:
    from cellweave.nn import CellWeaveConfig

    config = CellWeaveConfig.from_preset("tiny", vocab_size=20, token_selection="deviation")
    assert Tokenizer.from_config(config).selection == "deviation"
    assert Tokenizer.from_config(CellWeaveConfig.from_preset("tiny", vocab_size=20)).selection == "value"
    with pytest.raises(ValueError, match="token_selection"):
        CellWeaveConfig.from_preset("tiny", vocab_size=20, token_selection="median")
    with pytest.raises(ValueError, match="selection"):
        Tokenizer({"rna": 1}, selection="median")


def _variable_corpus(n_cells: int = 100):
    """Log-normalized Poisson counts of 200 genes: 190 with one mean in every cell (log-uniform over
    0.1-20) and 10 markers, two per group of cells, at 3-72 in their group (spread over the mean
    bins Seurat's dispersion is normalized in) and 0.05 elsewhere."""
    import pandas as pd

    from cellweave.data import log_normalize
    from cellweave.data._corpus import CellCorpus, ModalityBlock

    rng = np.random.default_rng(0)
    mean = np.tile(np.exp(rng.uniform(np.log(0.1), np.log(20), 200)), (n_cells, 1))
    group = np.arange(n_cells) % 5
    for g in range(5):
        for j, level in enumerate((3.0 * 2**g, 4.5 * 2**g)):
            mean[:, 190 + 2 * g + j] = np.where(group == g, level, 0.05)
    X = log_normalize(sp.csr_matrix(rng.poisson(mean).astype(np.float32)))
    block = ModalityBlock("rna", X, np.arange(1000, 1200), np.ones(n_cells, bool), "counts")
    return CellCorpus([block], pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]))


def test_hvg_tokens_come_from_the_most_variable_genes_only() -> None:
    from cellweave.data import variable_columns

    corpus = _variable_corpus()
    block = corpus.blocks[0]
    hv = variable_columns(block, 12)
    assert hv.size == 12 and np.all(np.diff(hv) > 0)
    assert set(range(190, 200)) <= set(hv.tolist())  # Seurat's pick holds the markers
    markers = set((1000 + hv).tolist())
    tok = Tokenizer({"rna": 8}, zero_fraction=0.5, hvg_tokens=12)
    everything = Tokenizer({"rna": 8}, zero_fraction=0.5)
    rng = np.random.default_rng(0)
    for i in range(20):
        ids, vals, _ = tok.tokenize(corpus, i, rng)
        assert set(ids.tolist()) <= markers, ids  # measured and zero tokens alike
        assert len(set(ids.tolist())) == ids.size
        row = block.values[i].toarray().ravel()
        assert all(row[t - 1000] == v for t, v in zip(ids, vals))  # true values, zeros included
        g = i % 5  # the cell's own two markers are among its tokens
        assert {1190 + 2 * g, 1191 + 2 * g} <= {int(t) for t, v in zip(ids, vals) if v > 0}
        assert (vals == 0).sum() == 4
        # Without the option the other genes fill the context.
        ids_all, _, _ = everything.tokenize(corpus, i, rng)
        assert not set(ids_all.tolist()) <= markers
    # As many HVGs as columns, or more: every column, as without the option.
    assert variable_columns(block, 200) is None and variable_columns(block, 500) is None


def test_hvg_tokens_fall_back_to_all_genes_on_too_few_cells_and_come_from_the_config(caplog) -> None:
    from cellweave.data import variable_columns
    from cellweave.nn import CellWeaveConfig

    corpus = _variable_corpus(10)  # fewer cells than needed to rank genes
    with caplog.at_level("WARNING", logger="cellweave.data._tokenize"):
        assert variable_columns(corpus.blocks[0], 10) is None
    assert "too few to rank its features" in caplog.text
    config = CellWeaveConfig.from_preset("tiny", vocab_size=200, hvg_tokens=1500)
    assert Tokenizer.from_config(config).hvg_tokens == 1500
    assert Tokenizer.from_config(CellWeaveConfig.from_preset("tiny", vocab_size=20)).hvg_tokens == 0
    with pytest.raises(ValueError, match="hvg_tokens"):
        CellWeaveConfig.from_preset("tiny", vocab_size=20, hvg_tokens=-1)
    with pytest.raises(ValueError, match="hvg_tokens"):
        Tokenizer({"rna": 1}, hvg_tokens=-5)


def _program_corpus(n_cells: int = 300):
    """Log-normalized Poisson counts of 200 genes: 4 programmes of 30 genes, each driven by its own
    log-normal factor per cell, and 80 genes at a fixed mean in every cell."""
    import pandas as pd

    from cellweave.data import log_normalize
    from cellweave.data._corpus import CellCorpus, ModalityBlock

    rng = np.random.default_rng(0)
    mean = np.full((n_cells, 200), 2.0)
    for p in range(4):
        factor = np.exp(rng.normal(0, 1.2, n_cells))
        mean[:, 30 * p: 30 * (p + 1)] = 2.0 * factor[:, None]
    X = log_normalize(sp.csr_matrix(rng.poisson(mean).astype(np.float32)))
    ids = np.arange(1000, 1200)[::-1].copy()  # vocabulary ids in another order than the columns
    block = ModalityBlock("rna", X, ids, np.ones(n_cells, bool), "counts")
    return CellCorpus([block], pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]))


def test_feature_modules_group_coexpressed_genes() -> None:
    from cellweave.data import feature_modules

    corpus = _program_corpus()
    ids, modules = feature_modules(corpus.blocks[0])
    assert np.all(np.diff(ids) > 0)
    col = 1199 - ids  # column of each sorted id
    programme = np.where(col < 120, col // 30, -1)
    assert (modules[programme >= 0] >= 0).mean() > 0.9  # programme genes are in modules
    same_module = (modules[:, None] == modules[None, :]) & (modules[:, None] >= 0)
    same_prog = (programme[:, None] == programme[None, :]) & (programme[:, None] >= 0)
    off_diag = ~np.eye(ids.size, dtype=bool)
    in_prog = same_module[same_prog & off_diag].mean()
    across = same_module[(programme[:, None] >= 0) & (programme[None, :] >= 0) & ~same_prog].mean()
    assert in_prog > 0.3 and across < 0.02, (in_prog, across)
    assert feature_modules(corpus.blocks[0]) is corpus.blocks[0].feature_modules  # computed once


def test_module_masking_hides_groups_together_at_the_exact_ratio() -> None:
    tok = Tokenizer({"rna": 40}, mask_ratio=0.5, mask_grouping="modules")
    groups = np.array([0] * 8 + [1] * 8 + [2] * 8 + [-1] * 16)
    for seed in range(20):
        m = tok.mask(groups.size, np.random.default_rng(seed), groups)
        assert m.sum() == 20
        partial = [g for g in (0, 1, 2) if 0 < m[groups == g].sum() < 8]
        assert len(partial) <= 1  # only the last group taken is cut to keep the share exact
    # Without groups the draw is the plain one of earlier models, bit for bit.
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    expected = np.zeros(40, bool)
    expected[rng_b.choice(40, size=20, replace=False)] = True
    np.testing.assert_array_equal(tok.mask(40, rng_a), expected)
    with pytest.raises(ValueError, match="mask_grouping"):
        Tokenizer({"rna": 1}, mask_grouping="genes")


def test_module_masking_in_training_items_and_from_the_config() -> None:
    from cellweave.nn import CellWeaveConfig

    config = CellWeaveConfig.from_preset("tiny", vocab_size=20, mask_grouping="modules", mask_ratio=0.4)
    assert Tokenizer.from_config(config).mask_grouping == "modules"
    with pytest.raises(ValueError, match="mask_grouping"):
        CellWeaveConfig.from_preset("tiny", vocab_size=20, mask_grouping="genes")
    corpus = _program_corpus()
    tok = Tokenizer({"rna": 60}, zero_fraction=0.0, mask_ratio=0.4, mask_grouping="modules")
    ds = TokenDataset([corpus], tok, mode="train", seed=0)
    n_partial = []
    for i in range(30):
        item = ds.item(i)
        mask = item["value_mask"]
        assert mask.sum() == round(0.4 * mask.size)
        groups = tok.token_groups(corpus, item["token_ids"], item["modality_ids"])
        assert (groups >= 0).mean() > 0.5
        n_partial.append(sum(0 < mask[groups == g].sum() < (groups == g).sum() for g in np.unique(groups[groups >= 0])))
    assert max(n_partial) <= 1


def _absent_corpus(n_cells: int = 40):
    """Genes 0-3 measured in every cell; genes 4-11 absent from cells of group i % 2 == 0 and
    present (at decreasing means: gene 4 highest) in the others; cells of the first group thus
    have 8 absent genes, ranked by mean."""
    import pandas as pd

    from cellweave.data import CellCorpus, ModalityBlock

    X = np.zeros((n_cells, 12), dtype=np.float32)
    X[:, :4] = 2.0
    odd = np.arange(n_cells) % 2 == 1
    X[np.ix_(odd, np.arange(4, 12))] = np.linspace(8.0, 1.0, 8)
    block = ModalityBlock("rna", sp.csr_matrix(X), np.arange(100, 112), np.ones(n_cells, bool), "counts")
    return CellCorpus([block], pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]))


@pytest.mark.parametrize("rule", ["random", "deviation", "none"])
def test_embed_zeros_rule_applies_to_embedding_only(rule: str) -> None:
    corpus = _absent_corpus()
    tok = Tokenizer({"rna": 10}, zero_fraction=0.3, embed_zeros=rule)  # 3 zero tokens
    embedded = TokenDataset([corpus], tok, mode="embed", seed=0)
    zeros_by_seed = []
    for seed in range(6):
        embedded.seed = seed
        item = embedded[0]
        assert sorted(item["token_ids"][item["values"] > 0].tolist()) == [100, 101, 102, 103]
        zeros_by_seed.append(sorted(item["token_ids"][item["values"] == 0].tolist()))
    if rule == "none":
        assert zeros_by_seed == [[]] * 6
    elif rule == "deviation":  # the absent genes with the highest means, whatever the seed
        assert zeros_by_seed == [[104, 105, 106]] * 6
    else:  # a seeded draw of the absent genes: another seed, other genes
        assert all(len(z) == 3 and set(z) <= set(range(104, 112)) for z in zeros_by_seed)
        assert len({tuple(z) for z in zeros_by_seed}) > 1
    # Training keeps drawing zeros at random, whatever the rule.
    train = TokenDataset([corpus], tok, mode="train", seed=0)
    items = [train.item(0, view=v) for v in range(8)]
    draws = {tuple(sorted(it["token_ids"][it["values"] == 0].tolist())) for it in items}
    assert all(len(d) == 3 for d in draws) and len(draws) > 1


def test_embed_zeros_comes_from_the_config_and_is_checked() -> None:
    from cellweave.nn import CellWeaveConfig

    assert Tokenizer.from_config(CellWeaveConfig.from_preset("tiny", vocab_size=20)).embed_zeros == "random"
    config = CellWeaveConfig.from_preset("tiny", vocab_size=20, embed_zeros="none")
    assert Tokenizer.from_config(config).embed_zeros == "none"
    with pytest.raises(ValueError, match="embed_zeros"):
        CellWeaveConfig.from_preset("tiny", vocab_size=20, embed_zeros="all")
    with pytest.raises(ValueError, match="embed_zeros"):
        Tokenizer({"rna": 1}, embed_zeros="all")


def test_adopt_token_space_takes_the_reference_hvgs_and_means_by_feature_id() -> None:
    import pandas as pd

    from cellweave.data import CellCorpus, ModalityBlock, adopt_token_space, feature_means, variable_columns

    reference = _variable_corpus()  # ids 1000-1199; markers 1190-1199 are its most variable
    ref_block = reference.blocks[0]
    ref_hvg_ids = set(ref_block.token_ids[variable_columns(ref_block, 12)].tolist())
    # A query over other columns, in another order: ids 1100-1199 reversed, plus 50 ids the reference lacks.
    rng = np.random.default_rng(1)
    ids = np.r_[np.arange(1199, 1099, -1), np.arange(5000, 5050)]
    X = sp.csr_matrix(rng.poisson(1.0, (60, ids.size)).astype(np.float32))
    block = ModalityBlock("rna", X, ids, np.ones(60, bool), "counts")
    query = CellCorpus([block], pd.DataFrame(index=[f"q{i}" for i in range(60)]))
    own_means = feature_means(block).copy()
    adopt_token_space(query, reference, hvg_tokens=12)
    allowed = block.variable_columns[12]
    # The reference's HVGs the query measures, found by id (not by column).
    assert set(block.token_ids[allowed].tolist()) == ref_hvg_ids & set(ids.tolist()) != set()
    ref_means = dict(zip(ref_block.token_ids.tolist(), feature_means(ref_block).tolist()))
    for col, fid in enumerate(ids.tolist()):
        expected = ref_means[fid] if fid in ref_means else own_means[col]
        assert block.feature_mean[col] == pytest.approx(expected)
    # The query's tokens now come from those columns only.
    tok = Tokenizer({"rna": 8}, zero_fraction=0.25, selection="deviation", hvg_tokens=12)
    for i in range(10):
        got, _, _ = tok.tokenize(query, i, np.random.default_rng(i))
        assert set(got.tolist()) <= ref_hvg_ids


def _counts_corpus():
    """One counts block of 6 cells x 40 genes, every gene measured with 1-20 counts, and the library
    sizes ``prepare_cells`` records (1.25 x the in-vocabulary counts: a fifth of the molecules fall
    on features outside the vocabulary)."""
    import pandas as pd

    from cellweave.data import CellCorpus, ModalityBlock

    counts = np.random.default_rng(0).integers(1, 21, size=(6, 40)).astype(np.float64)
    library = counts.sum(1) * 1.25
    values = np.log1p(counts / library[:, None] * 1e4).astype(np.float32)
    block = ModalityBlock("rna", sp.csr_matrix(values), np.arange(100, 140), np.ones(6, bool), "counts")
    obs = pd.DataFrame({"rna_library": library}, index=[f"c{i}" for i in range(6)])
    return CellCorpus([block], obs), counts, library


def test_thinned_values_are_binomial_counts_normalized_to_the_thinned_library() -> None:
    from cellweave.data._tokenize import _thinned

    _, counts, library = _counts_corpus()
    c, lib, f = counts[0], library[0], 0.3
    values = np.log1p(c / lib * 1e4).astype(np.float32)
    keep, thin = _thinned(values, lib, f, np.random.default_rng(0))
    x = np.expm1(thin.astype(np.float64))  # = k * 1e4 / L', L' = sum(k) + f * (molecules outside the columns)
    share = x.sum() / 1e4  # = K / L'
    outside = lib - c.sum()
    K = share * f * outside / (1 - share)
    k = x * (K / share) / 1e4
    assert np.allclose(k, np.rint(k), atol=1e-2) and (np.rint(k) >= 1).all() and (np.rint(k) <= c[keep]).all()
    assert 0.15 < K / c.sum() < 0.45  # about f of the molecules kept
    assert (~keep).any()  # some genes of 1-3 counts lose every molecule


def test_depth_augmentation_thins_training_cells_only() -> None:
    corpus, counts, library = _counts_corpus()
    thin = Tokenizer({"rna": 64}, zero_fraction=0.0, depth_augmentation=1.0)
    n_tokens = [thin.tokenize(corpus, 0, np.random.default_rng(seed), train=True)[0].size for seed in range(30)]
    assert min(n_tokens) < 20 and max(n_tokens) <= 40  # thinned to different depths, never deeper than the cell
    half = Tokenizer({"rna": 64}, zero_fraction=0.0, depth_augmentation=0.5)
    assert 5 < sum(half.tokenize(corpus, 0, np.random.default_rng(s), train=True)[0].size < 40 for s in range(30)) < 25
    # Without augmentation, or outside training, the cell is read as it is.
    row = dict(zip(corpus.blocks[0].token_ids, corpus.blocks[0].values[0].toarray().ravel()))
    for tok, train in ((Tokenizer({"rna": 64}, zero_fraction=0.0), True), (thin, False)):
        ids, vals, _ = tok.tokenize(corpus, 0, np.random.default_rng(3), train=train)
        assert ids.size == 40 and all(row[t] == pytest.approx(v) for t, v in zip(ids, vals))
    item = TokenDataset([corpus], thin, mode="embed", seed=0)[0]
    assert item["token_ids"].size == 40


def test_depth_augmentation_min_bounds_how_far_a_cell_is_thinned() -> None:
    corpus, _, _ = _counts_corpus()
    row = dict(zip(corpus.blocks[0].token_ids, corpus.blocks[0].values[0].toarray().ravel()))
    whole = Tokenizer({"rna": 64}, zero_fraction=0.0, depth_augmentation=1.0, depth_min=1.0)
    for seed in range(5):  # a share of 1 keeps every molecule: the cell as it is
        ids, vals, _ = whole.tokenize(corpus, 0, np.random.default_rng(seed), train=True)
        assert ids.size == 40 and all(row[t] == pytest.approx(v, rel=1e-5) for t, v in zip(ids, vals))
    half = Tokenizer({"rna": 64}, zero_fraction=0.0, depth_augmentation=1.0, depth_min=0.5)
    n_half = [half.tokenize(corpus, 0, np.random.default_rng(seed), train=True)[0].size for seed in range(30)]
    assert min(n_half) >= 30 and min(n_half) < 40  # thinned, but never below half the molecules
    with pytest.raises(ValueError, match="depth_min"):
        Tokenizer({"rna": 1}, depth_augmentation=0.5, depth_min=0.0)


def test_depth_augmentation_comes_from_the_config_and_needs_log1p_values() -> None:
    from cellweave.nn import CellWeaveConfig

    config = CellWeaveConfig.from_preset("tiny", vocab_size=20, value_encoding="log1p", depth_augmentation=0.5)
    assert Tokenizer.from_config(config).depth_augmentation == 0.5
    assert Tokenizer.from_config(config).depth_min == 0.05  # the default range, that of older models
    narrow = CellWeaveConfig.from_preset("tiny", vocab_size=20, value_encoding="log1p", depth_augmentation=0.5,
                                         depth_augmentation_min=0.3)
    assert Tokenizer.from_config(narrow).depth_min == 0.3
    with pytest.raises(ValueError, match="depth_augmentation_min"):
        CellWeaveConfig.from_preset("tiny", vocab_size=20, value_encoding="log1p", depth_augmentation_min=1.5)
    assert Tokenizer.from_config(CellWeaveConfig.from_preset("tiny", vocab_size=20)).depth_augmentation == 0.0
    with pytest.raises(ValueError, match="log1p"):
        CellWeaveConfig.from_preset("tiny", vocab_size=20, depth_augmentation=0.5)  # quantiles by default
    with pytest.raises(ValueError, match="depth_augmentation"):
        Tokenizer({"rna": 1}, depth_augmentation=1.5)
