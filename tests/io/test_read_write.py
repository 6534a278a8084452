"""cellweave.io.read / write: formats, round trips, atomic writes and every error path."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

import cellweave.io as cio
from cellweave._exceptions import CellWeaveInputError
from cellweave.data import synthetic_adata, synthetic_mudata


@pytest.fixture(scope="module")
def adata():
    return synthetic_adata(n_cells=30, n_genes=40, seed=1)


@pytest.fixture(scope="module")
def mdata():
    return synthetic_mudata(n_cells=30, n_genes=40, n_proteins=5, n_peaks=20, missing={"prot": 0.2}, seed=1)


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


def test_h5ad_round_trip(tmp_path, adata) -> None:
    path = tmp_path / "a.h5ad"
    cio.write(adata, path)
    back = cio.read(path)
    assert isinstance(back, ad.AnnData)
    assert (back.X != adata.X).nnz == 0
    assert back.var["gene_id"].tolist() == adata.var["gene_id"].tolist()
    assert back.obs["cell_type"].tolist() == adata.obs["cell_type"].tolist()
    assert _no_temp_files(tmp_path)


def test_h5mu_round_trip_keeps_missing_cells(tmp_path, mdata) -> None:
    import mudata as md

    path = tmp_path / "m.h5mu"
    cio.write(mdata, path)
    back = cio.read(path)
    assert isinstance(back, md.MuData)
    assert set(back.mod) == {"rna", "prot", "atac"}
    assert back["prot"].n_obs == mdata["prot"].n_obs < back.n_obs
    assert back.obs["cell_type"].tolist() == mdata.obs["cell_type"].tolist()
    assert _no_temp_files(tmp_path)


def _write_10x_mtx(folder: Path, X: sp.csr_matrix, genes: list[str], gz: bool, prefix: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    ext = ".gz" if gz else ""
    with opener(folder / f"{prefix}matrix.mtx{ext}", "wb") as fh:
        scipy.io.mmwrite(fh, sp.csr_matrix(X.T).astype(np.int64))  # 10x stores features x cells
    with opener(folder / f"{prefix}features.tsv{ext}", "wt") as fh:
        for i, g in enumerate(genes):
            fh.write(f"ENSG{i:011d}\t{g}\tGene Expression\n")
    with opener(folder / f"{prefix}barcodes.tsv{ext}", "wt") as fh:
        for i in range(X.shape[0]):
            fh.write(f"CELL{i}-1\n")


@pytest.mark.parametrize("gz", [True, False])
def test_10x_mtx_folder_and_file(tmp_path, adata, gz) -> None:
    folder = tmp_path / "mtx"
    _write_10x_mtx(folder, adata.X, list(adata.var_names), gz)
    for target in (folder, folder / ("matrix.mtx.gz" if gz else "matrix.mtx")):
        back = cio.read(target)
        assert back.shape == adata.shape
        np.testing.assert_array_equal(back.X.toarray(), adata.X.toarray())
        assert list(back.var_names) == list(adata.var_names)


def test_10x_mtx_with_prefix(tmp_path, adata) -> None:
    folder = tmp_path / "mtx"
    _write_10x_mtx(folder, adata.X, list(adata.var_names), gz=True, prefix="sample1_")
    back = cio.read(folder / "sample1_matrix.mtx.gz")
    assert back.shape == adata.shape


def test_10x_legacy_genes_tsv(tmp_path, adata) -> None:
    folder = tmp_path / "v2"
    _write_10x_mtx(folder, adata.X, list(adata.var_names), gz=False)
    features = (folder / "features.tsv").read_text().splitlines()
    (folder / "genes.tsv").write_text("".join("\t".join(l.split("\t")[:2]) + "\n" for l in features))
    (folder / "features.tsv").unlink()
    back = cio.read(folder)
    assert back.shape == adata.shape and list(back.var_names) == list(adata.var_names)


def test_loom_needs_loompy(tmp_path) -> None:
    import importlib.util

    if importlib.util.find_spec("loompy") is not None:
        pytest.skip("loompy is installed")
    path = tmp_path / "a.loom"
    path.write_bytes(b"\x89HDF")
    with pytest.raises(CellWeaveInputError, match="pip install loompy"):
        cio.read(path)


def test_loom_round_trip(tmp_path, adata) -> None:
    pytest.importorskip("loompy")
    path = tmp_path / "a.loom"
    small = ad.AnnData(X=adata.X.copy(), obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))
    small.write_loom(path)
    back = cio.read(path)
    assert back.shape == adata.shape


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CellWeaveInputError, match="File not found.*Check the path"):
        cio.read(tmp_path / "nope.h5ad")


def test_empty_file(tmp_path) -> None:
    path = tmp_path / "empty.h5ad"
    path.touch()
    with pytest.raises(CellWeaveInputError, match="0 bytes.*again"):
        cio.read(path)


def test_unknown_suffix_lists_supported(tmp_path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(CellWeaveInputError, match=r"unknown suffix '\.csv'.*\.h5ad.*\.h5mu.*\.loom"):
        cio.read(path)


def test_unparseable_file_is_wrapped(tmp_path) -> None:
    path = tmp_path / "broken.h5ad"
    path.write_bytes(b"this is not an HDF5 file at all" * 10)
    with pytest.raises(CellWeaveInputError, match="Could not parse.*re-export") as info:
        cio.read(path)
    assert info.value.__cause__ is not None


def test_truncated_h5ad_is_wrapped(tmp_path, adata) -> None:
    path = tmp_path / "cut.h5ad"
    adata.write_h5ad(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CellWeaveInputError, match="Could not parse"):
        cio.read(path)


def test_h5_file_that_is_not_10x_is_wrapped(tmp_path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as fh:
        fh["x"] = np.arange(3)
    with pytest.raises(CellWeaveInputError, match="10x Genomics HDF5"):
        cio.read(path)


def test_folder_without_matrix(tmp_path) -> None:
    with pytest.raises(CellWeaveInputError, match="without matrix.mtx"):
        cio.read(tmp_path)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_zero_cells_or_features(tmp_path, shape) -> None:
    path = tmp_path / "z.h5ad"
    ad.AnnData(X=np.zeros(shape, dtype=np.float32)).write_h5ad(path)
    with pytest.raises(CellWeaveInputError, match=f"{shape[0]} cells and {shape[1]} features"):
        cio.read(path)


def test_write_wrong_suffix(tmp_path, adata, mdata) -> None:
    with pytest.raises(CellWeaveInputError, match=r"\.h5ad.*Use 'a\.h5ad'"):
        cio.write(adata, tmp_path / "a.h5mu")
    with pytest.raises(CellWeaveInputError, match=r"\.h5mu.*Use 'm\.h5mu'"):
        cio.write(mdata, tmp_path / "m.h5ad")
    with pytest.raises(CellWeaveInputError, match="AnnData or MuData"):
        cio.write(np.zeros((2, 2)), tmp_path / "x.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path, adata, monkeypatch) -> None:
    path = tmp_path / "a.h5ad"
    seen: dict[str, object] = {}
    original = ad.AnnData.write_h5ad

    def spy(self, filename, *args, **kwargs):
        # While writing, the target does not exist yet and the temp file keeps the suffix.
        seen["target_exists"] = path.exists()
        seen["tmp"] = Path(filename)
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(ad.AnnData, "write_h5ad", spy)
    cio.write(adata, path)
    assert seen["target_exists"] is False
    assert seen["tmp"].suffix == ".h5ad" and seen["tmp"].parent == tmp_path and seen["tmp"] != path
    assert path.is_file() and not seen["tmp"].exists()
    assert _no_temp_files(tmp_path)


def test_failed_write_leaves_nothing(tmp_path, adata, monkeypatch) -> None:
    def boom(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half")  # a partial file, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", boom)
    with pytest.raises(OSError, match="disk full"):
        cio.write(adata, tmp_path / "a.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path, adata, monkeypatch) -> None:
    path = tmp_path / "a.h5ad"
    cio.write(adata, path)
    before = path.read_bytes()

    def boom(self, filename, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", boom)
    with pytest.raises(OSError):
        cio.write(adata[:5].copy(), path)
    assert path.read_bytes() == before
    assert _no_temp_files(tmp_path)
