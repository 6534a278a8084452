"""tl.markers: integrated gradients through the frozen-embedding classifier, scanpy's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellweave._exceptions import CellWeaveInputError
from cellweave.tl._gene_utils import prepare_rna, token_batches
from cellweave.tl._markers import attribution_scores, fit_group_classifier


@pytest.fixture(scope="module")
def setup(tiny_vocab_and_data, tiny_rna_model):
    vocab, adata = tiny_vocab_and_data
    model = tiny_rna_model
    corpus, tok = prepare_rna(adata, model)
    emb = model.embed_corpus(corpus, progress=False)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    clf, classes = fit_group_classifier(emb, labels)
    return model, adata, corpus, tok, clf, classes


def test_integrated_gradients_are_complete(setup):
    """IG attributions of one cell sum to log p(x) - log p(baseline) (the completeness axiom).

    The path is values * alpha, alpha in (0, 1]; the bag half of the embedding is a value-weighted
    mean, constant along the path but undefined at exactly 0, so the baseline is alpha -> 0+.
    """
    model, _, corpus, tok, clf, classes = setup
    cell = np.array([3])
    attr = attribution_scores(model, corpus, tok, clf, cell, 0, n_steps=64)
    b = next(token_batches(model, corpus, cell, batch_size=1))
    with torch.no_grad():
        at_x = clf(model.module.embed_cells(b["token_ids"], b["values"], b["modality_ids"], b["padding_mask"]))[0, 0]
        at_0 = clf(model.module.embed_cells(b["token_ids"], 1e-4 * b["values"], b["modality_ids"],
                                            b["padding_mask"]))[0, 0]
    assert float(attr.sum()) == pytest.approx(float(at_x - at_0), rel=0.05, abs=1e-3)
    # Genes the cell does not carry as tokens get no attribution.
    present = set(b["token_ids"][b["padding_mask"]].tolist())
    absent = np.array([t not in present for t in tok])
    assert np.all(attr[absent] == 0)


def test_deletion_scores_candidates_only(setup):
    model, _, corpus, tok, clf, _ = setup
    cells = np.arange(8)
    s = attribution_scores(model, corpus, tok, clf, cells, 1, method="deletion", n_candidates=5)
    assert 0 < np.count_nonzero(s) <= 5


def test_markers_writes_rank_genes_groups_layout(setup):
    import scanpy as sc

    import cellweave

    model, adata, _, _, _, _ = setup
    data = adata[:60].copy()
    cellweave.tl.markers(data, groupby="cell_type", model=model, n_cells_per_group=4, n_steps=2, progress=False)
    rec = data.uns["cellweave_markers"]
    groups = sorted(set(data.obs["cell_type"].astype(str)))
    assert list(rec["names"].dtype.names) == groups
    df = sc.get.rank_genes_groups_df(data, group=groups[0], key="cellweave_markers")
    assert df["scores"].is_monotonic_decreasing and set(df["names"]) <= set(data.var_names)
    table = cellweave.tl.markers_frame(data)
    assert set(table["group"]) == set(groups) and table["rank"].min() == 1
    assert data.uns["cellweave"]["cellweave_markers"]["model_sha256"] == model.model_hash


def test_markers_bad_input(setup):
    import cellweave

    model, adata, _, _, _, _ = setup
    with pytest.raises(CellWeaveInputError, match="groupby"):
        cellweave.tl.markers(adata[:10].copy(), groupby="nope", model=model)
    one = adata[:10].copy()
    one.obs["one"] = "a"
    with pytest.raises(CellWeaveInputError, match="at least 2"):
        cellweave.tl.markers(one, groupby="one", model=model)


def test_shipped_model_finds_b_cell_markers():
    """Integration: on PBMC (.raw, log-normalized) B-cell markers rank near the top for B cells."""
    import cellweave

    pbmc = cellweave.datasets.load("scanpy_pbmc68k_reduced").raw.to_adata()
    keep = pbmc.obs["cell_type"].isin(["CD19+ B", "CD14+ Monocyte", "CD56+ NK"]).to_numpy()
    pbmc = pbmc[keep].copy()
    cellweave.tl.markers(pbmc, groupby="cell_type", n_cells_per_group=8, n_steps=4, progress=False)
    names = pbmc.uns["cellweave_markers"]["names"]

    def mean_rank(group, genes):
        order = list(names[group])
        return np.mean([order.index(g) for g in genes])

    b_markers, nk_markers = ["CD79A", "CD79B", "MS4A1"], ["GNLY", "NKG7", "PRF1"]
    assert mean_rank("CD19+ B", b_markers) < mean_rank("CD56+ NK", b_markers)
    assert mean_rank("CD56+ NK", nk_markers) < mean_rank("CD19+ B", nk_markers)
