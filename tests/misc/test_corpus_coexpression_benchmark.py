"""benchmarks/corpus_coexpression.py, the model-free probe of issue 12: smoothing over a corpus's gene
correlations lifts a small, shallow target when the corpus shares its programmes, and not when it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def probe(benchmark_script):
    return benchmark_script("corpus_coexpression")


@pytest.fixture(scope="module")
def pc(benchmark_script):
    return benchmark_script("positive_control")


def _world(pc, seed: int) -> dict:
    return pc.world(seed, n_genes=600, n_programmes=20, programme_size=20, n_corpus_types=12, n_heldout_types=6,
                    programmes_per_type=3)


def test_smoothing_is_row_stochastic_and_keeps_genes_without_neighbours(probe) -> None:
    rng = np.random.default_rng(0)
    C = np.corrcoef(rng.normal(size=(50, 6)).T)
    np.fill_diagonal(C, 0.0)
    C[5], C[:, 5] = 0.0, 0.0  # a gene no corpus dataset measures
    W = probe.smoothing(C, k=2, alpha=0.5)
    assert np.allclose(W.sum(1), 1.0)
    assert W[5, 5] == 1.0 and np.count_nonzero(W[5]) == 1
    assert np.count_nonzero(W[0]) <= 3 and W[0, 0] == pytest.approx(0.5)


def test_matched_corpus_lifts_a_small_shallow_target_more_than_a_mismatched_one(probe, pc, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(probe.__file__).parent))  # the probe imports _diagnostics
    from cellweave.data import log_normalize

    matched, other = _world(pc, 0), _world(pc, 7)
    rng = np.random.default_rng(1)

    def corpus(w):
        return [pc.dataset(w, rng, w["corpus_types"][4 * i:4 * i + 4], n_cells=300, depth=2000.0, gene_share=0.9,
                           fold=3.0, name=f"c{i}") for i in range(3)]

    target = pc.dataset(matched, rng, matched["heldout_types"][:4], n_cells=120, depth=300.0, gene_share=0.9,
                        fold=3.0, name="t")
    labels = target.obs["cell_type"].astype(str).to_numpy()
    lognorm = log_normalize(target)
    hv = np.arange(target.n_vars)
    gain = {}
    for name, w in (("matched", matched), ("other", other)):
        row = probe.score_target(target, lognorm, labels, hv, probe.corpus_blocks(corpus(w)), [10], [1.0])
        gain[name] = row["smoothed k=10 alpha=1.0"] - row["PCA, same genes unsmoothed"]
    # measured: matched +0.16, other -0.31 (a mismatched corpus smooths each gene toward unrelated genes)
    assert gain["matched"] > 0.05 and gain["matched"] > gain["other"] + 0.2


def test_thinned_and_subsampled_targets(probe, pc, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(probe.__file__).parent))  # thinned_target imports low_depth
    from cellweave.data import log_normalize

    w = _world(pc, 0)
    ad = pc.dataset(w, np.random.default_rng(2), w["heldout_types"][:3], n_cells=90, depth=1000.0, gene_share=0.9,
                    fold=3.0, name="t")
    target = ("t", ad, log_normalize(ad), ad.obs["cell_type"].astype(str).to_numpy(), np.arange(ad.n_vars))
    _, thin, thin_lognorm, labels, _ = probe.thinned_target(target, 0.2, synthetic=True)
    assert thin.shape == ad.shape and np.array_equal(labels, target[3])
    ratio = thin.X.sum() / ad.X.sum()
    assert 0.17 < ratio < 0.23 and (thin.X.toarray() <= ad.X.toarray()).all()
    assert np.allclose(thin_lognorm.toarray(), log_normalize(thin).toarray())
    name, small, small_lognorm, small_labels, _ = probe.subsampled_target(target, 40, synthetic=True)
    assert small.n_obs == small_lognorm.shape[0] == len(small_labels) == 40
    assert probe.subsampled_target(target, 500, synthetic=True) is target


def test_a_target_may_not_also_be_in_the_corpus(probe) -> None:
    probe.check_folds(["a", "b"], ["c"], synthetic=False)
    probe.check_folds(["a"], None, synthetic=False)
    with pytest.raises(SystemExit, match="both a target and in the corpus"):
        probe.check_folds(["a", "b"], ["b", "c"], synthetic=False)
    with pytest.raises(SystemExit, match="with --synthetic"):
        probe.check_folds(["a"], None, synthetic=True)
    with pytest.raises(SystemExit, match="corpus empty"):
        probe.check_folds([], ["c"], synthetic=False, only_added=True)
