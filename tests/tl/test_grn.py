"""tl.grn: the three model readings, the combination and the AnnData contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellweave._exceptions import CellWeaveInputError
from cellweave.tl._gene_utils import AttentionRecorder, prepare_rna, token_batches
from cellweave.tl._grn import (
    attention_scores,
    combine_scores,
    embedding_scores,
    perturbation_scores,
)



@pytest.fixture(scope="module")
def setup(tiny_vocab_and_data, tiny_rna_model):
    vocab, adata = tiny_vocab_and_data
    model = tiny_rna_model
    corpus, tok = prepare_rna(adata, model)
    return model, adata, corpus, tok


def test_embedding_scores_are_cosines(setup):
    model, _, _, tok = setup
    s = embedding_scores(model, tok[:5])
    w = model.module.feature_embedding.weight.detach().numpy()[tok[:5]]
    expected = w[1] @ w[3] / np.linalg.norm(w[1]) / np.linalg.norm(w[3])
    assert s[1, 3] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(s, s.T, atol=1e-6)
    assert np.all(np.diag(s) == 0)


def test_recomputed_attention_reproduces_the_block_output(setup):
    """The hook's attention maps, applied to the values, give SDPA's output: they are the real maps."""
    model, _, corpus, _ = setup
    batch = next(token_batches(model, corpus, np.arange(6), batch_size=6))
    attn = model.module.blocks[0].attn
    captured = {}

    def keep_io(mod, inputs, output):
        captured["x"], captured["mask"], captured["out"] = inputs[0], inputs[1], output

    h = attn.register_forward_hook(keep_io)
    with torch.no_grad(), AttentionRecorder(model.module) as rec:
        model.module.encode(batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"])
        maps = list(rec.maps)
    h.remove()
    x = captured["x"]
    b, n, d = x.shape
    heads = attn.n_heads
    q, k, v = attn.qkv(x).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2) / np.sqrt(d // heads)).masked_fill(~captured["mask"], float("-inf"))
    probs = scores.softmax(-1)
    y = attn.out((probs @ v).transpose(1, 2).reshape(b, n, d))
    torch.testing.assert_close(y, captured["out"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(maps[0], probs.mean(1))
    assert len(maps) == len(model.module.blocks)
    rows = maps[0].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_attention_and_perturbation_shapes_and_zeros(setup):
    model, _, corpus, tok = setup
    cells = np.arange(20)
    att = attention_scores(model, corpus, tok, cells)
    assert att.shape == (len(tok), len(tok)) and np.all(np.diag(att) == 0)
    assert att.max() > 0 and np.isfinite(att).all()
    # A gene no cell expresses: its row is zero (no cell to delete it from).
    expressed = np.asarray((corpus.blocks[0].values[cells] > 0).sum(0)).ravel()
    silent = int(np.flatnonzero(expressed == 0)[0]) if (expressed == 0).any() else None
    busy = int(np.argmax(expressed))
    sources = [busy] + ([silent] if silent is not None else [])
    signed = perturbation_scores(model, corpus, tok, sources, cells, signed=True)
    absolute = perturbation_scores(model, corpus, tok, sources, cells)
    np.testing.assert_allclose(absolute, np.abs(signed), atol=1e-7)
    assert signed[0, busy] == 0 and np.abs(signed[0]).max() > 0
    if silent is not None:
        assert np.all(signed[1] == 0)


def test_combine_scores_is_a_rank_mean():
    a = np.array([[0.1, 0.5, 0.9]])
    b = np.array([[30.0, 20.0, 10.0]])
    out = combine_scores([a, b])
    np.testing.assert_allclose(out, [[(1 / 3 + 1) / 2, 2 / 3, (1 + 1 / 3) / 2]], rtol=1e-6)


def test_grn_writes_varp_and_edges(setup):
    import cellweave

    model, adata, _, _ = setup
    data = adata[:40].copy()
    regs = list(map(str, data.var_names[:4]))
    cellweave.tl.grn(data, model=model, method="combined", regulators=regs, n_cells=20, n_top_targets=3,
                     progress=False)
    m = data.varp["cellweave_grn"]
    assert m.shape == (data.n_vars, data.n_vars)
    rows_used = np.flatnonzero(np.asarray(abs(m).sum(1)).ravel() > 0)
    assert set(data.var_names[rows_used]) <= set(regs)
    edges = data.uns["cellweave_grn"]["edges"]
    assert list(edges.columns) == ["source", "target", "score", "rank", "group"]
    assert set(edges["source"]) <= set(regs) and (edges["source"] != edges["target"]).all()
    assert edges.groupby("source")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    rec = data.uns["cellweave"]["cellweave_grn"]
    assert rec["model_sha256"] == model.model_hash and rec["method"] == "combined"


def test_grn_groupby_writes_one_matrix_per_group(setup):
    import cellweave

    model, adata, _, _ = setup
    data = adata[:40].copy()
    cellweave.tl.grn(data, model=model, method="embedding", regulators="all", groupby="cell_type",
                     n_top_targets=2, progress=False)
    groups = set(data.obs["cell_type"].astype(str))
    assert {f"cellweave_grn_{g}" for g in groups} <= set(data.varp.keys())
    assert set(data.uns["cellweave_grn"]["edges"]["group"]) == groups


def test_grn_bad_input(setup):
    import cellweave

    model, adata, _, _ = setup
    data = adata[:10].copy()
    with pytest.raises(CellWeaveInputError, match="regulators"):
        cellweave.tl.grn(data, model=model, regulators=["NOT_A_GENE"], progress=False)
    with pytest.raises(CellWeaveInputError, match="groupby"):
        cellweave.tl.grn(data, model=model, groupby="nope", progress=False)
    with pytest.raises(CellWeaveInputError, match="method"):
        cellweave.tl.grn(data, model=model, method="magic", progress=False)


def test_gene_tools_default_to_the_gene_model_and_refuse_fixed_tables(setup):
    """A model whose gene tables stayed at random codes (the shipped default) is refused where the
    result is read off those tables, with the fix; the gene tools default to the shipped gene
    model, whose tables were learned."""
    import dataclasses

    import cellweave
    from cellweave.models import DEFAULT_GENE_MODEL, CellWeave
    from cellweave.tl._embed import _resolve_gene_model

    model, adata, _, _ = setup
    fixed = CellWeave(dataclasses.replace(model.config, fixed_feature_tables=True), model.vocab, module=model.module)
    data = adata[:40].copy()
    regs = list(map(str, data.var_names[:4]))
    for method in ("embedding", "combined"):
        with pytest.raises(CellWeaveInputError, match="fixed random codes.*tables were learned"):
            cellweave.tl.grn(data, model=fixed, method=method, regulators=regs, n_cells=20, progress=False)
    with pytest.raises(CellWeaveInputError, match="fixed random codes"):
        cellweave.tl.gene_map(model=fixed, umap=False)
    # Attention does not read the tables: allowed.
    cellweave.tl.grn(data, model=fixed, method="attention", regulators=regs, n_cells=20, n_top_targets=3,
                     progress=False)
    assert data.uns["cellweave"]["cellweave_grn"]["method"] == "attention"
    # The shipped pair: the default model's tables are fixed, the gene model's learned and used by default.
    assert CellWeave.load().config.fixed_feature_tables
    gene_model = _resolve_gene_model(None)
    assert gene_model.name == DEFAULT_GENE_MODEL and not gene_model.config.fixed_feature_tables
