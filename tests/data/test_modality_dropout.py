"""Cross-modal masking in the tokenizer and spatial neighbourhoods within sections."""

from __future__ import annotations

import numpy as np
import pytest

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import Tokenizer, TokenDataset, build_vocabulary, prepare_cells, synthetic_mudata
from cellweave.data._spatial import neighbourhood_mean, section_labels, spatial_neighbors

CONTEXT = {"rna": 64, "prot": 16, "atac": 32, "gene_activity": 32}


@pytest.fixture(scope="module")
def corpus():
    md = synthetic_mudata(n_cells=40, n_proteins=20, n_peaks=100, missing={"prot": 0.25}, seed=0)
    vocab, _ = build_vocabulary({"m": md}, min_cells=1)
    return prepare_cells(md, vocab, value_encoding="quantile")


def test_dropped_modality_leaves_input_and_becomes_targets(corpus) -> None:
    tok = Tokenizer(CONTEXT, modality_dropout=1.0)
    prot = next(b for b in corpus.blocks if b.modality == "prot")
    cell = int(np.flatnonzero(prot.present)[0])
    out = tok.tokenize(corpus, cell, np.random.default_rng(0), train=True, n_targets=48, drop_modality="prot")
    ids, _, mods, t_ids, t_vals, t_mods = out
    assert tok.modality_ids["prot"] not in set(mods.tolist())
    assert set(t_mods.tolist()) == {tok.modality_ids["prot"]}
    # 20 proteins <= 48 targets: every protein is a target, with its measured value (0 if absent).
    assert sorted(t_ids.tolist()) == sorted(prot.token_ids.tolist())
    dense = np.asarray(prot.values[cell].todense()).ravel()
    by_id = dict(zip(prot.token_ids.tolist(), dense.tolist()))
    np.testing.assert_allclose(t_vals, [by_id[i] for i in t_ids.tolist()])


def test_large_dropped_modality_is_sampled_half_measured(corpus) -> None:
    atac = next(b for b in corpus.blocks if b.modality == "atac")
    cell = 0
    tok = Tokenizer(CONTEXT)
    out = tok.tokenize(corpus, cell, np.random.default_rng(1), train=True, n_targets=20, drop_modality="atac")
    t_ids, t_vals = out[3], out[4]
    assert t_ids.size == 20 and len(set(t_ids.tolist())) == 20
    n_measured = np.diff(atac.values.indptr)[cell]
    assert (t_vals > 0).sum() == min(10, n_measured)


def test_dropout_probability_and_unimodal_cells(corpus) -> None:
    rng = np.random.default_rng(0)
    prot = next(b for b in corpus.blocks if b.modality == "prot")
    no_prot = int(np.flatnonzero(~prot.present)[0])
    with_prot = int(np.flatnonzero(prot.present)[0])
    tok = Tokenizer(CONTEXT, modality_dropout=0.5)
    draws = [tok.draw_dropped_modality(corpus, with_prot, rng) for _ in range(400)]
    share = np.mean([d is not None for d in draws])
    assert 0.4 < share < 0.6
    assert {d for d in draws if d} == {"rna", "prot", "atac"}
    assert Tokenizer(CONTEXT, modality_dropout=0.0).draw_dropped_modality(corpus, with_prot, rng) is None
    # A cell measured in RNA + ATAC only still has two modalities; restrict to RNA: never dropped.
    ds = TokenDataset([corpus], tok, mode="train", n_targets=16, modality_dropout=1.0, modalities=["rna"])
    item = ds[no_prot]
    assert set(item["modality_ids"].tolist()) == {tok.modality_ids["rna"]}


def test_eval_mode_dropout_is_fixed_per_cell(corpus) -> None:
    tok = Tokenizer(CONTEXT, modality_dropout=0.5)
    ds = TokenDataset([corpus], tok, mode="eval", n_targets=16, seed=3)
    a, b = ds[5], ds[5]
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    np.testing.assert_array_equal(a["target_ids"], b["target_ids"])


def test_spatial_neighbours_stay_within_sections() -> None:
    rng = np.random.default_rng(0)
    coords = rng.random((60, 2))
    coords[30:] = coords[:30] + 1e-3  # section B sits on top of section A
    sections = np.array(["A"] * 30 + ["B"] * 30)
    nbr = spatial_neighbors(coords, sections, n_neighbors=5)
    assert nbr.shape == (60, 5)
    assert (nbr[:30] < 30).all() and (nbr[30:] >= 30).all()
    assert not (nbr == np.arange(60)[:, None]).any()
    X = rng.random((60, 3))
    np.testing.assert_allclose(neighbourhood_mean(X, nbr)[7], X[nbr[7]].mean(0), rtol=1e-5)


def test_section_labels_and_bad_coordinates() -> None:
    import pandas as pd

    obs = pd.DataFrame({"sample": ["a", "b"], "batch": ["x", "x"]})
    labels, col = section_labels(obs)
    assert col == "sample" and labels.tolist() == ["a", "b"]
    with pytest.raises(CellWeaveInputError, match="no column 'slice'"):
        section_labels(obs, "slice")
    with pytest.raises(CellWeaveInputError, match="NaN"):
        spatial_neighbors(np.array([[0.0, np.nan], [1.0, 1.0]]), np.array(["a", "a"]), n_neighbors=1)
