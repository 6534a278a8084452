"""cellweave.io.validate: x_kind detection (synthetic and every bundled file) and each error path."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import cellweave
from cellweave._exceptions import CellWeaveInputError
from cellweave.data import synthetic_adata, synthetic_mudata
from cellweave.io import as_modalities, check_modalities, detect_x_kind, validate_matrix


@pytest.fixture()
def counts():
    return synthetic_adata(n_cells=60, n_genes=80, seed=2)


def _lognorm(a: ad.AnnData, target: float = 1e4) -> ad.AnnData:
    X = a.X.astype(np.float64).toarray()
    X = np.log1p(X / X.sum(1, keepdims=True) * target)
    b = a.copy()
    b.X = sp.csr_matrix(X.astype(np.float32))
    return b


# ---------------------------------------------------------------- detection on synthetic values


def test_detect_counts_dense_and_sparse(counts) -> None:
    assert detect_x_kind(counts.X) == "counts"
    assert detect_x_kind(counts.X.toarray()) == "counts"
    assert detect_x_kind(sp.csc_matrix(counts.X)) == "counts"
    assert detect_x_kind(np.zeros((3, 4))) == "counts"
    assert detect_x_kind(np.array([[1, 0], [2, 5]], dtype=np.int32)) == "counts"


@pytest.mark.parametrize("target", [1e4, 1e6, 2345.0])
def test_detect_log_normalized_constant_totals(counts, target) -> None:
    assert detect_x_kind(_lognorm(counts, target).X) == "log_normalized"


def test_detect_log_normalized_after_gene_subset(counts) -> None:
    # Highly-variable-gene subsets break the constant total; the integer-ratio signature remains.
    sub = _lognorm(counts)[:, :30]
    assert detect_x_kind(sub.X) == "log_normalized"
    assert detect_x_kind(sub.X.toarray()) == "log_normalized"


def test_detect_log2_normalized(counts) -> None:
    X = counts.X.toarray().astype(np.float64)
    X = np.log2(1 + X / X.sum(1, keepdims=True) * 1e4)
    assert detect_x_kind(X[:, :40]) == "log_normalized"


def test_detect_scaled(counts) -> None:
    X = _lognorm(counts).X.toarray()
    Z = (X - X.mean(0)) / (X.std(0) + 1e-8)
    assert detect_x_kind(Z) == "scaled"


def test_detect_normalized_other(counts) -> None:
    X = counts.X.toarray().astype(np.float64)
    cpm = X / X.sum(1, keepdims=True) * 1e6  # normalized, not logged
    assert detect_x_kind(cpm) == "normalized_other"
    rng = np.random.default_rng(0)
    assert detect_x_kind(rng.uniform(0, 2, size=(50, 30))) == "normalized_other"  # continuous intensities


def test_detect_samples_large_matrices_fast() -> None:
    import time

    rng = np.random.default_rng(0)
    n_cells, n_genes, per_cell = 200_000, 2_000, 100
    indptr = np.arange(n_cells + 1, dtype=np.int64) * per_cell
    indices = np.tile(np.arange(per_cell, dtype=np.int32), n_cells)
    data = rng.integers(1, 20, size=n_cells * per_cell).astype(np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    t = time.perf_counter()
    assert detect_x_kind(X) == "counts"
    assert time.perf_counter() - t < 2.0  # looks at 2000 rows, not 200k


# ---------------------------------------------------------------- detection on every bundled file


def _bundled_matrices():
    for info in cellweave.datasets.REGISTRY.values():
        obj = cellweave.datasets.load(info.name)
        mods = obj.mod.items() if hasattr(obj, "mod") else [("rna", obj)]
        for mod, a in mods:
            yield info.name, mod, a


def test_detection_agrees_with_every_bundled_file() -> None:
    results = {(n, m): (detect_x_kind(a.X), a.uns["x_kind"]) for n, m, a in _bundled_matrices()}
    wrong = {k: v for k, v in results.items() if v[0] != v[1]}
    assert not wrong, f"detected vs uns['x_kind']: {wrong}"
    assert results[("multibatch_cellbench_sc_mixology", "rna")][0] == "counts"
    assert results[("scanpy_pbmc68k_reduced", "rna")][0] == "scaled"
    assert results[("spatial_visium_squidpy_test", "rna")][0] == "log_normalized"
    assert results[("spatial_novosparc_bdtnp_drosophila", "rna")][0] == "normalized_other"


def test_scaled_bundled_file_points_to_raw() -> None:
    pbmc = cellweave.datasets.load("scanpy_pbmc68k_reduced")
    with pytest.raises(CellWeaveInputError, match=r"scaled \(z-scored\).*adata\.raw\.to_adata\(\)") as info:
        validate_matrix(pbmc, dataset="pbmc68k")
    assert "adata.raw holds log-normalized" in str(info.value)  # its raw is log-normalized, not counts
    with pytest.warns(UserWarning, match="log-normalized"):
        assert validate_matrix(pbmc.raw.to_adata()).x_kind == "log_normalized"


def test_bundled_log_normalized_is_accepted_with_a_warning() -> None:
    visium = cellweave.datasets.load("spatial_visium_squidpy_test")
    with pytest.warns(UserWarning, match="raw counts are preferred"):
        report = validate_matrix(visium)
    assert report.x_kind == "log_normalized" and report.n_cells == 49


# ---------------------------------------------------------------- validate_matrix


def test_valid_counts_report(counts) -> None:
    report = validate_matrix(counts, dataset="syn")
    assert report.x_kind == "counts"
    assert (report.n_cells, report.n_features, report.n_empty_cells) == (60, 80, 0)
    assert report.warnings == []


def test_layer_is_used_and_missing_layer_lists_available(counts) -> None:
    a = _lognorm(counts)
    a.layers["counts"] = counts.X.copy()
    assert validate_matrix(a, layer="counts").x_kind == "counts"
    with pytest.raises(CellWeaveInputError, match=r"layer 'raw_counts' not found; available layers: \['counts'\]"):
        validate_matrix(a, layer="raw_counts")


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_zero_cells_or_features(shape) -> None:
    with pytest.raises(CellWeaveInputError, match="cells and .* features"):
        validate_matrix(ad.AnnData(X=np.zeros(shape, dtype=np.float32)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("sparse", [True, False])
def test_nan_or_inf(counts, bad, sparse) -> None:
    X = counts.X.toarray()
    X[0, 0] = X[3, 4] = bad
    a = counts.copy()
    a.X = sp.csr_matrix(X) if sparse else X
    with pytest.raises(CellWeaveInputError, match=r"2 NaN or infinite values.*np\.nan_to_num"):
        validate_matrix(a)


def test_negative_values_are_refused_as_scaled(counts) -> None:
    a = counts.copy()
    X = a.X.toarray()
    a.X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    with pytest.raises(CellWeaveInputError, match=r"looks scaled \(z-scored\).*layer='counts'.*adata\.raw\.to_adata\(\)"):
        validate_matrix(a)


def test_scaled_with_raw_counts_says_so(counts) -> None:
    a = counts.copy()
    a.raw = counts.copy()
    X = a.X.toarray()
    a.X = X - X.mean(0)
    with pytest.raises(CellWeaveInputError, match="has adata.raw with counts"):
        validate_matrix(a)


def test_normalized_other_is_refused(counts) -> None:
    a = counts.copy()
    X = a.X.toarray().astype(np.float64)
    a.X = (X / X.sum(1, keepdims=True) * 1e6).astype(np.float32)
    with pytest.raises(CellWeaveInputError, match="neither counts nor log-normalized.*Pass raw counts"):
        validate_matrix(a)


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_feature_names(counts) -> None:
    a = counts.copy()
    names = list(a.var_names)
    names[1] = names[0]
    names[3] = names[2]
    a.var_names = names
    with pytest.raises(CellWeaveInputError, match=r"2 duplicate feature names.*var_names_make_unique\(\)"):
        validate_matrix(a)


@pytest.mark.filterwarnings("ignore:(Observation names are not unique|Duplicated obs_names)")
def test_duplicate_cell_names_are_refused_in_every_layer(counts) -> None:
    """Duplicate cell names are refused (never renamed silently) wherever data enters: an AnnData, a
    MuData's modality (it used to fail with pandas' InvalidIndexError when not the first), the container."""
    import mudata as md

    from cellweave.data import build_vocabulary, prepare_cells

    dup = counts.copy()
    dup.obs_names = ["c0", "c0", "c1", "c1", "c1", *dup.obs_names[5:]]
    with pytest.raises(CellWeaveInputError, match=r"^rna: 3 duplicate cell names \(e.g. \['c0', 'c1'\]\).*"
                       r"adata.obs_names_make_unique\(\)\.$"):
        as_modalities(dup)
    with pytest.raises(CellWeaveInputError, match="3 duplicate cell names"):
        validate_matrix(dup)
    mdata = synthetic_mudata(n_cells=20, n_genes=40, n_proteins=5, n_peaks=20, seed=0)
    vocab, _ = build_vocabulary({"m": mdata}, min_cells=1)
    mods = {k: v.copy() for k, v in mdata.mod.items()}
    mods["prot"].obs_names = [mods["prot"].obs_names[0], *mods["prot"].obs_names[:-1]]
    with md.set_options(pull_on_update=False):
        bad = md.MuData(mods)
    fix = r"mdata.mod\['prot'\].obs_names_make_unique\(\); mdata.update\(\)\.$"
    with pytest.raises(CellWeaveInputError, match=r"^modality 'prot': 1 duplicate cell names.*" + fix):
        prepare_cells(bad, vocab)
    with pytest.raises(CellWeaveInputError, match=fix):
        as_modalities(bad)
    assert set(as_modalities(mdata)) == {"rna", "prot", "atac"}  # unique names pass


def test_log_normalized_warns_and_reports(counts) -> None:
    with pytest.warns(UserWarning, match="log-normalized input detected; raw counts are preferred") as rec:
        report = validate_matrix(_lognorm(counts))
    assert report.x_kind == "log_normalized"
    assert any("raw counts are preferred" in w for w in report.warnings)
    assert rec[0].filename == __file__  # stacklevel points at the caller


def test_declared_x_kind_contradiction_is_a_warning(counts) -> None:
    a = counts.copy()
    a.uns["x_kind"] = "log_normalized"
    report = validate_matrix(a)
    assert report.x_kind == "counts"
    assert any("uns['x_kind'] says 'log_normalized'" in w for w in report.warnings)


def test_raw_of_pbmc68k_gets_no_stale_x_kind_warning(caplog) -> None:
    """adata.raw.to_adata() copies the parent's uns: pbmc68k's uns['x_kind'] = 'scaled' describes its X,
    not the log-normalized raw (uns['raw_x_kind']). Only the log-normalized notice remains."""
    raw = cellweave.datasets.load("scanpy_pbmc68k_reduced").raw.to_adata()
    assert raw.uns["x_kind"] == "scaled" and raw.uns["raw_x_kind"] == "log_normalized"
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="log-normalized input detected"):
        report = validate_matrix(raw, dataset="pbmc68k_raw")
    assert report.x_kind == "log_normalized"
    assert not [w for w in report.warnings if "uns['x_kind']" in w]
    assert not [r for r in caplog.records if "uns['x_kind']" in r.getMessage()]


def test_stale_x_kind_warning_names_the_fix(counts) -> None:
    a = counts.copy()
    a.uns["x_kind"] = "scaled"
    a.uns["raw_x_kind"] = "log_normalized"  # describes neither: still a warning, with the line that fixes it
    report = validate_matrix(a)
    assert [w for w in report.warnings if "says 'scaled' but the values look 'counts'" in w and
            "adata.raw.to_adata() copies the parent's uns" in w and "set uns['x_kind'] = 'counts'" in w]


def test_empty_cells_warn_and_all_empty_is_an_error(counts, caplog) -> None:
    a = counts.copy()
    X = a.X.toarray()
    X[:7] = 0
    Xs = sp.csr_matrix(X)
    # An explicitly stored zero does not make a cell non-empty.
    Xs = sp.csr_matrix((np.r_[0.0, Xs.data], np.r_[0, Xs.indices], np.r_[0, Xs.indptr[1:] + 1]), shape=Xs.shape)
    a.X = Xs
    with caplog.at_level(logging.WARNING, logger="cellweave.io._validate"):
        report = validate_matrix(a)
    assert report.n_empty_cells == 7
    assert any("7 of 60 cells have no nonzero feature" in w for w in report.warnings)
    a.X = sp.csr_matrix(a.shape, dtype=np.float32)
    with pytest.raises(CellWeaveInputError, match="all 60 cells have only zeros.*right layer"):
        validate_matrix(a)


# ---------------------------------------------------------------- modalities


def test_check_modalities_sorts_and_aliases(caplog) -> None:
    assert check_modalities(["rna", "prot", "guide", "hto"]) == (["rna", "prot"], ["guide", "hto"])
    with caplog.at_level(logging.INFO, logger="cellweave.io._validate"):
        used, skipped = check_modalities(["Gene Expression", "ADT", "Peaks", "HTO"])
    assert used == ["rna", "prot", "atac"] and skipped == ["hto"]
    assert "taken as 'rna'" in caplog.text
    assert check_modalities(["GEX", "Antibody Capture", "ATAC"])[0] == ["rna", "prot", "atac"]
    assert check_modalities(["RNA", "protein"])[0] == ["rna", "prot"]


def test_unknown_modality_names_the_fix() -> None:
    # 'rna' is taken, so the advice renames to a free modality or removes, never overwrites rna.
    with pytest.raises(CellWeaveInputError, match=r"Unknown modality 'spliced'.*'gene_activity'.*mdata\.mod\['prot'\] = mdata\.mod\.pop\('spliced'\).*del mdata\.mod\['spliced'\]"):
        check_modalities(["rna", "spliced"])
    with pytest.raises(CellWeaveInputError, match=r"mdata\.mod\['rna'\] = mdata\.mod\.pop\('spliced'\)"):
        check_modalities(["spliced"])


def test_two_names_for_one_modality() -> None:
    with pytest.raises(CellWeaveInputError, match="Two modalities map to 'rna'"):
        check_modalities(["rna", "RNA"])


def test_as_modalities_anndata(counts) -> None:
    assert as_modalities(counts) == {"rna": counts}
    assert list(as_modalities(counts, modality_for_anndata="prot")) == ["prot"]
    with pytest.raises(CellWeaveInputError, match="not a model modality"):
        as_modalities(counts, modality_for_anndata="hto")


@pytest.mark.filterwarnings("ignore:var_names are not unique")
def test_as_modalities_mudata_renames_and_skips() -> None:
    import mudata as md

    m = synthetic_mudata(n_cells=20, n_genes=30, n_proteins=4, n_peaks=10, seed=0)
    with md.set_options(pull_on_update=False):
        renamed = md.MuData({"GEX": m["rna"], "ADT": m["prot"], "hto": m["prot"][:, :2].copy()})
    mods = as_modalities(renamed)
    assert list(mods) == ["rna", "prot"]
    assert mods["rna"] is renamed.mod["GEX"]


def test_as_modalities_unpaired_keeps_own_cells() -> None:
    mdata = cellweave.datasets.load("liger_bmmc_rna_gene_activity")
    mods = as_modalities(mdata)
    assert set(mods) == {"rna", "gene_activity"}
    assert mods["rna"].n_obs == mods["gene_activity"].n_obs == 340 and mdata.n_obs == 680
    assert not set(mods["rna"].obs_names) & set(mods["gene_activity"].obs_names)
    rows = mdata.obs_names.get_indexer(mods["gene_activity"].obs_names)
    assert (rows >= 0).all()


def test_as_modalities_skips_guide() -> None:
    mods = as_modalities(cellweave.datasets.load("perturb_papalexi2021_sceptre"))
    assert list(mods) == ["rna"]


def test_implausibly_large_counts_are_refused_with_the_reason() -> None:
    import anndata as ad
    import scipy.sparse as sp

    from cellweave._exceptions import CellWeaveInputError
    from cellweave.io import validate_matrix

    X = sp.random(20, 30, density=0.3, format="csr", random_state=0, dtype=np.float32)
    X.data = np.ceil(X.data * 10)
    ok = ad.AnnData(X=X.copy())
    validate_matrix(ok)
    X.data[0] = 1e9
    with pytest.raises(CellWeaveInputError, match="1,000,000,000.*bulk"):
        validate_matrix(ad.AnnData(X=X))


def test_a_counts_layer_is_named_when_x_is_not_counts() -> None:
    """Log-normalized or scaled X beside a layer of raw counts: the message names the layer to pass."""
    adata = synthetic_adata(n_cells=60, n_genes=40, seed=0)
    adata.layers["umi"] = adata.X.copy()
    dense = adata.X.toarray()
    adata.X = np.log1p(dense / dense.sum(1, keepdims=True) * 1e4).astype(np.float32)
    with pytest.warns(UserWarning, match=r"log-normalized input detected.*layers\['umi'\] holds raw counts.*--layer umi"):
        validate_matrix(adata, dataset="lognorm")
    adata.X = (adata.X - adata.X.mean(0)) / (adata.X.std(0) + 1e-6)
    with pytest.raises(CellWeaveInputError, match=r"negative values.*layer='umi'"):
        validate_matrix(adata, dataset="scaled")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_matrix(adata, layer="umi", dataset="counts").x_kind == "counts"  # no advice to itself


def test_rna_modality_of_anndata_and_mudata() -> None:
    from cellweave.io import rna_modality

    mdata = synthetic_mudata(n_cells=30, seed=0)
    adata = mdata.mod["rna"]
    assert rna_modality(adata) is adata
    assert rna_modality(mdata) is mdata.mod["rna"]
    mdata.obs["group"] = ["g1", "g2", "g3"] * 10
    with_obs = rna_modality(mdata, with_container_obs=True)
    assert list(with_obs.obs["group"][:3]) == ["g1", "g2", "g3"] and "group" not in mdata.mod["rna"].obs
    import mudata as md

    prot_only = md.MuData({"prot": mdata.mod["prot"]})
    with pytest.raises(CellWeaveInputError, match=r"no 'rna' modality \(it has prot\); markers needs RNA.*rename it"):
        rna_modality(prot_only, purpose="markers")
