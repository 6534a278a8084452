"""The token store: cells give the same tokens from the store as from memory, in bounded chunks,
appended without rewriting, refused under other settings, and clean after a killed prepare."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import (
    StoreCorpus,
    Tokenizer,
    TokenDataset,
    build_vocabulary,
    corpus_counts,
    open_store,
    prepare_cells,
    prepare_store,
    read_store_manifest,
    synthetic_adata,
    synthetic_mudata,
)

REAL = "celltypist_sample_559cells"  # 559 cells x the 10x gene panel: the smallest real RNA counts dataset


def _items(corpora, *, mode: str, seed: int = 3, context: int = 40, n_targets: int = 0,
           selection: str = "value", hvg_tokens: int = 0) -> list[dict]:
    tokenizer = Tokenizer({"rna": context, "prot": 16, "atac": 16, "gene_activity": 16}, selection=selection,
                          hvg_tokens=hvg_tokens)
    ds = TokenDataset(corpora, tokenizer, mode=mode, seed=seed, n_targets=n_targets)
    return [ds[i] for i in range(len(ds))]


def _assert_same_tokens(mem_corpora, store_corpora, **kw) -> None:
    for mode in ("eval", "train", "embed"):
        a, b = _items(mem_corpora, mode=mode, **kw), _items(store_corpora, mode=mode, **kw)
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.keys() == y.keys()
            for k in x:
                assert np.array_equal(x[k], y[k]), (mode, i, k)


def _shard_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / "shards").rglob("*.npy"))}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Two synthetic .h5ad files (different cells) and a vocabulary covering their genes."""
    folder = tmp_path_factory.mktemp("synthetic")
    a = synthetic_adata(n_cells=230, n_genes=150, seed=0)
    b = synthetic_adata(n_cells=90, n_genes=150, seed=1)
    b.obs_names = [f"b_{n}" for n in b.obs_names]
    vocab, _ = build_vocabulary({"a": a, "b": b}, min_cells=1)
    a.write_h5ad(folder / "a.h5ad")
    b.write_h5ad(folder / "b.h5ad")
    return {"a": a, "b": b, "vocab": vocab, "a_path": folder / "a.h5ad", "b_path": folder / "b.h5ad"}


@pytest.mark.parametrize("value_encoding", ["log1p", "quantile"])
def test_round_trip_synthetic(synthetic, tmp_path, value_encoding):
    vocab, a = synthetic["vocab"], synthetic["a"]
    manifest = prepare_store([synthetic["a_path"]], tmp_path / "store", vocab=vocab, value_encoding=value_encoding,
                             chunk_size=64)
    assert manifest["n_cells"] == 230 and len(manifest["sources"][0]["shards"]) == 4  # 64 + 64 + 64 + 38
    [store] = open_store(tmp_path / "store", vocab=vocab, value_encoding=value_encoding, verify=True)
    assert isinstance(store, StoreCorpus) and len(store) == 230 and store.name == "a"
    mem = prepare_cells(a, vocab, dataset="a", value_encoding=value_encoding)
    _assert_same_tokens([mem], [store], n_targets=8)
    # Tokens chosen by deviation from the gene means read the same means from a store.
    _assert_same_tokens([mem], [store], selection="deviation")
    assert store.blocks[0].feature_mean is not None
    np.testing.assert_allclose(store.blocks[0].feature_mean, mem.blocks[0].feature_mean, rtol=1e-5)
    # Tokens from the HVGs: the same genes ranked from a store.
    _assert_same_tokens([mem], [store], hvg_tokens=60)
    assert store.blocks[0].variable_columns[60].tolist() == mem.blocks[0].variable_columns[60].tolist()
    assert store.blocks[0].variable_columns[60].size == 60
    # What pretraining does with a corpus: train/val subsets, column sums of present cells, counts.
    idx = np.random.default_rng(0).permutation(230)[:150]
    s_sub, m_sub = store.subset(idx), mem.subset(idx)
    _assert_same_tokens([m_sub], [s_sub])
    sb, mb = s_sub.blocks[0], m_sub.blocks[0]
    assert (sb.values.tocsr() != mb.values).nnz == 0 and sb.values.shape == mb.values.shape
    np.testing.assert_allclose(np.asarray(sb.values[sb.present].sum(axis=0)).ravel(),
                               np.asarray(mb.values[mb.present].sum(axis=0)).ravel(), rtol=1e-5)
    np.testing.assert_allclose(sb.values.sum(axis=1).ravel(), np.asarray(mb.values.sum(axis=1)).ravel(), rtol=1e-5)
    assert list(s_sub.obs.index) == list(m_sub.obs.index)
    np.testing.assert_array_equal(s_sub.obs["rna_library"], m_sub.obs["rna_library"])
    if value_encoding == "log1p":
        assert (corpus_counts(s_sub, "log1p") != corpus_counts(m_sub, "log1p")).nnz == 0
    # Sent to a spawned DataLoader worker or DDP process, a store corpus carries paths, not values.
    blob = pickle.dumps(s_sub)
    assert len(blob) < 20_000 < sb.values.nnz * 8
    _assert_same_tokens([m_sub], [pickle.loads(blob)])


def test_round_trip_mudata_read_whole(tmp_path):
    """.h5mu inputs are read whole, then written in shards: unpaired cells keep their ``present``."""
    mdata = synthetic_mudata(n_cells=120, seed=0)
    vocab, _ = build_vocabulary({"m": mdata}, min_cells=1)
    mdata.write(tmp_path / "m.h5mu")
    manifest = prepare_store([tmp_path / "m.h5mu"], tmp_path / "store", vocab=vocab, chunk_size=50)
    assert manifest["sources"][0]["read"] == "whole" and len(manifest["sources"][0]["shards"]) == 3
    [store] = open_store(tmp_path / "store")
    mem = prepare_cells(mdata, vocab, dataset="m")
    assert store.modalities == mem.modalities and len(store.modalities) > 1
    for s, m in zip(store.blocks, mem.blocks):
        np.testing.assert_array_equal(s.present, m.present)
    _assert_same_tokens([mem], [store])


@pytest.fixture(scope="module")
def real_model():
    from cellweave.models import CellWeave

    return CellWeave.load()  # the shipped default: its vocabulary and value encoding


def test_round_trip_real_dataset(tmp_path, real_model):
    from cellweave import datasets

    path = datasets.path(REAL)
    enc = real_model.config.value_encoding
    prepare_store([path], tmp_path / "store", vocab=real_model.vocab, value_encoding=enc, chunk_size=100)
    [store] = open_store(tmp_path / "store", vocab=real_model.vocab, value_encoding=enc)
    mem = prepare_cells(datasets.load(REAL), real_model.vocab, dataset=REAL, value_encoding=enc)
    assert len(store) == len(mem) == 559
    assert store.coverage[0]["n_in_vocab"] == mem.coverage[0]["n_in_vocab"] > 1000
    _assert_same_tokens([mem], [store], context=real_model.config.context_length["rna"])


def test_chunked_store_equals_one_chunk(synthetic, tmp_path):
    vocab, path = synthetic["vocab"], synthetic["a_path"]
    prepare_store([path], tmp_path / "small", vocab=vocab, chunk_size=17)
    prepare_store([path], tmp_path / "whole", vocab=vocab, chunk_size=10_000)
    small, whole = read_store_manifest(tmp_path / "small"), read_store_manifest(tmp_path / "whole")
    assert len(small["sources"][0]["shards"]) == 14 and len(whole["sources"][0]["shards"]) == 1
    for key in ("n_cells", "modalities", "coverage", "x_kind", "sha256", "n_columns"):
        assert small["sources"][0][key] == whole["sources"][0][key]
    [s], [w] = open_store(tmp_path / "small"), open_store(tmp_path / "whole")
    sx, wx = s.blocks[0].values, w.blocks[0].values
    np.testing.assert_array_equal(sx.indptr, wx.indptr)
    np.testing.assert_array_equal(sx.indices[:], wx.indices[:])
    np.testing.assert_array_equal(sx.data[:], wx.data[:])  # bit for bit: normalization is per cell
    np.testing.assert_array_equal(s.blocks[0].token_ids, w.blocks[0].token_ids)
    assert s.obs.equals(w.obs)


def test_store_reads_only_the_rows_asked_for(synthetic, tmp_path, monkeypatch):
    """Rows are read by positional reads of their own values: sums and ``tocsr`` of a few cells
    read those cells' bytes (a memory map read at random grew the resident memory with the store)."""
    vocab = synthetic["vocab"]
    prepare_store([synthetic["a_path"]], tmp_path / "store", vocab=vocab, chunk_size=100)  # shards 100 + 100 + 30
    [store] = open_store(tmp_path / "store", vocab=vocab)
    mem = prepare_cells(synthetic["a"], vocab, dataset="a", value_encoding=store.value_encoding)
    read = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: read.append(n) or real_pread(fd, n, off))
    rows = np.array([150, 3, 7, 8, 9, 150, 229])  # out of order, across shards, a repeat, a run of three
    sub, msub = store.blocks[0].values[rows], mem.blocks[0].values[rows]
    assert (sub.tocsr() != msub).nnz == 0
    own_bytes = int(np.diff(sub.indptr).sum()) * 8  # float32 value + int32 column per stored value
    assert 0 < sum(read) <= own_bytes
    read.clear()
    np.testing.assert_allclose(np.asarray(sub.sum(axis=0)).ravel(), np.asarray(msub.sum(axis=0)).ravel(), rtol=1e-6)
    assert sum(read) <= own_bytes
    # The tokenizer's route (row slices) reads the same bytes as the in-memory matrix holds.
    np.testing.assert_array_equal(sub.data[int(sub.indptr[2]):int(sub.indptr[5])],
                                  msub.data[int(msub.indptr[2]):int(msub.indptr[5])])


def test_append_adds_shards_and_keeps_old_ones(synthetic, tmp_path, caplog):
    vocab, store = synthetic["vocab"], tmp_path / "store"
    prepare_store([synthetic["a_path"]], store, vocab=vocab, chunk_size=100)
    before = _shard_bytes(store)
    manifest = prepare_store([synthetic["b_path"]], store, vocab=vocab, chunk_size=100, append=True)
    after = _shard_bytes(store)
    assert {k: after[k] for k in before} == before  # old shards byte-identical
    assert len(after) > len(before)
    assert [s["name"] for s in manifest["sources"]] == ["a", "b"] and manifest["n_cells"] == 320
    with caplog.at_level(logging.INFO, logger="cellweave.data._store"):
        again = prepare_store([synthetic["a_path"], synthetic["b_path"]], store, vocab=vocab, append=True)
    assert "already in the store" in caplog.text and again["sources"] == manifest["sources"]
    assert _shard_bytes(store) == after
    corpora = open_store(store)
    assert [len(c) for c in corpora] == [230, 90]
    mem = [prepare_cells(synthetic[k], vocab, dataset=k) for k in ("a", "b")]
    _assert_same_tokens(mem, corpora)
    with pytest.raises(CellWeaveInputError, match="already holds a token store.*--append"):
        prepare_store([synthetic["b_path"]], store, vocab=vocab)


def test_refuses_other_vocabulary_or_encoding(synthetic, tmp_path):
    vocab, store = synthetic["vocab"], tmp_path / "store"
    prepare_store([synthetic["a_path"]], store, vocab=vocab, value_encoding="log1p")
    other, _ = build_vocabulary({"a": synthetic["a"][:, :100]}, min_cells=1)
    with pytest.raises(CellWeaveInputError, match=r"vocabulary of 150 features.*not the given one of 100.*--out"):
        prepare_store([synthetic["b_path"]], store, vocab=other, append=True)
    with pytest.raises(CellWeaveInputError, match=r"value_encoding 'log1p', not 'quantile'.*--model"):
        prepare_store([synthetic["b_path"]], store, vocab=vocab, value_encoding="quantile", append=True)
    with pytest.raises(CellWeaveInputError, match="vocabulary.*value_encoding"):
        open_store(store, vocab=other, value_encoding="quantile")
    assert len(read_store_manifest(store)["sources"]) == 1
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(CellWeaveInputError, match="other files"):
        prepare_store([synthetic["a_path"]], tmp_path / "foreign", vocab=vocab)


def test_killed_prepare_is_cleaned_up(synthetic, tmp_path, caplog, monkeypatch):
    from cellweave.data import _store

    vocab, store = synthetic["vocab"], tmp_path / "store"
    # A prepare of two files killed while writing the second one's second shard.
    real_write = _store._write_shard
    calls = {"n": 0}

    def dying_write(shards_dir, name, corpus):
        calls["n"] += 1
        if calls["n"] == 5:  # a: shards 1-3; b: shard 4 done, dies inside shard 5 (half-written temporary)
            tmp = shards_dir / f".tmp-{name}.{os.getpid()}"
            tmp.mkdir()
            (tmp / "rna.data.npy").write_bytes(b"half")
            raise KeyboardInterrupt
        return real_write(shards_dir, name, corpus)

    monkeypatch.setattr(_store, "_write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_store([synthetic["a_path"], synthetic["b_path"]], store, vocab=vocab, chunk_size=80)
    monkeypatch.setattr(_store, "_write_shard", real_write)
    manifest = read_store_manifest(store)
    assert [s["name"] for s in manifest["sources"]] == ["a"]  # b never reached the manifest
    listed = {sh["name"] for sh in manifest["sources"][0]["shards"]}
    on_disk = {p.name for p in (store / "shards").iterdir()}
    assert len(on_disk - listed) == 2  # b's finished shard and the half-written temporary
    assert [len(c) for c in open_store(store)] == [230]  # readers see only what the manifest lists
    # A manifest temporary of a dead writer, too (pid 2**22 + 1 is above Linux's pid_max default).
    (store / f".manifest.json.{2**22 + 1}.abc123.tmp.json").write_text("{")
    with caplog.at_level(logging.WARNING, logger="cellweave.data._store"):
        manifest = prepare_store([synthetic["a_path"], synthetic["b_path"]], store, vocab=vocab, chunk_size=80,
                                 append=True)
    assert "Removed 3 leftovers of an interrupted prepare" in caplog.text
    listed = {sh["name"] for s in manifest["sources"] for sh in s["shards"]}
    assert {p.name for p in (store / "shards").iterdir()} == listed
    assert not list(store.glob(".manifest.json.*"))
    assert [len(c) for c in open_store(store, verify=True)] == [230, 90]


def test_open_store_refuses_a_changed_shard(synthetic, tmp_path):
    store = tmp_path / "store"
    prepare_store([synthetic["a_path"]], store, vocab=synthetic["vocab"])
    data = next((store / "shards").glob("*/rna.data.npy"))
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    open_store(store)  # same size: only verify=True reads the bytes
    with pytest.raises(CellWeaveInputError, match="differs from the manifest"):
        open_store(store, verify=True)
    with pytest.raises(CellWeaveInputError, match="not a token store.*cellweave prepare"):
        open_store(tmp_path)


def test_cli_prepare_end_to_end(tmp_path, real_model, capsys):
    from cellweave import datasets
    from cellweave.cli import main

    store = tmp_path / "store"
    assert main(["prepare", REAL, "--out", str(store), "--chunk-size", "200"]) == 0
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["vocabulary"]["sha256"] == real_model.vocab.sha256
    assert manifest["value_encoding"] == real_model.config.value_encoding
    [src] = manifest["sources"]
    assert src["name"] == REAL and src["n_cells"] == 559 and len(src["shards"]) == 3
    assert src["sha256"] == _sha(datasets.path(REAL)) and src["coverage"][0]["modality"] == "rna"
    assert [len(c) for c in open_store(store, vocab=real_model.vocab)] == [559]
    capsys.readouterr()
    assert main(["prepare", REAL, "--out", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a token store" in err and "--append" in err
    assert main(["prepare", REAL, "--out", str(store), "--append"]) == 0
    assert read_store_manifest(store)["n_cells"] == 559
    # embed from the store (bounded memory) gives the embeddings of embedding the file itself
    import anndata as ad

    from cellweave import tl

    out = tmp_path / "emb.h5ad"
    assert main(["embed", str(store), "--out", str(out)]) == 0
    got = ad.read_h5ad(out)
    adata = datasets.load(REAL)
    tl.embed(adata, model=real_model, progress=False)
    assert list(got.obs_names) == list(adata.obs_names) and (got.obs["dataset"] == REAL).all()
    np.testing.assert_allclose(got.obsm["X_cellweave"], adata.obsm["X_cellweave"], rtol=1e-5, atol=1e-5)
    assert got.uns["cellweave"]["X_cellweave"]["model_sha256"] == real_model.model_hash
    assert main(["embed", str(store), "--out", str(tmp_path / "emb.h5mu")]) == 2


def _sha(path) -> str:
    from cellweave._io_utils import sha256_file

    return sha256_file(path)


def test_pretrain_from_a_store_matches_pretraining_from_the_files(tmp_path) -> None:
    """``pretrain(store=...)`` reads the memory-mapped shards and trains exactly as from the files
    (same vocabulary, same cells, same tokens), here to identical weights."""
    import torch

    from cellweave.data import store_vocabulary
    from cellweave.train import pretrain

    a = synthetic_adata(n_cells=90, n_genes=120, seed=3)
    a.write_h5ad(tmp_path / "a.h5ad")
    vocab, _ = build_vocabulary({"a": a}, min_cells=3)
    prepare_store([tmp_path / "a.h5ad"], tmp_path / "store", vocab=vocab, value_encoding="log1p", chunk_size=40)
    assert store_vocabulary(tmp_path / "store").sha256 == vocab.sha256
    tiny = dict(d_model=16, n_layers=1, n_heads=2, d_ff=32, value_encoding="log1p",
                context_length={"rna": 32, "prot": 0, "atac": 0, "gene_activity": 0})
    kw = dict(max_epochs=1, batch_size=30, seed=0, progress=False, config_overrides=tiny)
    from_store = pretrain(None, store=tmp_path / "store", out=tmp_path / "m1", **kw)
    from_files = pretrain({"a": a}, out=tmp_path / "m2", **kw)
    assert from_store.card["data"][0]["n_train"] == from_files.card["data"][0]["n_train"] == 81
    for (k, v), w in zip(from_store.module.state_dict().items(), from_files.module.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(CellWeaveInputError, match="holds 'log1p' values"):
        pretrain(None, store=tmp_path / "store", out=tmp_path / "m3", **{**kw, "config_overrides": {
            **tiny, "value_encoding": "quantile"}})
