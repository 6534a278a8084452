"""``tl.embed(precision="bf16-mixed")`` / ``cellweave embed --precision bf16-mixed``: the forward
pass under bf16 autocast, close to the float32 embedding, recorded; a wrong precision is refused."""

from __future__ import annotations

import numpy as np
import pytest

import cellweave
from cellweave._exceptions import CellWeaveInputError


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bf16_embedding_runs_in_bf16_and_stays_close(tiny_rna_model, tiny_vocab_and_data, attention_dtypes) -> None:
    import torch

    adata = tiny_vocab_and_data[1]
    fp32 = cellweave.tl.embed(adata, model=tiny_rna_model, progress=False, copy=True)
    seen = attention_dtypes
    assert seen and set(seen) == {torch.float32}
    seen.clear()
    bf16 = cellweave.tl.embed(adata, model=tiny_rna_model, progress=False, copy=True, precision="bf16-mixed")
    assert seen and set(seen) == {torch.bfloat16}  # the autocast reached the model
    a, b = fp32.obsm["X_cellweave"], bf16.obsm["X_cellweave"]
    assert b.dtype == np.float32 and b.shape == a.shape
    assert not np.array_equal(a, b)  # it did compute in another precision
    assert _cosines(a, b).min() > 0.99
    assert fp32.uns["cellweave"]["X_cellweave"]["precision"] == "32-true"
    assert bf16.uns["cellweave"]["X_cellweave"]["precision"] == "bf16-mixed"
    # Autocast ended with the call: the model embeds in float32 again.
    again = cellweave.tl.embed(adata, model=tiny_rna_model, progress=False, copy=True).obsm["X_cellweave"]
    np.testing.assert_array_equal(again, a)


def test_store_embedding_takes_the_precision(tiny_rna_model, tiny_vocab_and_data, tmp_path) -> None:
    from cellweave.data import prepare_store

    adata = tiny_vocab_and_data[1]
    adata.write_h5ad(tmp_path / "cells.h5ad")
    prepare_store([tmp_path / "cells.h5ad"], tmp_path / "store", vocab=tiny_rna_model.stored_vocab,
                  value_encoding=tiny_rna_model.config.value_encoding)
    out = cellweave.tl.embed_store(tmp_path / "store", model=tiny_rna_model, progress=False, precision="bf16-mixed")
    plain = cellweave.tl.embed(adata, model=tiny_rna_model, progress=False, copy=True, precision="bf16-mixed")
    assert out.uns["cellweave"]["X_cellweave"]["precision"] == "bf16-mixed"
    assert _cosines(out.obsm["X_cellweave"], plain.obsm["X_cellweave"]).min() > 0.99


@pytest.mark.parametrize("precision", ["16-true", "bf16", "64"])
def test_an_unknown_precision_is_refused_with_the_choices(tiny_rna_model, tiny_vocab_and_data, precision) -> None:
    with pytest.raises(CellWeaveInputError, match="32-true, bf16-mixed"):
        cellweave.tl.embed(tiny_vocab_and_data[1], model=tiny_rna_model, progress=False, copy=True,
                           precision=precision)
    with pytest.raises(CellWeaveInputError, match="32-true, bf16-mixed"):
        cellweave.tl.embed_store("no-store", model=tiny_rna_model, precision=precision)


def test_the_cli_offers_the_library_precisions() -> None:
    import argparse

    from cellweave._cli.embed import add_embed
    from cellweave.tl._embed import EMBED_PRECISIONS

    parser = argparse.ArgumentParser()
    add_embed(parser, "model")
    action = next(a for a in parser._actions if a.dest == "precision")
    assert tuple(action.choices) == EMBED_PRECISIONS and action.default == "32-true"
