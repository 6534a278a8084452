"""cellweave.data.synthetic: shapes, real gene names, determinism, separable cell types, MuData."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import synthetic_adata, synthetic_mudata
from cellweave.io import detect_x_kind, validate_matrix


def test_adata_layout() -> None:
    a = synthetic_adata(n_cells=90, n_genes=120, n_cell_types=3, n_batches=2, seed=0)
    assert a.shape == (90, 120)
    assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
    assert detect_x_kind(a.X) == "counts" and a.uns["x_kind"] == "counts"
    assert validate_matrix(a).x_kind == "counts"
    assert a.var_names.is_unique
    assert a.var["gene_id"].str.match(r"^ENSG\d{11}$").all()
    assert a.obs["cell_type"].cat.categories.tolist() == ["type_0", "type_1", "type_2"]
    assert a.obs["batch"].nunique() == 2 and a.obs["batch"].dtype == "category"
    pert = a.obs["perturbation"]
    assert "control" in set(pert) and set(pert) - {"control"} <= set(a.var_names)
    assert "spatial" not in a.obsm


def test_adata_genes_are_real() -> None:
    from cellweave.data.synthetic import _gene_table

    a = synthetic_adata(n_cells=10, n_genes=50)
    table = _gene_table("human")
    known = dict(zip(table["ensembl_gene_id"], table["gene_symbol"]))
    assert all(known[g] == s for g, s in zip(a.var["gene_id"], a.var_names))


def test_mouse_and_spatial() -> None:
    a = synthetic_adata(n_cells=60, n_genes=40, organism="mouse", spatial=True, n_cell_types=3, seed=4)
    assert a.var["gene_id"].str.startswith("ENSMUSG").all()
    xy = a.obsm["spatial"]
    assert xy.shape == (60, 2)
    types = a.obs["cell_type"].cat.codes.to_numpy()
    centers = np.stack([xy[types == k].mean(0) for k in range(3)])
    spread = np.mean([xy[types == k].std(0).mean() for k in range(3)])
    gaps = [np.linalg.norm(centers[i] - centers[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 3 * spread  # cells of one type cluster in space


def test_deterministic_and_seed_dependent() -> None:
    a, b = synthetic_adata(seed=3), synthetic_adata(seed=3)
    c = synthetic_adata(seed=4)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)
    assert (a.X != c.X).nnz > 0
    assert list(a.var_names) == list(c.var_names)  # genes do not depend on the seed


def test_cell_types_are_separable() -> None:
    a = synthetic_adata(n_cells=150, n_genes=200, seed=0)
    X = a.X.toarray()
    X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    types = a.obs["cell_type"].cat.codes.to_numpy()
    centroids = np.stack([X[types == k].mean(0) for k in range(3)])
    nearest = np.argmin(((X[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == types).mean() > 0.95


def test_perturbation_knocks_down_its_target() -> None:
    a = synthetic_adata(n_cells=400, n_genes=200, seed=0)
    target = next(t for t in a.obs["perturbation"].cat.categories if t != "control")
    g = a.var_names.get_loc(target)
    col = a.X[:, g].toarray().ravel()
    hit = (a.obs["perturbation"] == target).to_numpy()
    ctrl = (a.obs["perturbation"] == "control").to_numpy()
    assert col[hit].mean() < 0.5 * col[ctrl].mean()


def test_mudata_layout() -> None:
    m = synthetic_mudata(n_cells=50, n_genes=60, n_proteins=8, n_peaks=40, seed=0)
    assert set(m.mod) == {"rna", "prot", "atac"}
    assert m.n_obs == 50 and {"cell_type", "batch"} <= set(m.obs.columns)
    for mod in m.mod.values():
        assert mod.obs.shape[1] == 0 and mod.uns["x_kind"] == "counts"
        assert detect_x_kind(mod.X) == "counts"
    prot = m["prot"]
    assert prot.var_names[0] == "CD3_TotalSeqB" and prot.var.loc["CD3_TotalSeqB", "gene_symbol"] == "CD3E"
    assert prot.var["gene_id"].str.startswith("ENSG").all()
    atac = m["atac"]
    assert atac.var_names.str.match(r"^chr\d+:\d+-\d+$").all()
    first = atac.var.iloc[0]
    assert atac.var_names[0] == f"{first['chrom']}:{first['start']}-{first['end']}"
    assert set(np.unique(atac.X.data)) <= {1.0, 2.0}


def test_mudata_missing_modality() -> None:
    m = synthetic_mudata(n_cells=100, modalities=("rna", "prot"), n_genes=40, n_proteins=5, missing={"prot": 0.3}, seed=1)
    assert m.n_obs == 100 and m["rna"].n_obs == 100 and m["prot"].n_obs == 70
    assert set(m["prot"].obs_names) < set(m.obs_names)
    assert m.obs["cell_type"].notna().all()


def test_mudata_without_rna_and_every_cell_keeps_a_modality() -> None:
    m = synthetic_mudata(n_cells=40, modalities=("prot", "atac"), n_proteins=5, n_peaks=20, missing={"prot": 0.5, "atac": 0.6})
    assert m.n_obs == 40
    covered = set(m["prot"].obs_names) | set(m["atac"].obs_names)
    assert covered == set(m.obs_names)


def test_bad_arguments() -> None:
    with pytest.raises(CellWeaveInputError, match="modalities"):
        synthetic_mudata(modalities=("rna", "spliced"))
    with pytest.raises(CellWeaveInputError, match="missing="):
        synthetic_mudata(missing={"prot": 1.0})
    with pytest.raises(CellWeaveInputError, match="organism"):
        synthetic_adata(organism="zebrafish")
    with pytest.raises(CellWeaveInputError, match="n_proteins"):
        synthetic_mudata(n_proteins=500)
