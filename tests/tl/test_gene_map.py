"""tl.gene_map, tl.score_programs, the bundled gene sets and the gene-map benchmark metrics."""

from __future__ import annotations

import numpy as np
import pytest

from cellweave._exceptions import CellWeaveInputError


def test_bundled_gene_sets():
    from cellweave.tl import gene_sets

    sets = gene_sets("program", universe=["RPL3", "RPS27A", "RPL13AP5", "HLA-DRA", "MT-ND1", "ACTB"])
    assert len(sets["tirosh2016_S_phase"]) == 43 and len(sets["tirosh2016_G2M_phase"]) == 54
    assert "MKI67" in sets["tirosh2016_G2M_phase"] and "PCNA" in sets["tirosh2016_S_phase"]
    assert sets["ribosomal_protein"] == ["RPL3", "RPS27A"]  # pseudogene RPL13AP5 left out
    assert sets["mhc_class_ii"] == ["HLA-DRA"] and sets["mitochondrially_encoded"] == ["MT-ND1"]
    markers = gene_sets("marker")
    assert "CD79A" in markers["CD19+ B"] and "GNLY" in markers["CD56+ NK"]


def test_gene_map_is_the_embedding_table(tiny_vocab_and_data, tiny_rna_model):
    from cellweave.tl import gene_map

    vocab, adata = tiny_vocab_and_data
    model = tiny_rna_model
    genes = list(map(str, adata.var_names[:60]))
    g = gene_map(model=model, genes=genes, umap=False, n_neighbors=5)
    assert g.n_obs == 60 and g.n_vars == 16
    row = int(g.obs["token_id"].iloc[7])
    np.testing.assert_allclose(g.X[7], model.module.feature_embedding.weight.detach().numpy()[row])
    assert set(g.obs_names) <= set(genes)
    conn = g.obsp["connectivities"]
    assert (conn != conn.T).nnz == 0
    assert g.obs["program"].nunique() >= 2
    assert g.uns["cellweave"]["gene_map"]["model_sha256"] == model.model_hash
    with pytest.raises(CellWeaveInputError, match="requested genes"):
        gene_map(model=model, genes=["NOPE1", "NOPE2"], umap=False)


def test_score_programs_follows_the_program_genes(tiny_vocab_and_data):
    from cellweave.tl import score_programs

    _, adata = tiny_vocab_and_data
    data = adata.copy()
    program = list(map(str, data.var_names[100:110]))
    X = data.X.toarray()
    high = np.arange(data.n_obs) % 2 == 0
    X[np.ix_(high, np.arange(100, 110))] += 50
    data.X = X.astype(np.float32)
    score_programs(data, programs={"planted": program, "tiny": program[:2]}, min_genes=5)
    s = data.obs["cellweave_program_planted"].to_numpy()
    assert s[high].mean() > s[~high].mean() + 0.5
    assert "cellweave_program_tiny" not in data.obs
    assert data.uns["cellweave"]["cellweave_program"]["skipped"] == ["tiny"]
    with pytest.raises(CellWeaveInputError, match="min_genes"):
        score_programs(data, programs={"x": ["NOPE"]})


def test_program_metrics_separate_clustered_from_random():
    from cellweave.bench.tasks.gene_map import program_metrics

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 8)) * 5
    labels = np.array(["a"] * 10 + ["b"] * 10 + ["other"] * 40)
    E = rng.standard_normal((60, 8))
    E[:10] += centers[0]
    E[10:20] += centers[1]
    in_set = labels != "other"
    good = program_metrics(E, labels, in_set)
    bad = program_metrics(rng.standard_normal((60, 8)), labels, in_set)
    assert good["program_silhouette"] > 0.3 > bad["program_silhouette"]
    assert good["neighbour_enrichment"] > 2 > bad["neighbour_enrichment"]
