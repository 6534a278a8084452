"""Generated codes: a fixed-table model embeds genes its vocabulary lacks (CellWeave.generates_codes)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cellweave._exceptions import CellWeaveModelError
from cellweave.genes import Vocabulary
from cellweave.models import CellWeave
from cellweave.nn import generated_code
from cellweave.nn._model import INIT_STD

N_STORED = 150


def _model(vocab: Vocabulary, **overrides) -> CellWeave:
    """A tiny model whose vocabulary holds only the first ``N_STORED`` genes of ``vocab``."""
    import torch

    torch.manual_seed(0)
    stored = Vocabulary(vocab.keys[:N_STORED], gene_aliases=vocab.gene_aliases)
    settings = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, fixed_feature_tables=True, profile_skip=True,
                    hvg_tokens=0)
    return CellWeave.from_preset("tiny", stored, **{**settings, **overrides})


def test_generated_code_is_a_function_of_key_and_table() -> None:
    a = generated_code("ENSG00000141510", "feature_embedding", 64)
    np.testing.assert_array_equal(a, generated_code("ENSG00000141510", "feature_embedding", 64))
    assert not np.allclose(a, generated_code("ENSG00000141510", "profile_embedding", 64))
    assert not np.allclose(a, generated_code("ENSG00000012048", "feature_embedding", 64))
    many = np.stack([generated_code(f"k{i}", "feature_embedding", 64) for i in range(300)])
    assert abs(many.std() - INIT_STD) < 0.1 * INIT_STD and abs(many.mean()) < 0.1 * INIT_STD


def test_unseen_genes_enter_with_generated_codes(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    model = _model(vocab)
    emb, cov = model.embed(adata, progress=False)
    n_unseen = len(vocab) - N_STORED
    assert cov[0]["n_in_vocab"] == N_STORED and cov[0]["not_in_vocab"] == n_unseen
    assert cov[0]["n_generated"] == n_unseen
    assert len(model.vocab) == len(vocab) and model.config.vocab_size == len(vocab)
    assert model.module.feature_embedding.weight.shape[0] == len(vocab)
    assert model.stored_vocab.keys == vocab.keys[:N_STORED]  # what the saved files hold
    key = model.vocab.keys[N_STORED]
    np.testing.assert_array_equal(model.module.feature_embedding.weight[N_STORED].numpy(),
                                  generated_code(key, "feature_embedding", 32))
    assert not any(t.weight.requires_grad for t in model.module.feature_tables())
    # The unseen genes are used: without them the same weights embed the cells differently.
    off = _model(vocab)
    off.generate_codes = False
    emb_off, cov_off = off.embed(adata, progress=False)
    assert cov_off[0]["n_generated"] == 0 and len(off.vocab) == N_STORED
    assert np.abs(emb - emb_off).max() > 1e-3
    # Embedding again adds nothing and gives the same embedding.
    emb_again, _ = model.embed(adata, progress=False)
    assert len(model.vocab) == len(vocab)
    np.testing.assert_allclose(emb_again, emb, atol=1e-6)


def test_codes_do_not_depend_on_what_was_embedded_before(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    first, second = _model(vocab), _model(vocab)
    first.embed(adata[:, ::-1].copy()[:, :120].copy(), progress=False)  # grows in another order, partly
    emb1, _ = first.embed(adata, progress=False)
    emb2, _ = second.embed(adata, progress=False)
    assert first.vocab.keys != second.vocab.keys  # other ids ...
    np.testing.assert_allclose(emb1, emb2, atol=1e-5)  # ... same codes, same embedding


def test_learned_tables_leave_unseen_genes_out(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    model = _model(vocab, fixed_feature_tables=False)
    assert not model.generates_codes
    _, cov = model.embed(adata, progress=False)
    assert cov[0]["n_generated"] == 0 and len(model.vocab) == N_STORED
    with pytest.raises(ValueError, match="fixed_feature_tables"):
        model.module.add_features(["ENSG00000141510"])


def test_grown_model_saves_and_loads_its_codes(tmp_path, tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    model = _model(vocab)
    emb, _ = model.embed(adata, progress=False)
    model.save(tmp_path / "m")
    loaded = CellWeave.load(tmp_path / "m")
    assert len(loaded.stored_vocab) == len(vocab)
    emb2, cov = loaded.embed(adata, progress=False)
    assert cov[0]["n_generated"] == 0
    np.testing.assert_allclose(emb2, emb, atol=1e-6)


def test_a_shared_module_is_refused_with_the_fix(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    model = _model(vocab)
    twin = CellWeave(copy.deepcopy(model.config), model.vocab, module=model.module)
    model.embed(adata, progress=False)
    with pytest.raises(CellWeaveModelError, match="shared with another CellWeave"):
        twin.embed(adata, progress=False)


def test_no_codes_for_a_modality_the_model_cannot_read(tiny_vocab_and_data) -> None:
    """Keys of a modality without a row in the model's modality table are not added: the tokenizer
    would leave them out anyway, and the model's tables stay as they were."""
    vocab, _ = tiny_vocab_and_data
    model = _model(vocab, modalities=["rna"])
    grown = model._add_generated(["prot:ENSG00000010610", "ENSG00000141510"])
    assert "prot:ENSG00000010610" not in grown and "ENSG00000141510" in grown
