"""The synthetic world of benchmarks/positive_control.py: the held-out types are new, their programmes are
not, and the programmes carry the type while a random projection of the same cells does not."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def pc(benchmark_script):
    return benchmark_script("positive_control")


@pytest.fixture(scope="module")
def small_world(pc) -> dict:
    return pc.world(0, n_genes=600, n_programmes=20, programme_size=20, n_corpus_types=12, n_heldout_types=6,
                    programmes_per_type=3)


def test_held_out_types_are_new_combinations_of_the_corpus_programmes(pc, small_world) -> None:
    w = small_world
    members = [g for p in w["programmes"] for g in p]
    assert len(members) == len(set(members)) == 20 * 20  # disjoint programmes
    corpus = {tuple(t) for t in w["corpus_types"]}
    heldout = {tuple(t) for t in w["heldout_types"]}
    assert len(corpus) == 12 and len(heldout) == 6 and not corpus & heldout
    for t in corpus | heldout:  # types never use the nuisance programmes
        assert len(t) == 3 and min(t) >= pc.N_NUISANCE


def test_dataset_counts_types_and_oracle(pc, small_world) -> None:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(1)
    ad = pc.dataset(small_world, rng, small_world["heldout_types"][:4], n_cells=200, depth=400.0, gene_share=0.9,
                    fold=3.0, name="t")
    assert ad.shape == (200, 540)
    x = ad.X.toarray()
    assert np.array_equal(x, np.round(x)) and x.min() >= 0
    assert 250 < np.median(x.sum(1)) < 550  # about the depth asked for
    assert ad.obs["cell_type"].nunique() == 4
    y = ad.obs["cell_type"].to_numpy()
    knn = KNeighborsClassifier(15)
    oracle = cross_val_score(knn, ad.obsm["programme_scores"], y, cv=5).mean()
    projection = np.log1p(x / x.sum(1, keepdims=True) * 1e4) @ np.random.default_rng(0).normal(size=(540, 16))
    random = cross_val_score(knn, projection, y, cv=5).mean()
    assert oracle > 0.9 and oracle > random + 0.2


def test_validation_sets_leave_the_scored_ones_unchanged(pc, tmp_path) -> None:
    """``make --validation N`` adds datasets of the held-out types after the scored ones: a run may watch them
    (``--knn-monitor``) while the scored datasets stay exactly those of a world made without them."""
    import argparse

    import anndata as ad

    def make(out, validation):
        pc.make(argparse.Namespace(out=str(out), seed=0, genes=400, programmes=12, programme_size=20,
                                   programmes_per_type=3, corpus_types=6, heldout_types=5, types_per_dataset=3,
                                   corpus=1, corpus_cells=60, corpus_depth=300.0, heldout=2, heldout_cells=60,
                                   heldout_depth=300.0, gene_share=0.9, fold=3.0, heldout_only=False,
                                   validation=validation))

    make(tmp_path / "plain", 0)
    make(tmp_path / "with", 2)
    assert not (tmp_path / "plain" / "validation").exists()
    assert sorted(p.name for p in (tmp_path / "with" / "validation").iterdir()) == ["heldout02.h5ad", "heldout03.h5ad"]
    for name in ("heldout00.h5ad", "heldout01.h5ad"):
        a, b = (ad.read_h5ad(tmp_path / w / "heldout" / name) for w in ("plain", "with"))
        assert (a.X != b.X).nnz == 0
    first = ad.read_h5ad(tmp_path / "with" / "heldout" / "heldout00.h5ad")
    extra = ad.read_h5ad(tmp_path / "with" / "validation" / "heldout02.h5ad")
    assert extra.shape[0] == 60 and not np.array_equal(np.asarray(extra.X.sum(1)), np.asarray(first.X.sum(1)))
    heldout_types = pc.world(0, 400, 12, 20, 6, 5, 3)["heldout_types"]  # the world make() drew
    assert set(extra.obs["cell_type"].astype(str)) <= {"+".join(f"P{p}" for p in t) for t in heldout_types}


def test_score_reads_every_model_with_the_pooling_asked_for(pc, tmp_path, monkeypatch, tiny_arch) -> None:
    """``score --pooling cls`` scores the CLS state itself (the L2-normalized first half of a ``cls+bag``
    embedding), for the model and its random weights alike, records the pooling and drops the halves' rows
    that a ``cls`` embedding does not have."""
    import argparse
    import json
    from pathlib import Path

    import anndata as ad
    import torch

    from cellweave.data import build_vocabulary
    from cellweave.models import CellWeave

    monkeypatch.syspath_prepend(str(Path(pc.__file__).parent))  # score imports _diagnostics
    pc.make(argparse.Namespace(out=str(tmp_path / "w"), seed=0, genes=400, programmes=12, programme_size=20,
                               programmes_per_type=3, corpus_types=6, heldout_types=5, types_per_dataset=3, corpus=1,
                               corpus_cells=60, corpus_depth=300.0, heldout=1, heldout_cells=80, heldout_depth=300.0,
                               gene_share=0.9, fold=3.0, heldout_only=False, validation=0))
    data = ad.read_h5ad(tmp_path / "w" / "heldout" / "heldout00.h5ad")
    vocab, _ = build_vocabulary({"w": data}, min_cells=1)
    torch.manual_seed(0)
    CellWeave.from_preset("tiny", vocab, **tiny_arch).save(tmp_path / "m")
    results = {}
    for pooling in ("config", "cls"):
        out = tmp_path / f"{pooling}.json"
        pc.score(argparse.Namespace(data=str(tmp_path / "w"), models=[str(tmp_path / "m")], adapt=False,
                                    gene_tables=False, split="heldout", pooling=pooling, out=str(out)))
        results[pooling] = json.loads(out.read_text())
    plain, cls = (results[p]["per_dataset"]["heldout00"] for p in ("config", "cls"))
    assert results["cls"]["pooling"] == "cls" and results["cls"]["command"].endswith("--pooling cls")
    assert not any("half" in k for k in cls) and f"{tmp_path / 'm'}, CLS half" in plain
    model = CellWeave.load(tmp_path / "m")
    full = model.embed(data, seed=0, progress=False)[0]
    model.config.pooling = "cls"
    state = model.embed(data, seed=0, progress=False)[0]
    assert state.shape[1] == full.shape[1] // 2
    np.testing.assert_allclose(state / np.linalg.norm(state, axis=1, keepdims=True), full[:, : state.shape[1]],
                               atol=1e-5)
    from _diagnostics import knn_f1  # the score's own kNN macro-F1

    # the row is the CLS state's score, not cls+bag's
    assert cls[str(tmp_path / "m")] == knn_f1(state, data.obs["cell_type"].astype(str).to_numpy())
    assert cls["PCA (HVG)"] == plain["PCA (HVG)"]


def test_score_refuses_another_pooling_for_an_adapted_model(pc, tmp_path, monkeypatch, tiny_rna_model,
                                                            tiny_vocab_and_data) -> None:
    """An adapted model's readout was trained on its own pooling's width: ``--pooling`` names the fix."""
    import argparse
    from pathlib import Path

    from cellweave.train import adapt

    monkeypatch.syspath_prepend(str(Path(pc.__file__).parent))
    adapt(tiny_vocab_and_data[1], model=tiny_rna_model, max_epochs=1, n_latent=4, progress=False,
          out=tmp_path / "adapted")
    with pytest.raises(SystemExit, match="score it without --pooling"):
        pc.score(argparse.Namespace(data=str(tmp_path), models=[str(tmp_path / "adapted")], adapt=False,
                                    gene_tables=False, split="heldout", pooling="cls", out=str(tmp_path / "o.json")))
