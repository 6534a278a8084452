"""Token stores and generated codes: a store prepared for a model that gives genes outside its
vocabulary generated codes keeps them and embeds as its file; a store that left them out is named."""

from __future__ import annotations

import numpy as np
import pytest

import cellweave
from cellweave._exceptions import CellWeaveInputError


def test_a_store_that_left_genes_out_is_named_when_the_model_would_have_kept_them(
        tiny_vocab_and_data, tmp_path, caplog) -> None:
    """A model with generated codes embeds a file's out-of-vocabulary genes; a store prepared with
    its vocabulary holds none of them, so embed_store warns, with the count and the fix."""
    import logging

    import torch

    from cellweave.data import prepare_store
    from cellweave.genes import Vocabulary
    from cellweave.models import CellWeave

    vocab, adata = tiny_vocab_and_data
    half = Vocabulary(vocab.keys[: len(vocab) // 2])
    torch.manual_seed(0)
    model = CellWeave.from_preset("tiny", half, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                  fixed_feature_tables=True,
                                  context_length={"rna": 48, "prot": 0, "atac": 0, "gene_activity": 0})
    adata.write_h5ad(tmp_path / "cells.h5ad")
    prepare_store([tmp_path / "cells.h5ad"], tmp_path / "store", vocab=model.stored_vocab,
                  value_encoding=model.config.value_encoding)
    with caplog.at_level(logging.WARNING, logger="cellweave.tl._embed"):
        cellweave.tl.embed_store(tmp_path / "store", model=model, progress=False)
    assert "left out" in caplog.text and "embed the files" in caplog.text
    caplog.clear()
    model.generate_codes = False  # a model that would drop them from a file too: nothing to say
    with caplog.at_level(logging.WARNING, logger="cellweave.tl._embed"):
        cellweave.tl.embed_store(tmp_path / "store", model=model, progress=False)
    assert "left out" not in caplog.text


def _half_vocabulary_model(vocab):
    """A tiny model with fixed random tables over the first 150 of ``vocab``'s 200 genes: it gives
    the other 50 generated codes."""
    import torch

    from cellweave.genes import Vocabulary
    from cellweave.models import CellWeave

    torch.manual_seed(0)
    return CellWeave.from_preset("tiny", Vocabulary(vocab.keys[:150]), d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                 fixed_feature_tables=True,
                                 context_length={"rna": 48, "prot": 0, "atac": 0, "gene_activity": 0})


def test_a_store_prepared_for_a_model_with_generated_codes_embeds_as_its_file(
        tiny_vocab_and_data, tmp_path, caplog) -> None:
    """`cellweave prepare` keeps the genes the model gives generated codes (the store's vocabulary
    grows past the model's), and the store then embeds as the file, whatever the model added
    before; appending keeps the setting; a model without generated codes is refused."""
    import logging

    from cellweave.cli import main
    from cellweave.data import open_store, prepare_store, read_store_manifest, store_vocabulary
    from cellweave.models import CellWeave

    vocab, adata = tiny_vocab_and_data
    _half_vocabulary_model(vocab).save(tmp_path / "model")
    adata.write_h5ad(tmp_path / "cells.h5ad")
    with caplog.at_level(logging.WARNING):
        assert main(["prepare", str(tmp_path / "cells.h5ad"), "--model", str(tmp_path / "model"),
                     "--out", str(tmp_path / "store"), "--chunk-size", "50"]) == 0
    assert "left out" not in caplog.text  # the store kept every gene: nothing to warn about
    manifest = read_store_manifest(tmp_path / "store")
    [source] = manifest["sources"]
    assert source["coverage"][0]["n_generated"] == 50 and manifest["vocabulary"]["generated_keys"] == 50
    grown = store_vocabulary(tmp_path / "store")
    assert len(grown) == 200 and grown.keys[:150] == vocab.keys[:150]
    model = CellWeave.load(tmp_path / "model")
    [corpus] = open_store(tmp_path / "store", vocab=model.stored_vocab)  # the model's vocabulary is accepted
    assert corpus.blocks[0].token_ids.max() >= 150

    fresh = cellweave.tl.embed_store(tmp_path / "store", model=model, progress=False).obsm["X_cellweave"]
    from_file = cellweave.tl.embed(adata, model=model, progress=False, copy=True).obsm["X_cellweave"]
    np.testing.assert_allclose(fresh, from_file, rtol=1e-5, atol=1e-6)
    # Cells of a few genes first give some generated genes other ids in the model than in the store;
    # the store is mapped by key.
    other = CellWeave.load(tmp_path / "model")
    cellweave.tl.embed(adata[:, 180:].copy(), model=other, progress=False, copy=True)
    n = len(other.vocab)
    assert 150 < n < 200 and other.vocab.keys[150:n] != grown.keys[150:n]
    again = cellweave.tl.embed_store(tmp_path / "store", model=other, progress=False).obsm["X_cellweave"]
    np.testing.assert_allclose(again, from_file, rtol=1e-5, atol=1e-6)

    # Appending keeps the store's setting (a store from before keeps leaving the genes out).
    caplog.clear()
    half = adata[:60].copy()
    half.obs_names = [f"again{i}" for i in range(60)]
    half.write_h5ad(tmp_path / "more.h5ad")
    with caplog.at_level(logging.WARNING):
        prepare_store([tmp_path / "more.h5ad"], tmp_path / "store", vocab=model.stored_vocab, append=True,
                      value_encoding=model.config.value_encoding)
    assert "the appended files are stored the same way" in caplog.text
    manifest = read_store_manifest(tmp_path / "store")
    assert manifest["vocabulary"]["generate_codes"] and manifest["sources"][1]["coverage"][0]["n_generated"] == 50
    model.generate_codes = False
    with pytest.raises(CellWeaveInputError, match="gives none"):
        cellweave.tl.embed_store(tmp_path / "store", model=model, progress=False)


def test_a_cite_seq_store_keeps_the_proteins_and_peaks_the_model_gives_codes(tmp_path, caplog) -> None:
    """Proteins and peaks outside the vocabulary are kept too (each modality the model reads), so a
    MuData store embeds as its file; a store asked to keep genes only leaves them out and says so;
    a store of the thirty-eighth session (``generate_codes: true``) keeps genes only on append."""
    import json
    import logging

    import torch

    from cellweave.cli import main
    from cellweave.data import build_vocabulary, prepare_store, read_store_manifest, synthetic_mudata
    from cellweave.genes import Vocabulary
    from cellweave.models import CellWeave

    md = synthetic_mudata(n_cells=80, n_genes=60, n_proteins=10, n_peaks=40, seed=3)
    vocab, _ = build_vocabulary({"m": md}, min_cells=1)
    prot = [k for k in vocab.keys if k.startswith("prot:")]
    peaks = [k for k in vocab.keys if k.startswith("atac:")]
    genes = [k for k in vocab.keys if ":" not in k]
    dropped = set(genes[-15:]) | set(prot[-4:]) | set(peaks[-10:])
    torch.manual_seed(0)
    model = CellWeave.from_preset("tiny", Vocabulary([k for k in vocab.keys if k not in dropped]), d_model=16,
                                  n_layers=1, n_heads=2, d_ff=32, fixed_feature_tables=True,
                                  context_length={"rna": 32, "prot": 8, "atac": 24, "gene_activity": 0})
    model.save(tmp_path / "model")
    md.write(tmp_path / "cells.h5mu")
    with caplog.at_level(logging.WARNING):
        assert main(["prepare", str(tmp_path / "cells.h5mu"), "--model", str(tmp_path / "model"),
                     "--out", str(tmp_path / "store"), "--chunk-size", "30"]) == 0
    assert "left out" not in caplog.text
    manifest = read_store_manifest(tmp_path / "store")
    assert set(manifest["vocabulary"]["generate_codes"]) >= {"rna", "prot", "atac"}
    generated = {c["modality"]: c["n_generated"] for c in manifest["sources"][0]["coverage"]}
    assert generated == {"rna": 15, "prot": 4, "atac": 10}
    assert manifest["vocabulary"]["generated_keys"] == len(dropped)

    loaded = CellWeave.load(tmp_path / "model")
    from_store = cellweave.tl.embed_store(tmp_path / "store", model=loaded, progress=False).obsm["X_cellweave"]
    from_file = cellweave.tl.embed(md, model=CellWeave.load(tmp_path / "model"), progress=False,
                                   copy=True).obsm["X_cellweave"]
    np.testing.assert_allclose(from_store, from_file, rtol=1e-5, atol=1e-6)

    # Genes only: the proteins and peaks are left out, and embedding the store says so.
    prepare_store([tmp_path / "cells.h5mu"], tmp_path / "genes_only", vocab=model.stored_vocab,
                  value_encoding=model.config.value_encoding, generate_codes=["rna"])
    generated = {c["modality"]: c["n_generated"] for c in
                 read_store_manifest(tmp_path / "genes_only")["sources"][0]["coverage"]}
    assert generated == {"rna": 15, "prot": 0, "atac": 0}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cellweave.tl.embed_store(tmp_path / "genes_only", model=CellWeave.load(tmp_path / "model"), progress=False)
    assert "14 such features" in caplog.text and "cellweave prepare" in caplog.text

    # A manifest of the thirty-eighth session recorded `true`: genes only, also for appended files.
    path = tmp_path / "genes_only" / "manifest.json"
    old = json.loads(path.read_text())
    old["vocabulary"]["generate_codes"] = True
    path.write_text(json.dumps(old))
    more = md[:20].copy()
    more.obs_names = [f"more{i}" for i in range(20)]
    for mod in more.mod.values():
        mod.obs_names = more.obs_names
    more.write(tmp_path / "more.h5mu")
    prepare_store([tmp_path / "more.h5mu"], tmp_path / "genes_only", vocab=model.stored_vocab, append=True,
                  value_encoding=model.config.value_encoding, generate_codes=True)
    appended = read_store_manifest(tmp_path / "genes_only")["sources"][1]["coverage"]
    assert {c["modality"]: c["n_generated"] for c in appended}["prot"] == 0
    with pytest.raises(CellWeaveInputError, match="unknown modalities"):
        prepare_store([tmp_path / "cells.h5mu"], tmp_path / "bad", vocab=model.stored_vocab,
                      value_encoding=model.config.value_encoding, generate_codes=["adt"])


def test_the_left_out_warning_counts_only_modalities_the_model_reads(tiny_vocab_and_data, caplog) -> None:
    """A file's modality the model does not read is not read from the file either: its features are
    not 'left out' of a store."""
    import logging

    from cellweave.models import CellWeave

    model = CellWeave.from_preset("tiny", tiny_vocab_and_data[0], d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                  fixed_feature_tables=True, modalities=["rna"], context_length={"rna": 48})
    assert model.code_modalities == ["rna"]
    peaks = {"modality": "atac", "not_in_vocab": 40, "n_generated": 0}
    with caplog.at_level(logging.WARNING):
        model.warn_store_left_out({"a": [{"modality": "rna", "not_in_vocab": 5, "n_generated": 5}, peaks]}, "s/")
    assert "left out" not in caplog.text
    with caplog.at_level(logging.WARNING):
        model.warn_store_left_out({"a": [{"modality": "rna", "not_in_vocab": 7, "n_generated": 2}, peaks]}, "s/")
    assert "holds 5 such features" in caplog.text
