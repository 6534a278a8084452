"""``LabelTransfer``'s novelty scores on synthetic embeddings: what each one flags and why."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from cellweave._exceptions import CellWeaveInputError
from cellweave.tl import LabelTransfer


def _clusters(rng, centers, n, scale=1.0):
    x = np.concatenate([c + scale * rng.standard_normal((n, len(c))) for c in centers])
    y = np.repeat([f"type{i}" for i in range(len(centers))], n)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def cells():
    """Three known types 8 sd apart in 10 dimensions; a query of the same types shifted by 5 sd
    (split over every axis: a new protocol), and a novel type placed far from all three."""
    rng = np.random.default_rng(0)
    centers = 8.0 * np.eye(3, 10)
    ref, y = _clusters(rng, centers, 150)
    shifted, y_shifted = _clusters(rng, centers + 5.0 / np.sqrt(10), 100)
    novel, _ = _clusters(rng, [np.full(10, -6.0)], 100)
    return ref, y, shifted, y_shifted, novel


def test_cross_fit_calibrates_on_every_reference_cell_of_a_small_reference(cells) -> None:
    """``cross_fit="auto"``: a reference whose held-out 20% would be under ``MIN_CALIBRATION_CELLS`` is
    calibrated on all of its cells, each held out once in 5 stratified folds, and the query is scored by
    the index of the whole reference; a large reference keeps the single split, and groups win."""
    ref, y, shifted, _, _ = cells
    auto = LabelTransfer(novelty_score="distance", seed=0).fit(ref, y)
    assert auto.cross_fitted_ and auto.index_.n_samples_fit_ == len(ref)
    assert len(auto.calibration_["distance"]) == len(ref)
    z = auto.scaler_.transform(shifted)
    np.testing.assert_allclose(auto.predict(shifted).novelty, auto.index_.kneighbors(z)[0].mean(1), rtol=1e-5)
    split = LabelTransfer(novelty_score="distance", cross_fit=False, seed=0).fit(ref, y)
    assert not split.cross_fitted_ and len(split.calibration_["distance"]) == 90
    big, y_big = _clusters(np.random.default_rng(1), 8.0 * np.eye(3, 10), 850)  # 510 cells held out
    assert not LabelTransfer(novelty_score="distance", seed=0).fit(big, y_big).cross_fitted_
    assert LabelTransfer(novelty_score="distance", cross_fit=True, seed=0).fit(big, y_big).cross_fitted_
    groups = np.arange(len(y)) % 3
    assert not LabelTransfer(novelty_score="distance", seed=0).fit(ref, y, groups=groups).cross_fitted_
    with pytest.raises(CellWeaveInputError, match="cross_fit"):
        LabelTransfer(cross_fit="always")
    with pytest.raises(CellWeaveInputError, match="cross_fit"):
        LabelTransfer(cross_fit=1)  # equal to True, but not a flag: refused rather than read as off
    assert LabelTransfer(novelty_score="distance", cross_fit=np.True_, seed=0).fit(big, y_big).cross_fitted_
    # Every type under 5 cells: as many folds as the largest type has cells (4), the default score.
    tiny, y_tiny = _clusters(np.random.default_rng(2), 8.0 * np.eye(3, 10), 4)
    lt = LabelTransfer(seed=0).fit(tiny, y_tiny)
    assert lt.cross_fitted_ and len(lt.calibration_["softmax"]) == 12
    # A fold whose other cells hold one type: the error names the cause and the way out.
    lopsided, _ = _clusters(np.random.default_rng(3), 8.0 * np.eye(2, 10), 12)
    with pytest.raises(CellWeaveInputError, match="cross_fit=False"):
        LabelTransfer(seed=0).fit(lopsided[:13], np.array(["a"] * 12 + ["b"]))


def test_cross_fit_steadies_the_share_of_known_cells_called_unknown_with_a_small_reference() -> None:
    """With 40 cells per type the held-out 20% is 24 cells, and the 0.99 quantile of their scores is
    their maximum: which known cells cross it depends on the draw (Vovk 2015, cross-conformal
    prediction; Barber et al. 2021, jackknife+). Over 20 draws of reference and query, cross-fitting
    brings the share of known cells called unknown by distance down and makes it steadier, while the
    new type is still all unknown."""
    known_unknown = {False: [], "auto": []}
    for draw in range(20):
        rng = np.random.default_rng(100 + draw)
        ref, y = _clusters(rng, 8.0 * np.eye(3, 10), 40)
        known, _ = _clusters(rng, 8.0 * np.eye(3, 10), 100)
        novel, _ = _clusters(rng, [np.full(10, -4.0)], 60)
        for cross_fit, shares in known_unknown.items():
            res = LabelTransfer(novelty_score="distance", cross_fit=cross_fit, seed=draw).fit(ref, y).predict(
                np.concatenate([known, novel]))
            shares.append(res.unknown[: len(known)].mean())
            assert res.unknown[len(known):].all()
    split, cross = np.array(known_unknown[False]), np.array(known_unknown["auto"])
    assert cross.mean() < 0.6 * split.mean() and cross.mean() < 0.02
    assert cross.std() < 0.5 * split.std() and cross.max() < 0.5 * split.max()


def test_distance_score_is_the_mean_distance_to_the_80_percent_index(cells) -> None:
    ref, y, shifted, _, _ = cells
    lt = LabelTransfer(novelty_score="distance", cross_fit=False, seed=0).fit(ref, y)
    z = StandardScaler().fit(ref).transform(shifted)
    expected = lt.index_.kneighbors(z)[0].mean(1)
    np.testing.assert_allclose(lt.predict(shifted).novelty, expected, rtol=1e-5)
    assert lt.index_.n_samples_fit_ == len(ref) - 90  # 20% (90 cells) held out to calibrate
    assert lt.calibration_classifier_ is None and isinstance(lt.index_, NearestNeighbors)


def test_combined_score_tolerates_a_shift_and_still_finds_a_novel_type(cells) -> None:
    ref, y, shifted, y_shifted, novel = cells
    # Without shift_adjust: what each score does with a shift on its own.
    res = {name: LabelTransfer(novelty_score=name, shift_adjust=False, seed=0).fit(ref, y)
           for name in ("combined", "distance", "softmax")}
    shifted_unknown = {name: lt.predict(shifted).unknown.mean() for name, lt in res.items()}
    # A shift moves every known cell away from the reference: the distance alone calls most of them
    # unknown, while the classifier stays sure of their type, and so does the combined rank.
    assert shifted_unknown["distance"] > 0.5
    assert shifted_unknown["combined"] < shifted_unknown["distance"] / 2
    assert (res["combined"].predict(shifted).raw_prediction == y_shifted).mean() > 0.95
    query = np.concatenate([shifted, novel])
    is_novel = np.r_[np.zeros(len(shifted), bool), np.ones(len(novel), bool)]
    out = res["combined"].predict(query)
    assert roc_auc_score(is_novel, out.novelty) > 0.9
    assert out.unknown[is_novel].mean() > 0.9
    assert ((out.novelty >= 0) & (out.novelty <= 1)).all() and out.novelty.dtype == np.float32
    assert 0 < res["combined"].threshold_ <= 1


def test_unshifted_known_cells_are_rarely_unknown(cells) -> None:
    ref, y, _, _, _ = cells
    rng = np.random.default_rng(1)
    fresh, _ = _clusters(rng, 8.0 * np.eye(3, 10), 200)
    for name in ("combined", "distance", "softmax"):
        lt = LabelTransfer(novelty_score=name, novelty_quantile=0.95, seed=0).fit(ref, y)
        assert lt.predict(fresh).unknown.mean() < 0.12, name  # ~5% expected at the 0.95 quantile


def test_unknown_novelty_score_is_refused_with_the_choices() -> None:
    with pytest.raises(CellWeaveInputError, match="'energy' is not one of combined\\+composition, combined, distance"):
        LabelTransfer(novelty_score="energy")


def test_calibrating_on_batches_tolerates_a_shift_like_theirs() -> None:
    # Two reference batches 4 sd apart along one axis; the query is a third batch shifted as far again.
    rng = np.random.default_rng(2)
    centers = 8.0 * np.eye(3, 10)
    offset = 4.0 * np.eye(1, 10, 9)[0]
    a, y_a = _clusters(rng, centers, 80)
    b, y_b = _clusters(rng, centers + offset, 80)
    ref, y = np.concatenate([a, b]), np.concatenate([y_a, y_b])
    groups = np.repeat(["a", "b"], len(a))
    query, _ = _clusters(rng, centers + 2 * offset, 100)
    novel, _ = _clusters(rng, [np.full(10, -6.0)], 50)
    for name in ("combined", "distance"):
        random_split = LabelTransfer(novelty_score=name, shift_adjust=False, seed=0).fit(ref, y)
        by_batch = LabelTransfer(novelty_score=name, shift_adjust=False, seed=0).fit(ref, y, groups=groups)
        assert by_batch.calibration_groups_ == 2 and random_split.calibration_groups_ == 0
        assert by_batch.threshold_ > random_split.threshold_, name
        shifted = by_batch.predict(query).unknown.mean()
        assert shifted < random_split.predict(query).unknown.mean() and shifted < 0.1, name
        assert by_batch.predict(novel).unknown.mean() > 0.9, name
    # The query is scored by the whole reference: the index holds every reference cell.
    assert by_batch.index_.n_samples_fit_ == len(ref)


def test_batches_must_match_the_cells_and_leave_two_types() -> None:
    rng = np.random.default_rng(3)
    x, y = _clusters(rng, 8.0 * np.eye(3, 10), 20)
    with pytest.raises(CellWeaveInputError, match="groups has 5 values for 60 reference cells"):
        LabelTransfer().fit(x, y, groups=np.zeros(5))
    one_type_outside = np.where(y == "type0", "a", "b")  # batch b holds two types, batch a one
    with pytest.raises(CellWeaveInputError, match="single type.*or no batch key"):
        LabelTransfer().fit(x, y, groups=one_type_outside)


def _spread_query(seed: int, scale: float, n_known: int = 100, n_novel: int = 60):
    """The three known types of ``cells`` measured more noisily (sd ``scale``: every known cell
    farther from the reference, as after a protocol change), plus a novel type."""
    rng = np.random.default_rng(seed)
    known, _ = _clusters(rng, 8.0 * np.eye(3, 10), n_known, scale=scale)
    novel, _ = _clusters(rng, [np.full(10, -6.0)], n_novel)
    return np.concatenate([known, novel]), np.r_[np.zeros(len(known), bool), np.ones(len(novel), bool)]


@pytest.mark.parametrize("seed", [0, 2])
def test_shift_adjust_takes_a_whole_query_shift_out_and_keeps_the_novel_type(seed: int) -> None:
    ref, y = _clusters(np.random.default_rng(10 + seed), 8.0 * np.eye(3, 10), 300)
    query, is_novel = _spread_query(4 + seed, 1.3, n_known=200)
    # The distance's adjustment, on the score that was the default before the composition part.
    plain = LabelTransfer(novelty_score="combined", shift_adjust=False, cross_fit=False, seed=0).fit(ref, y)
    adjusted = LabelTransfer(novelty_score="combined", cross_fit=False, seed=0).fit(ref, y)
    before, after = plain.predict(query), adjusted.predict(query)
    assert before.unknown[~is_novel].mean() > 0.07  # the shift alone makes known cells unknown
    assert after.unknown[~is_novel].mean() < min(0.04, before.unknown[~is_novel].mean() / 2)
    assert after.unknown[is_novel].mean() > 0.95
    # The factor is the ratio of medians: held-out reference cells' over the query's.
    median_query = np.median(plain._components(plain.scaler_.transform(query))["distance"])
    expected = np.median(adjusted.calibration_["distance"]) / median_query
    assert adjusted.shift_factor_ == pytest.approx(expected, rel=1e-5) and adjusted.shift_factor_ < 0.9
    assert plain.shift_factor_ == 1.0


def test_shift_adjust_never_scales_up_and_skips_small_or_mostly_new_queries(cells, caplog) -> None:
    ref, y, _, _, _ = cells
    rng = np.random.default_rng(5)
    lt = LabelTransfer(novelty_score="combined", sharpen_when_far=False, seed=0).fit(ref, y)
    fresh, _ = _clusters(rng, 8.0 * np.eye(3, 10), 100, scale=0.8)  # closer than held-out cells
    lt.predict(fresh)
    assert lt.shift_factor_ == 1.0
    small, is_novel = _spread_query(6, 1.5, n_known=10, n_novel=10)  # 20 cells: too few to estimate a shift
    assert lt.predict(small).unknown[~is_novel].mean() > 0 and lt.shift_factor_ == 1.0
    mostly_new, is_novel = _spread_query(7, 1.0, n_known=20, n_novel=200)  # the median cell is new
    with caplog.at_level("WARNING", logger="cellweave.tl._transfer"):
        out = lt.predict(mostly_new)
    assert lt.shift_factor_ == 1.0 and "too far to tell a shift" in caplog.text
    assert out.unknown[is_novel].mean() > 0.95
    # sharpen_when_far (the default) assumes the opposite, most of the query of reference types: it misses
    # much of a query that is mostly new, and says so with the fix.
    caplog.clear()
    with caplog.at_level("WARNING", logger="cellweave.tl._transfer"):
        sharpened = LabelTransfer(novelty_score="combined", seed=0).fit(ref, y).predict(mostly_new)
    assert sharpened.unknown[is_novel].mean() < 0.75 and "--no-sharpen-when-far" in caplog.text


def test_mahalanobis_score_finds_a_type_between_two_elongated_ones() -> None:
    """Two known types stretched along one axis and a novel type beside their long axis: closer to the
    reference in Euclidean distance than their ends, but far in the shared covariance's metric."""
    rng = np.random.default_rng(7)
    stretch = np.diag([6.0] + [0.5] * 4)
    ref = np.concatenate([rng.standard_normal((300, 5)) @ stretch + c for c in ([0, 0, 0, 0, 0], [0, 6, 0, 0, 0])])
    y = np.repeat(["a", "b"], 300)
    known = np.concatenate([rng.standard_normal((100, 5)) @ stretch + c for c in ([0, 0, 0, 0, 0], [0, 6, 0, 0, 0])])
    novel = rng.standard_normal((100, 5)) * 0.5 + [0, 3, 3, 0, 0]
    query, is_novel = np.concatenate([known, novel]), np.r_[np.zeros(200, bool), np.ones(100, bool)]
    scores = {name: LabelTransfer(novelty_score=name, seed=0).fit(ref, y).predict(query).novelty
              for name in ("mahalanobis", "distance+mahalanobis+softmax")}
    assert roc_auc_score(is_novel, scores["mahalanobis"]) > 0.95
    lt = LabelTransfer(novelty_score="mahalanobis", seed=0).fit(ref, y)
    assert lt.index_ is None and lt.calibration_classifier_ is None and lt.class_means_.shape == (2, 5)
    assert ((scores["distance+mahalanobis+softmax"] >= 0) & (scores["distance+mahalanobis+softmax"] <= 1)).all()


def test_softmax_when_far_ranks_the_classifier_alone_for_a_query_beyond_the_threshold(cells, caplog) -> None:
    ref, y, _, _, _ = cells
    rng = np.random.default_rng(8)
    far, _ = _clusters(rng, 8.0 * np.eye(3, 10) + 3.0, 100)  # every known cell moved 9.5 sd: beyond the threshold
    score = "distance+mahalanobis+softmax"  # two distance parts of three: a far query is often unknown
    before = LabelTransfer(novelty_score=score, softmax_when_far=False, seed=0).fit(ref, y)  # the rule before
    default = LabelTransfer(novelty_score=score, seed=0).fit(ref, y)
    with caplog.at_level("WARNING", logger="cellweave.tl._transfer"):
        kept, switched = before.predict(far), default.predict(far)
    assert default.softmax_when_far and not before.distance_ignored_ and default.distance_ignored_
    assert "the distance is left out" in caplog.text
    assert kept.unknown.mean() > 0.1 and switched.unknown.mean() < min(0.05, kept.unknown.mean() / 2)
    # The softmax part's own threshold decides: every cell above it, and only those, is unknown.
    np.testing.assert_array_equal(switched.unknown, switched.novelty > default.softmax_threshold_)
    # A query near the reference is scored as before, and the flag is not left over from the far one.
    near, _ = _clusters(rng, 8.0 * np.eye(3, 10), 100)
    np.testing.assert_array_equal(before.predict(near).novelty, default.predict(near).novelty)
    assert not default.distance_ignored_


def test_sharpen_when_far_takes_out_a_shift_that_makes_the_classifier_unsure(cells) -> None:
    ref, y, _, _, _ = cells
    rng = np.random.default_rng(9)
    # Known types moved far (beyond the distance threshold) and pulled together: the classifier is
    # right but unsure of most cells, as after training on one species and predicting another.
    far, y_far = _clusters(rng, 0.55 * 8.0 * np.eye(3, 10) + 3.0, 100)
    novel, _ = _clusters(rng, [np.full(10, 3.0 + 0.55 * 8.0 / 3)], 40)  # a new type between them
    query = np.concatenate([far, novel])
    is_novel = np.r_[np.zeros(len(far), bool), np.ones(len(novel), bool)]
    plain = LabelTransfer(novelty_score="combined", sharpen_when_far=False, seed=0).fit(ref, y)  # the rule before
    sharp = LabelTransfer(novelty_score="combined", seed=0).fit(ref, y)
    before, after = plain.predict(query), sharp.predict(query)
    assert plain.distance_ignored_ and sharp.distance_ignored_ and plain.temperature_ == 1.0
    assert 0 < sharp.temperature_ < 1.0
    assert (before.raw_prediction[~is_novel] == y_far).mean() > 0.9  # the labels are right ...
    np.testing.assert_array_equal(after.raw_prediction, before.raw_prediction)  # ... and a temperature keeps them
    # Unsharpened, the classifier's doubt calls many known cells unknown; sharpened, the query's median
    # part equals the held-out reference cells' median and few known cells are unknown.
    assert before.unknown[~is_novel].mean() > 0.5 and after.unknown[~is_novel].mean() < before.unknown[~is_novel].mean() / 3
    # The new type stays the most doubtful: it ranks above most known cells and most of it is still unknown.
    assert roc_auc_score(is_novel, after.novelty) > 0.8 and after.unknown[is_novel].mean() > 0.6
    # A query near the reference is not far: nothing is sharpened and the scores are the default's.
    near, _ = _clusters(rng, 8.0 * np.eye(3, 10), 100)
    np.testing.assert_array_equal(plain.predict(near).novelty, sharp.predict(near).novelty)
    assert sharp.temperature_ == 1.0 and not sharp.distance_ignored_


def test_sharpen_when_shifted_takes_out_the_classifiers_doubt_about_a_query_that_is_not_far(cells, caplog) -> None:
    ref, y, _, _, _ = cells
    rng = np.random.default_rng(11)
    # Known types pulled towards each other, not far by distance: the classifier is right but less sure
    # of every query cell than of held-out reference cells (another species, near the reference).
    known, y_known = _clusters(rng, 0.78 * 8.0 * np.eye(3, 10), 100)
    novel, _ = _clusters(rng, [np.full(10, -5.0)], 40)
    query = np.concatenate([known, novel])
    is_novel = np.r_[np.zeros(len(known), bool), np.ones(len(novel), bool)]
    # One held-out split (the guard's case below depends on its threshold).
    lt = LabelTransfer(sharpen_when_shifted=False, cross_fit=False, seed=0).fit(ref, y)  # the rule before
    before = lt.predict(query)
    assert not lt.distance_ignored_ and lt.temperature_ == 1.0
    lt.sharpen_when_shifted = True  # acts at predict time only
    after = lt.predict(query)
    assert not lt.distance_ignored_ and 0 < lt.temperature_ < 0.9
    np.testing.assert_array_equal(after.raw_prediction, before.raw_prediction)  # a temperature keeps the labels
    assert (after.raw_prediction[~is_novel] == y_known).mean() > 0.95
    # The softmax part's median is brought back to the held-out reference cells' median ...
    z = lt.scaler_.transform(query)
    softmax = lt._adjust_for_shift(lt._components(z, query=True), z)["softmax"]
    assert np.median(softmax) == pytest.approx(np.median(lt.calibration_["softmax"]), rel=0.05)
    # ... so fewer known cells are unknown, while the new type stays unknown and ranks above them.
    assert after.unknown[~is_novel].mean() <= before.unknown[~is_novel].mean() / 2
    assert before.unknown[~is_novel].mean() > 0.01
    assert after.unknown[is_novel].mean() > 0.9 and roc_auc_score(is_novel, after.novelty) > 0.99
    # A query the classifier is surer of than of held-out cells (tighter clusters) is not sharpened, nor
    # is a query too small to estimate a shift, nor a score of one part.
    before_rule = LabelTransfer(sharpen_when_shifted=False, cross_fit=False, seed=0).fit(ref, y)
    tight, _ = _clusters(rng, 8.0 * np.eye(3, 10), 100, scale=0.7)
    np.testing.assert_array_equal(lt.predict(tight).novelty, before_rule.predict(tight).novelty)
    assert lt.temperature_ == 1.0
    np.testing.assert_array_equal(lt.predict(known[:40]).novelty, before_rule.predict(known[:40]).novelty)
    assert lt.temperature_ == 1.0
    softmax_only = LabelTransfer(novelty_score="softmax", seed=0).fit(ref, y)
    softmax_only.predict(query)
    assert softmax_only.temperature_ == 1.0
    # Half the query beyond the softmax part's threshold: a shift cannot be told from new types, so
    # nothing is sharpened and the warning says what to do.
    unsure, _ = _clusters(rng, 0.6 * 8.0 * np.eye(3, 10), 100)
    with caplog.at_level("WARNING", logger="cellweave.tl._transfer"):
        lt.predict(unsure)
    assert lt.temperature_ == 1.0 and "not sharpened (sharpen_when_shifted)" in caplog.text


def test_a_far_query_is_never_sharpened_when_shifted(cells) -> None:
    """Without ``softmax_when_far`` a far query is scored unadjusted, the rule before: ``sharpen_when_shifted``
    does not sharpen it either."""
    ref, y, _, _, _ = cells
    rng = np.random.default_rng(12)
    far, _ = _clusters(rng, 0.8 * 8.0 * np.eye(3, 10) + 3.0, 100)  # far, and less sure to the classifier
    plain = LabelTransfer(novelty_score="combined", softmax_when_far=False, sharpen_when_far=False,
                          sharpen_when_shifted=False, seed=0).fit(ref, y)
    shifted = LabelTransfer(novelty_score="combined", softmax_when_far=False, sharpen_when_far=False,
                            seed=0).fit(ref, y)
    np.testing.assert_array_equal(shifted.predict(far).novelty, plain.predict(far).novelty)
    assert shifted.far_ and not shifted.distance_ignored_ and shifted.temperature_ == 1.0


def test_every_cli_novelty_score_has_its_parts() -> None:
    from cellweave._constants import NOVELTY_SCORES
    from cellweave.tl._transfer import NOVELTY_COMPONENTS

    assert set(NOVELTY_SCORES) == set(NOVELTY_COMPONENTS) and NOVELTY_SCORES[0] == "combined+composition"
    assert NOVELTY_COMPONENTS["combined+composition"] == ("distance", "softmax", "composition")
    assert NOVELTY_COMPONENTS["combined"] == ("distance", "softmax")  # the default before, unchanged
    assert LabelTransfer().novelty_score == NOVELTY_SCORES[0]


def test_composition_finds_a_novel_type_next_to_a_known_one_that_distance_misses() -> None:
    """A type the reference lacks, one sd from a known type: close by distance, but its cells are
    each other's neighbours and not the reference's, which ``composition`` counts."""
    rng = np.random.default_rng(0)
    centers = 3.0 * rng.standard_normal((3, 10))
    ref, y = _clusters(rng, centers, 400)
    known, _ = _clusters(rng, centers, 150)
    novel, _ = _clusters(rng, [centers[0] + 1.0], 150)
    query = np.concatenate([known, novel])
    is_novel = np.r_[np.zeros(len(known), bool), np.ones(len(novel), bool)]
    auroc = {name: roc_auc_score(is_novel, LabelTransfer(novelty_score=name, seed=0).fit(ref, y)
                                 .predict(query).novelty)
             for name in ("distance", "combined", "composition", "combined+composition")}
    assert auroc["composition"] > 0.95 and auroc["distance"] < 0.9 and auroc["combined"] < 0.9
    assert auroc["combined+composition"] > auroc["combined"] + 0.05
    lt = LabelTransfer(novelty_score="composition", seed=0).fit(ref, y)
    out = lt.predict(query)
    assert out.unknown[is_novel].mean() > 0.5 and out.unknown[~is_novel].mean() < 0.1
    # A query of known types only, mixed with the reference, is scored as held-out reference cells are:
    # its log-odds of own neighbours sit near 0 and few of its cells cross the threshold.
    mixed = lt.predict(known)
    assert abs(float(np.median(mixed.novelty))) < 0.5 and mixed.unknown.mean() < 0.08


def test_composition_is_lowered_for_a_query_shifted_as_a_whole() -> None:
    """A query of known types moved off the reference is its own neighbourhood everywhere;
    ``shift_adjust`` takes the query's median excess off and divides the deviations by the ratio of
    the query's spread (median absolute deviation) to the held-out cells', as it scales distances."""
    rng = np.random.default_rng(1)
    centers = 8.0 * np.eye(3, 10)
    ref, y = _clusters(rng, centers, 300)
    shifted, _ = _clusters(rng, centers + 3.0 / np.sqrt(10), 200)
    lt = LabelTransfer(novelty_score="composition", seed=0).fit(ref, y)
    adjusted = lt.predict(shifted)
    spread = lt.composition_spread_
    lt.shift_adjust = False
    raw = lt.predict(shifted)
    assert lt.composition_spread_ == 1.0  # not left from the query before
    calibration = lt.calibration_["composition"]
    reference, query = float(np.median(calibration)), float(np.median(raw.novelty))
    assert query - reference > 0.5
    ratio = float(np.median(np.abs(raw.novelty - query))) / float(np.median(np.abs(calibration - reference)))
    assert spread == pytest.approx(max(ratio, 1.0), rel=1e-4)
    np.testing.assert_allclose(adjusted.novelty, reference + (raw.novelty - query) / spread, rtol=1e-4, atol=1e-4)
    assert adjusted.unknown.mean() < raw.unknown.mean() / 2


def test_composition_of_a_query_mixing_unevenly_is_scaled_back(cells) -> None:
    """Known cells moved off the reference by different amounts (a graded shift) mix unevenly with
    it and spread the query's composition: subtracting the median excess alone leaves the most moved
    quarter as enriched as a missing type. The spread's adjustment brings the query back to the
    held-out cells' spread; a mixed query with a novel type keeps its spread, and the type is found."""
    ref, y, _, _, novel = cells
    rng = np.random.default_rng(3)
    centers = 8.0 * np.eye(3, 10)
    graded, _ = _clusters(rng, centers, 150)
    graded = graded + rng.uniform(0.0, 4.0, size=(len(graded), 1)) / np.sqrt(10)  # shifted 0 to 4 sd
    lt = LabelTransfer(novelty_score="composition", seed=0).fit(ref, y)
    scaled = lt.predict(graded)
    assert lt.composition_spread_ > 1.5
    # The rule before: the median excess taken off, the spread left as it is.
    raw = lt._components(lt.scaler_.transform(graded), query=True)["composition"]
    excess = float(np.median(raw)) - float(np.median(lt.calibration_["composition"]))
    before = (raw - max(excess, 0.0)) > lt.threshold_
    assert before.mean() > 0.2
    assert scaled.unknown.mean() < before.mean() / 2.5
    # A mixed query with a novel type (the fixture's) has about the held-out spread: the type stays found.
    mixed = np.vstack([_clusters(rng, centers, 100)[0], novel[:60]])
    out = lt.predict(mixed)
    assert lt.composition_spread_ < 1.3
    is_novel = np.arange(len(mixed)) >= 300
    assert roc_auc_score(is_novel, out.novelty) > 0.95 and out.unknown[is_novel].mean() > 0.8


def test_a_far_query_keeps_the_composition_part_beside_the_softmax(cells) -> None:
    """``softmax_when_far`` leaves out the distance only: the composition part, adjusted for the
    query's shift, is ranked beside the classifier's, against the threshold of those two parts."""
    ref, y, _, _, _ = cells
    rng = np.random.default_rng(8)
    far, _ = _clusters(rng, 8.0 * np.eye(3, 10) + 3.0, 100)
    lt = LabelTransfer(novelty_score="combined+composition", sharpen_when_far=False, seed=0).fit(ref, y)
    out = lt.predict(far)
    assert lt.distance_ignored_ and lt.applied_threshold_ == lt.softmax_threshold_
    z = lt.scaler_.transform(far)
    parts = lt._adjust_enrichment(lt._components(z, query=True))
    ranks = [np.searchsorted(lt.calibration_[name], parts[name], side="right") / len(lt.calibration_[name])
             for name in ("softmax", "composition")]
    weights = [lt.part_weights_[name] for name in ("softmax", "composition")]  # renormalized over the two
    np.testing.assert_allclose(out.novelty, np.average(ranks, axis=0, weights=weights), rtol=1e-5)
    np.testing.assert_array_equal(out.unknown, out.novelty > lt.softmax_threshold_)
    assert out.unknown.mean() < 0.05
    # For the two-part score the far threshold is still the softmax part's own, as before.
    combined = LabelTransfer(novelty_score="combined", seed=0).fit(ref, y)
    calibration = LabelTransfer(novelty_score="softmax", seed=0).fit(ref, y).calibration_["softmax"]
    ranks = np.searchsorted(calibration, calibration, side="right") / len(calibration)
    assert combined.softmax_threshold_ == pytest.approx(float(np.quantile(ranks, 0.99)))


def _pairs(seed: int):
    """Six types in three pairs, the two of a pair 1 sd apart and the pairs far apart; a query of the
    six and a novel type 1 sd from the first pair. A type missing from such a reference is near a known
    one: the composition tells it best, the distance less, the classifier least."""
    rng = np.random.default_rng(seed)
    base = 10.0 * np.eye(3, 10)
    centers = np.concatenate([base, base + 1.0])
    ref, y = _clusters(rng, centers, 200)
    known, _ = _clusters(rng, centers, 60)
    novel, _ = _clusters(rng, [base[0] - 1.0], 120)
    is_novel = np.r_[np.zeros(len(known), bool), np.ones(len(novel), bool)]
    return ref, y, np.concatenate([known, novel]), is_novel


def test_weight_parts_follow_how_well_each_part_tells_a_type_the_reference_leaves_out() -> None:
    """``weight_parts``: each part weighted by its AUROC less 0.5 for the reference's own types left
    out in turn; the weights learned there carry over to a novel type of the same kind in the query."""
    ref, y, query, is_novel = _pairs(0)
    weighted = LabelTransfer(seed=0).fit(ref, y)
    equal = LabelTransfer(weight_parts=False, seed=0).fit(ref, y)
    aurocs, weights = weighted.part_aurocs_, weighted.part_weights_
    assert set(aurocs) == set(weights) == {"distance", "softmax", "composition"}
    above = {name: max(a - 0.5, 0.0) for name, a in aurocs.items()}
    for name in weights:
        assert weights[name] == pytest.approx(above[name] / sum(above.values()))
    assert weights["composition"] > weights["distance"] > weights["softmax"] > 0
    assert equal.part_aurocs_ == {} and set(equal.part_weights_.values()) == {1 / 3}
    out, before = weighted.predict(query), equal.predict(query)
    assert roc_auc_score(is_novel, out.novelty) > roc_auc_score(is_novel, before.novelty) + 0.03
    assert out.unknown[~is_novel].mean() < 0.05
    # The score is the weighted mean of the parts' conformal ranks (the query is mixed: no adjustment acts).
    weighted.shift_adjust = False
    raw = weighted.predict(query)
    parts = weighted._components(weighted.scaler_.transform(query), query=True)
    ranks = [np.searchsorted(weighted.calibration_[n], parts[n], side="right") / len(weighted.calibration_[n])
             for n in parts]
    np.testing.assert_allclose(raw.novelty, np.average(ranks, axis=0, weights=[weights[n] for n in parts]), rtol=1e-5)
    # The predicted labels do not depend on the weights.
    np.testing.assert_array_equal(out.raw_prediction, before.raw_prediction)


def test_weight_parts_stay_equal_without_a_type_to_leave_out_or_a_second_part(cells) -> None:
    ref, y, _, _, _ = cells
    rng = np.random.default_rng(2)
    small, y_small = _clusters(rng, 8.0 * np.eye(3, 10), 15)  # no type has the 20 cells a left-out type needs
    lt = LabelTransfer(novelty_score="combined", seed=0).fit(small, y_small)
    assert lt.part_aurocs_ == {} and lt.part_weights_ == {"distance": 0.5, "softmax": 0.5}
    alone = LabelTransfer(novelty_score="distance", seed=0).fit(ref, y)
    assert alone.part_aurocs_ == {} and alone.part_weights_ == {"distance": 1.0}


def test_weight_parts_skip_a_left_out_type_whose_rest_cannot_be_split() -> None:
    """A type of two cells fits (one for the scorer, one held out) but would leave a single cell in the
    70% a pseudo-query's scorer is fit on: it stays out of the pseudo-queries, and the others weigh."""
    rng = np.random.default_rng(0)
    ref, y = _clusters(rng, 8.0 * np.eye(3, 10), 150)
    ref = np.vstack([ref, 8.0 * np.eye(4, 10)[3] + rng.standard_normal((2, 10))]).astype(np.float32)
    y = np.r_[y, ["rare", "rare"]]
    lt = LabelTransfer(seed=0).fit(ref, y)
    assert set(lt.part_aurocs_) == {"distance", "softmax", "composition"}
    assert sum(lt.part_weights_.values()) == pytest.approx(1.0)
