"""TileDB-SOMA experiments as an input: ``prepare`` writes the shards an ``.h5ad`` of the same cells
gives, ``open_soma`` streams the same values into pretraining, an obs filter selects cells, and
bad experiments, measurements, layers and filters are refused with the option that fixes them.

Every experiment here is written locally by ``tiledbsoma.io.from_anndata``; nothing needs the network.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

tiledbsoma = pytest.importorskip("tiledbsoma")
import tiledbsoma.io  # noqa: E402

from cellweave._exceptions import CellWeaveInputError  # noqa: E402
from cellweave.data import (  # noqa: E402
    EpochShuffleSampler,
    SomaCorpus,
    SomaSelection,
    Tokenizer,
    TokenDataset,
    build_vocabulary,
    is_soma,
    open_soma,
    open_store,
    prepare_store,
    read_store_manifest,
    soma_vocabulary,
)

DATASET = "scrna_pbmc4k_10x_soupx"  # 10x PBMC counts with cell types; the first 400 cells
N_CELLS = 400


@pytest.fixture(scope="module")
def pbmc(tmp_path_factory):
    """The same 400 cells as ``pbmc.h5ad`` and as a SOMA experiment ``pbmc/``, and their vocabulary."""
    from cellweave import datasets

    folder = tmp_path_factory.mktemp("soma")
    adata = datasets.load(DATASET)[:N_CELLS].copy()
    adata.write_h5ad(folder / "pbmc.h5ad")
    tiledbsoma.io.from_anndata(str(folder / "pbmc"), adata, measurement_name="RNA")
    vocab, _ = build_vocabulary({"pbmc": adata}, min_cells=3)
    return {"adata": adata, "h5ad": folder / "pbmc.h5ad", "exp": str(folder / "pbmc"), "vocab": vocab}


def _items(corpora, *, mode: str, n_targets: int = 0) -> list[dict]:
    ds = TokenDataset(corpora, Tokenizer({"rna": 48}), mode=mode, seed=5, n_targets=n_targets)
    return [ds[i] for i in range(len(ds))]


def _assert_same_tokens(a_corpora, b_corpora) -> None:
    for mode in ("train", "eval", "embed"):
        a, b = _items(a_corpora, mode=mode, n_targets=8), _items(b_corpora, mode=mode, n_targets=8)
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.keys() == y.keys()
            for k in x:
                assert np.array_equal(x[k], y[k]), (mode, i, k)


def _shard_arrays(store: Path) -> dict[str, np.ndarray]:
    """Every array of every shard, by (shard position, file name): shard folder names hold the source's hash."""
    out = {}
    for k, folder in enumerate(sorted((store / "shards").iterdir())):
        for f in sorted(folder.glob("*.npy")):
            out[f"{k}/{f.name}"] = np.load(f, allow_pickle=False)
    return out


def test_is_soma(pbmc, tmp_path):
    assert is_soma(pbmc["exp"]) and is_soma(f"file://{pbmc['exp']}")
    assert is_soma("s3://cellxgene-census-public-us-west-2/cell-census/2025-01-30/soma/census_data/homo_sapiens")
    assert is_soma("tiledb://tiledb-inc/census")
    assert not is_soma(pbmc["h5ad"]) and not is_soma(tmp_path) and not is_soma(tmp_path / "missing")


def test_prepare_from_soma_equals_prepare_from_h5ad(pbmc, tmp_path):
    vocab = pbmc["vocab"]
    from_soma = prepare_store([pbmc["exp"]], tmp_path / "s", vocab=vocab, chunk_size=150)
    from_file = prepare_store([pbmc["h5ad"]], tmp_path / "f", vocab=vocab, chunk_size=150)
    [s], [f] = from_soma["sources"], from_file["sources"]
    assert s["read"] == "soma" and f["read"] == "backed" and s["name"] == f["name"] == "pbmc"
    for key in ("n_cells", "modalities", "x_kind", "n_columns", "coverage"):
        assert s[key] == f[key], key
    assert s["n_cells"] == N_CELLS and len(s["shards"]) == 3  # 150 + 150 + 100
    assert s["soma"]["uri"] == s["path"] == pbmc["exp"]
    assert (s["soma"]["measurement"], s["soma"]["layer"], s["soma"]["var_column"]) == ("RNA", "data", "var_id")
    assert s["soma"]["value_filter"] is None and s["soma"]["n_cells"] == N_CELLS
    a, b = _shard_arrays(tmp_path / "s"), _shard_arrays(tmp_path / "f")
    assert a.keys() == b.keys() and "0/rna.library.npy" in a
    for key in a:
        assert np.array_equal(a[key], b[key]), key  # bit for bit, cell names and library sizes included
    [cs], [cf] = open_store(tmp_path / "s"), open_store(tmp_path / "f")
    assert cs.obs.equals(cf.obs)
    # The same experiment again (same files, same selection) is recognised and skipped.
    again = prepare_store([pbmc["exp"]], tmp_path / "s", vocab=vocab, append=True)
    assert again["sources"] == from_soma["sources"]


def test_open_soma_streams_the_values_prepare_writes(pbmc, tmp_path):
    vocab = pbmc["vocab"]
    prepare_store([pbmc["h5ad"]], tmp_path / "f", vocab=vocab, chunk_size=150)
    [stored] = open_store(tmp_path / "f")
    [streamed] = open_soma(pbmc["exp"], vocab=vocab, block_size=64, cache_blocks=8)
    assert isinstance(streamed, SomaCorpus) and len(streamed) == N_CELLS and streamed.name == "pbmc"
    assert streamed.coverage == stored.coverage and streamed.source["soma"]["layer"] == "data"
    np.testing.assert_array_equal(streamed.blocks[0].token_ids, stored.blocks[0].token_ids)
    _assert_same_tokens([stored], [streamed])
    # What pretraining does with a corpus: subsets, column sums, counts per cell, rows in memory.
    idx = np.sort(np.random.default_rng(0).permutation(N_CELLS)[:170])  # as pretraining's splits
    ss, fs = streamed.subset(idx), stored.subset(idx)
    _assert_same_tokens([fs], [ss])
    sv, fv = ss.blocks[0].values, fs.blocks[0].values
    assert (sv.tocsr() != fv.tocsr()).nnz == 0 and sv.shape == fv.shape
    np.testing.assert_allclose(sv.sum(axis=0), fv.sum(axis=0), rtol=1e-6)
    assert ss.obs.equals(fs.obs) and "rna_library" in ss.obs
    # Sent to a DataLoader worker or a DDP process it carries the URI, the read time and the
    # column plan (a vocabulary id per var column), not the cached values.
    blob = pickle.dumps(ss)
    assert len(blob) < 12 * len(pbmc["adata"].var) < sv.tocsr().nnz * 8
    _assert_same_tokens([fs], [pickle.loads(blob)])
    # The sampler reads every block of 64 cells once an epoch (a plain permutation would read one per cell).
    [fresh] = open_soma(pbmc["exp"], vocab=vocab, block_size=64, cache_blocks=2)
    ds = TokenDataset([fresh.subset(idx)], Tokenizer({"rna": 48}), mode="train", seed=1)
    sampler = EpochShuffleSampler(ds, seed=0)
    n_blocks = np.unique(idx // 64).size
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(idx)))
        for i in order:
            ds[i]
        # each block once (a block of the last window may still be cached when the next epoch starts)
        assert epoch * n_blocks < fresh.reads <= (epoch + 1) * n_blocks
    assert n_blocks == 7 and order != sorted(order)
    # The vocabulary pretraining builds from the experiment is the one it builds from the file.
    assert soma_vocabulary(pbmc["exp"], min_cells=3).sha256 == vocab.sha256


def test_filter_selects_cells(pbmc, tmp_path):
    adata, vocab = pbmc["adata"], pbmc["vocab"]
    cell_type = str(adata.obs["cell_type"].value_counts().index[1])
    expected = adata.obs_names[adata.obs["cell_type"] == cell_type]
    assert 0 < len(expected) < N_CELLS
    selection = SomaSelection(value_filter=f"cell_type == '{cell_type}'")
    [corpus] = open_soma(pbmc["exp"], vocab=vocab, selection=selection)
    assert len(corpus) == len(expected) and list(corpus.obs_names) == list(expected)
    manifest = prepare_store([pbmc["exp"]], tmp_path / "s", vocab=vocab, soma=selection)
    [src] = manifest["sources"]
    assert src["n_cells"] == len(expected) and src["soma"]["value_filter"] == selection.value_filter
    assert src["soma"]["n_obs_total"] == N_CELLS
    # Another selection of the same experiment is another source, not a duplicate.
    everything = prepare_store([pbmc["exp"]], tmp_path / "s", vocab=vocab, append=True)
    assert [s["n_cells"] for s in everything["sources"]] == [len(expected), N_CELLS]
    assert everything["sources"][0]["sha256"] != everything["sources"][1]["sha256"]
    with pytest.raises(CellWeaveInputError, match="selects no cell.*--soma-filter"):
        open_soma(pbmc["exp"], vocab=vocab, selection=SomaSelection(value_filter="cell_type == 'no such type'"))


def test_bad_experiments_are_refused_with_the_fix(pbmc, tmp_path):
    vocab, exp = pbmc["vocab"], pbmc["exp"]
    with pytest.raises(CellWeaveInputError, match="does not exist.*Check the path"):
        open_soma(tmp_path / "missing", vocab=vocab)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CellWeaveInputError, match="not a readable TileDB-SOMA experiment.*from_anndata"):
        open_soma(tmp_path / "empty", vocab=vocab)
    with pytest.raises(CellWeaveInputError, match=r"no measurement 'ATAC'; it has \['RNA'\].*--soma-measurement"):
        open_soma(exp, vocab=vocab, selection=SomaSelection(measurement="ATAC"))
    with pytest.raises(CellWeaveInputError, match=r"no X layer 'raw'.*\['data'\].*--soma-layer"):
        open_soma(exp, vocab=vocab, selection=SomaSelection(layer="raw"))
    with pytest.raises(CellWeaveInputError, match="no column 'symbol'.*--soma-var-column"):
        open_soma(exp, vocab=vocab, selection=SomaSelection(var_column="symbol"))
    with pytest.raises(CellWeaveInputError, match="cannot be applied.*--soma-filter"):
        open_soma(exp, vocab=vocab, selection=SomaSelection(value_filter="no_such_column == 3"))
    # prepare refuses before it writes anything
    with pytest.raises(CellWeaveInputError, match="--soma-layer"):
        prepare_store([exp], tmp_path / "store", vocab=vocab, soma=SomaSelection(layer="raw"))
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_cli_prepare_mixed_inputs_and_pretrain_from_soma(pbmc, tmp_path):
    """``cellweave prepare EXPERIMENT FILE --out STORE``, then pretraining streamed straight from
    the experiment: the same model as pretraining from the file, listed with its SOMA source."""
    import torch

    from cellweave import datasets, tl
    from cellweave.cli import main
    from cellweave.models import CellWeave
    from cellweave.train import pretrain

    store = tmp_path / "store"
    other = "celltypist_sample_559cells"
    assert main(["prepare", pbmc["exp"], other, "--out", str(store), "--chunk-size", "250",
                 "--soma-filter", "nUMIs > 0"]) == 0
    manifest = read_store_manifest(store)
    assert [s["name"] for s in manifest["sources"]] == ["pbmc", other]
    assert [s["n_cells"] for s in manifest["sources"]] == [N_CELLS, 559]
    assert manifest["sources"][0]["soma"]["value_filter"] == "nUMIs > 0"
    assert manifest["sources"][1]["path"] == str(datasets.path(other).resolve())

    tiny = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, value_encoding="log1p",
                context_length={"rna": 32, "prot": 0, "atac": 0, "gene_activity": 0})
    kw = dict(max_epochs=1, batch_size=40, seed=0, progress=False, config_overrides=tiny)
    streamed = pretrain(None, store=pbmc["exp"], out=tmp_path / "m_soma", **kw)
    from_file = pretrain({"pbmc": pbmc["adata"]}, out=tmp_path / "m_file", **kw)
    [record] = streamed.card["data"]
    assert record["soma"]["uri"] == pbmc["exp"] and record["soma"]["n_cells"] == N_CELLS
    assert record["n_train"] + record["n_val"] == N_CELLS == from_file.card["data"][0]["n_train"] + 40
    assert streamed.vocab.sha256 == from_file.vocab.sha256
    with pytest.raises(CellWeaveInputError, match="soma= selects cells of a TileDB-SOMA experiment"):
        pretrain({"pbmc": pbmc["adata"]}, out=tmp_path / "m_bad", soma=SomaSelection(), **kw)
    for (k, v), w in zip(streamed.module.state_dict().items(), from_file.module.state_dict().values()):
        assert torch.equal(v, w), k
    card = json.loads((tmp_path / "m_soma" / "model_card.json").read_text())
    assert card["data"][0]["soma"]["layer"] == "data"
    model = CellWeave.load(tmp_path / "m_soma")
    adata = pbmc["adata"].copy()
    tl.embed(adata, model=model, progress=False)
    assert adata.obsm["X_cellweave"].shape[0] == N_CELLS and np.isfinite(adata.obsm["X_cellweave"]).all()


def test_cli_pretrain_from_a_filtered_experiment(pbmc, tmp_path):
    """``cellweave pretrain EXPERIMENT --soma-filter ...`` streams the selected cells only."""
    from cellweave.cli import main
    from cellweave.models import CellWeave

    args = ["pretrain", pbmc["exp"], "--out", str(tmp_path / "m_cli"), "--max-steps", "2",
            "--max-epochs", "1", "--batch-size", "50", "--soma-filter", "nUMIs > 3000"]
    assert main(args + ["--soma-config", "sm.compute_concurrency_level"]) == 2  # KEY=VALUE, refused up front
    assert main(args + ["--soma-config", "sm.compute_concurrency_level=2"]) == 0
    n_selected = int((pbmc["adata"].obs["nUMIs"] > 3000).sum())
    [cli_record] = CellWeave.load(tmp_path / "m_cli").card["data"]
    assert cli_record["soma"]["n_cells"] == n_selected == cli_record["n_train"] + cli_record["n_val"] < N_CELLS
    assert cli_record["soma"]["value_filter"] == "nUMIs > 3000"
    assert cli_record["soma"]["tiledb_config_keys"] == ["sm.compute_concurrency_level"]
