"""The pure helpers of benchmarks/perf.py: FLOP counting, verdicts and the chunked synthetic corpus."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def perf(benchmark_script):
    return benchmark_script("perf")


@pytest.fixture(scope="module")
def small_var() -> pd.DataFrame:
    genes = [f"ENSG{i:011d}" for i in range(50)]
    return pd.DataFrame({"gene_id": genes}, index=pd.Index([f"G{i}" for i in range(50)], dtype=object))


def test_flop_counts(perf) -> None:
    assert perf.matmul_flops(2) == 16.0
    # 2 x params x tokens, plus 4 x L^2 x d per layer; a training step is three forwards.
    assert perf.transformer_flops_per_cell(1000, 10, 2, 8) == 2 * 1000 * 10 + 4 * 2 * 100 * 8
    assert perf.transformer_flops_per_cell(1000, 10, 2, 8, training=True) == 3 * (20_000 + 6400)


def test_bound_verdict_names_the_limiting_term(perf) -> None:
    assert perf.bound_verdict(0.1, 0.6).startswith("Python/data overhead")
    assert perf.bound_verdict(0.7, 0.05).startswith("compute")
    assert perf.bound_verdict(0.3, 0.05).startswith("mostly compute")
    assert perf.bound_verdict(0.05, 0.05).startswith("memory bandwidth")


def test_size_label(perf) -> None:
    assert [perf.size_label(n) for n in (100_000, 1_000_000, 2000, 1234)] == ["100k", "1M", "2k", "1234"]


def test_synthetic_rows_have_the_asked_sparsity(perf) -> None:
    data, indices, row_nnz = perf.synthetic_csr_rows(np.random.default_rng(0), 200, n_genes=1000, nnz_per_cell=100)
    assert row_nnz.shape == (200,) and data.size == indices.size == row_nnz.sum()
    assert 90 < row_nnz.mean() < 110
    assert data.dtype == np.float32 and indices.dtype == np.int32
    assert (data >= 1).all() and np.array_equal(data, np.round(data))  # counts
    assert indices.min() >= 0 and indices.max() < 1000
    bounds = np.concatenate([[0], np.cumsum(row_nnz)])
    for a, b in zip(bounds[:-1], bounds[1:]):  # sorted, distinct columns within each row (valid CSR)
        assert np.all(np.diff(indices[a:b]) > 0)


def test_synthetic_rows_are_seeded(perf) -> None:
    a = perf.synthetic_csr_rows(np.random.default_rng(3), 20, n_genes=500, nnz_per_cell=50)
    b = perf.synthetic_csr_rows(np.random.default_rng(3), 20, n_genes=500, nnz_per_cell=50)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_chunked_h5ad_reads_back_backed(perf, small_var, tmp_path) -> None:
    import anndata as ad

    path = tmp_path / "corpus.h5ad"
    # 23 cells in chunks of 5: the last chunk is partial.
    info = perf.write_synthetic_h5ad(path, 23, small_var, seed=1, chunk_cells=5, nnz_per_cell=10)
    assert info["n_cells"] == 23 and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.h5ad"]  # no temporary left
    backed = ad.read_h5ad(path, backed="r")
    try:
        assert backed.shape == (23, 50)
        assert list(backed.var["gene_id"]) == list(small_var["gene_id"])
        assert backed.uns["x_kind"] == "counts"
        X = backed.X[0:23]
        X = X.to_memory() if hasattr(X, "to_memory") else X
    finally:
        backed.file.close()
    assert X.nnz == info["nnz"] and 5 * 23 < info["nnz"] < 15 * 23
    whole = ad.read_h5ad(path)
    assert whole.obs_names[0] == "cell0"
    assert (abs(whole.X - X)).sum() == 0
