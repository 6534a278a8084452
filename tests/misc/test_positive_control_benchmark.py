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
