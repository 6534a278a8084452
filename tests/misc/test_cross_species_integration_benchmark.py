"""benchmarks/cross_species_integration.py: two sources of one tissue joined on their shared cell types and
on the genes both measure (human-mouse orthologs), the source as the batch."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp


@pytest.fixture()
def cross_species(benchmark_script, monkeypatch):
    module = benchmark_script("cross_species_integration")
    monkeypatch.syspath_prepend(str(Path(module.__file__).parent))
    return module


def _source(genes, labels, seed):
    rng = np.random.default_rng(seed)
    x = rng.poisson(5.0, size=(len(labels), len(genes))).astype(np.float32) + 1
    a = ad.AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=genes))
    a.obs_names = [f"c{i}" for i in range(len(labels))]
    return a, np.asarray(labels)


def test_paired_set_keeps_shared_types_and_aligns_orthologous_genes(cross_species) -> None:
    human, h_labels = _source(["GCG", "SST", "PDX1", "ACTB", "INS"], ["alpha", "beta", "ductal", "delta"], 0)
    # the mouse genes in another order, one without a one-to-one human ortholog, one unknown
    mouse, m_labels = _source(["Actb", "Ins1", "Sst", "Gcg", "NotAGene1", "Pdx1"],
                              ["Alpha", "Beta ", "Ngn3 high EP", "Alpha", "Epsilon"], 1)
    d = cross_species.paired_set("toy", ("H", human, h_labels, "human"), ("M", mouse, m_labels, "mouse"),
                                 min_genes=3)
    a = d.adata
    assert d.batch_key == cross_species.SOURCE and d.model_input is a
    assert list(a.obs[cross_species.SOURCE]) == ["H", "H", "H", "M", "M", "M"]  # ductal, Ngn3 and Epsilon dropped
    assert list(d.labels) == ["alpha", "beta", "delta", "alpha", "beta", "alpha"]
    assert set(a.var_names) == {"GCG", "SST", "PDX1", "ACTB"}  # INS / Ins1: not one-to-one
    assert a.var["gene_id"].str.startswith("ENSG").all()
    for gene, mouse_gene in (("GCG", "Gcg"), ("SST", "Sst"), ("PDX1", "Pdx1"), ("ACTB", "Actb")):
        col = a[:, gene].X.toarray().ravel()
        np.testing.assert_array_equal(col[:3], human[[0, 1, 3], gene].X.toarray().ravel())
        np.testing.assert_array_equal(col[3:], mouse[[0, 1, 3], mouse_gene].X.toarray().ravel())
    np.testing.assert_allclose(np.expm1(d.lognorm.toarray()).sum(axis=1), 1e4, rtol=1e-3)  # log1p CP10k


def test_paired_set_refuses_sources_without_a_shared_type_or_genes(cross_species) -> None:
    human, _ = _source(["GCG", "SST", "PDX1"], ["alpha", "beta"], 0)
    mouse, _ = _source(["Gcg", "Sst", "Pdx1"], ["Alpha", "Beta"], 1)
    with pytest.raises(ValueError, match="share none of the types"):
        cross_species.paired_set("toy", ("H", human, np.array(["ductal", "acinar"]), "human"),
                                 ("M", mouse, np.array(["Alpha", "Beta"]), "mouse"), min_genes=3)
    with pytest.raises(ValueError, match="share 3 mapped genes; at least 50"):
        cross_species.paired_set("toy", ("H", human, np.array(["alpha", "beta"]), "human"),
                                 ("M", mouse, np.array(["Alpha", "Beta"]), "mouse"))


def test_mean_rows_averages_each_method_over_the_tables_that_have_it(cross_species) -> None:
    from depth_shift_integration import mean_rows

    one = {"m": {"scIB total": 0.5, "scIB bio conservation": 0.4, "scIB batch correction": 0.6}}
    two = {"m": {"scIB total": 0.7, "scIB bio conservation": 0.6, "scIB batch correction": 0.8},
           "only": {"scIB total": 0.1, "scIB bio conservation": 0.1, "scIB batch correction": 0.1}}
    means = mean_rows([one, two])
    assert means["m"] == pytest.approx({"scIB total": 0.6, "scIB bio conservation": 0.5, "scIB batch correction": 0.7})
    assert means["only"]["scIB total"] == pytest.approx(0.1)
