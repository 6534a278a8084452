"""Download-and-convert, offline: each converter run on byte copies of the published source files
(``shared/raw``, SHA-256 checked) must give the converted file the mirror holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellweave import datasets

RAW = Path(__file__).resolve().parents[3] / "shared" / "raw"
CONVERTIBLE = ["multibatch_cellbench_sc_mixology", "citeseq_pbmc_10x_scvi_tests", "spatial_osmfish_scvi"]


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _same_frame(ours: pd.DataFrame, theirs: pd.DataFrame, what: str) -> None:
    assert list(ours.index) == list(theirs.index), f"{what}: index"
    assert list(ours.columns) == list(theirs.columns), f"{what}: columns"
    for col in theirs.columns:
        a, b = ours[col], theirs[col]
        assert (a.dtype.kind == "O" or isinstance(a.dtype, pd.CategoricalDtype)) == (
            b.dtype.kind == "O" or isinstance(b.dtype, pd.CategoricalDtype)), f"{what}[{col}]: dtype"
        assert a.astype(str).tolist() == b.astype(str).tolist(), f"{what}[{col}]: values"


def _same_anndata(ours, theirs, what: str) -> None:
    assert ours.shape == theirs.shape, what
    _same_frame(ours.obs, theirs.obs, f"{what}.obs")
    _same_frame(ours.var, theirs.var, f"{what}.var")
    assert sp.issparse(ours.X) and ours.X.dtype == np.float32, f"{what}.X is float32 CSR"
    np.testing.assert_array_equal(_dense(ours.X), _dense(theirs.X), err_msg=f"{what}.X")
    assert sorted(ours.obsm) == sorted(theirs.obsm), what
    for key in theirs.obsm:
        np.testing.assert_array_equal(np.asarray(ours.obsm[key]), np.asarray(theirs.obsm[key]))
    assert ours.uns.get("x_kind") == theirs.uns.get("x_kind"), what


@pytest.mark.skipif(not RAW.is_dir(), reason="no byte copies of the published sources (shared/raw)")
@pytest.mark.parametrize("name", CONVERTIBLE)
def test_converter_reproduces_the_mirror(name, tmp_path) -> None:
    if datasets.data_dir() is None:
        pytest.skip("no data mirror to compare with (set CELLWEAVE_DATA_DIR)")
    assert datasets.has_converter(name)
    ours = datasets.convert(name, raw_dir=RAW / name, progress=False)
    # through a file, as the cache stores it
    out = tmp_path / datasets.info(name).filename
    if hasattr(ours, "mod"):
        ours.write_h5mu(out)
    else:
        ours.write_h5ad(out)
    reread = datasets._registry._read(datasets.info(name), out)
    mirror = datasets.load(name)
    assert dict(reread.uns["dataset"]) == dict(mirror.uns["dataset"])
    if hasattr(mirror, "mod"):
        assert list(reread.mod) == list(mirror.mod)
        _same_frame(reread.obs, mirror.obs, "mdata.obs")
        for mod in mirror.mod:
            _same_anndata(reread.mod[mod], mirror.mod[mod], f"{name}[{mod}]")
    else:
        _same_anndata(reread, mirror, name)
