"""Label transfer on embeddings: a classifier, a novelty score and a threshold set on the reference.

Shared by :func:`cellweave.tl.annotate`, :func:`cellweave.tl.map_query` and the benchmark, so
that the benchmark measures exactly what users run.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from cellweave._constants import NOVELTY_SCORES
from cellweave._exceptions import CellWeaveInputError

logger = logging.getLogger(__name__)

#: Label given to query cells whose novelty is above the threshold.
UNKNOWN_LABEL = "unknown"
#: Neighbours averaged in the novelty score.
N_NOVELTY_NEIGHBORS = 15
#: Share of the reference held out to calibrate the novelty threshold.
CALIBRATION_FRACTION = 0.2
#: ``cross_fit="auto"``: a single held-out split of fewer cells than this is replaced by cross-fitting
#: (at the default ``novelty_quantile`` of 0.99, fewer than 5 held-out cells would lie beyond the threshold).
MIN_CALIBRATION_CELLS = 500
#: Folds of the cross-fitted calibration (each reference cell held out once).
CROSS_FIT_FOLDS = 5
#: Fewest query cells whose median distance ``shift_adjust`` takes as an estimate of a shift.
MIN_SHIFT_CELLS = 50
#: Fewest query cells whose neighbourhoods the ``composition`` part counts; a smaller query gets a neutral part.
MIN_COMPOSITION_CELLS = 50
#: Ridge added to the shared covariance of the Mahalanobis score (the embedding is standardized).
MAHALANOBIS_RIDGE = 1e-3
#: Most reference types left out in turn to weigh the score's parts (``weight_parts``), the largest first.
N_WEIGHT_TYPES = 4
#: Fewest cells a reference type needs to be left out when the parts are weighed.
MIN_WEIGHT_TYPE_CELLS = 20
#: Fewest cells of a type kept in the other types' cells when the parts are weighed (rarer ones are left out).
MIN_SPLIT_TYPE_CELLS = 5
#: A sharpening temperature below this is logged as a warning (above it, at info: it changes little).
SHARPEN_WARN_TEMPERATURE = 0.9
#: Share of the other types' cells scored beside the left-out type when the parts are weighed.
WEIGHT_QUERY_FRACTION = 0.3
#: The parts of each ``novelty_score``; ``"combined"`` averages its parts' conformal ranks.
NOVELTY_COMPONENTS = {
    "combined": ("distance", "softmax"),
    "distance": ("distance",),
    "mahalanobis": ("mahalanobis",),
    "softmax": ("softmax",),
    "distance+mahalanobis+softmax": ("distance", "mahalanobis", "softmax"),
    "composition": ("composition",),
    "combined+composition": ("distance", "softmax", "composition"),
}
#: Parts of the score that measure how far a cell is, and so grow under a shift of the whole query.
DISTANCE_COMPONENTS = ("distance", "mahalanobis")
#: Parts that grow under a shift of the whole query and are adjusted for it by subtraction (log-odds).
ENRICHMENT_COMPONENTS = ("composition",)


def _stratified_folds(labels: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """``CROSS_FIT_FOLDS`` folds of the reference (fewer when its largest type has fewer cells; ``None`` under
    2), stratified by type and shuffled with ``seed`` (a type of fewer cells than folds is spread over the
    folds it can fill)."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    n_splits = min(CROSS_FIT_FOLDS, int(np.unique(labels, return_counts=True)[1].max()))
    if n_splits < 2:
        return None
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros(len(labels)), labels))


def cross_fit_name(cross_fit: bool | str) -> str:
    """``cross_fit`` as records and the command line name it: ``"auto"``, ``"on"`` or ``"off"``."""
    return cross_fit if isinstance(cross_fit, str) else ("on" if cross_fit else "off")


@contextmanager
def _quiet(log: logging.Logger):
    """Warnings of ``log`` held back (the pseudo-queries of ``weight_parts`` are not the user's query)."""
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass
class TransferResult:
    """Per-query-cell outputs of :class:`LabelTransfer`."""

    prediction: np.ndarray  # object array of labels, "unknown" where novel
    raw_prediction: np.ndarray  # the classifier's label before the novelty cut
    confidence: np.ndarray  # float32 max class probability
    novelty: np.ndarray  # float32 novelty score (LabelTransfer.novelty_score), higher = more novel
    unknown: np.ndarray  # bool
    proba: np.ndarray = field(repr=False)  # (n, n_classes)


class LabelTransfer:
    """Logistic regression + a novelty score with a threshold, fit on reference embeddings only.

    The embedding is standardized on the reference. A multinomial logistic regression (``C``)
    fit on every reference cell predicts labels. The novelty threshold is calibrated on cells of
    known types that the scorer has not seen: 80% of the reference (stratified, seeded) fits the
    scorer, and the threshold is the ``novelty_quantile`` quantile of the scores of the held-out
    20%; a small reference is cross-fitted instead (``cross_fit`` below: every cell held out once,
    the query scored by the whole reference), and ``groups`` calibrate on whole batches. Nothing here
    looks at the query but ``shift_adjust`` (below), which reads its distances, and the
    ``composition`` part, which reads the query's own neighbourhoods. "The 80%" below is the index
    and classifier that score the query: the whole reference when cross-fitted or calibrated on
    batches.
    ``novelty_score`` chooses the score:

    - ``"distance"``: mean Euclidean distance to the ``k`` nearest cells of the 80% index (the
      rule of earlier versions);
    - ``"softmax"``: one minus the maximum class probability of a second logistic regression fit on
      the same 80% (Hendrycks & Gimpel 2017, "A baseline for detecting misclassified and
      out-of-distribution examples");
    - ``"combined"`` (the default before ``"combined+composition"``): the mean of the two scores'
      conformal ranks, each score replaced by the share of held-out reference cells scoring at most
      as high, so one minus the mean of two
      conformal p-values (Bates et al. 2023, "Testing for outliers with conformal p-values"; twice a
      mean of p-values is a valid p-value, Vovk & Wang 2020, "Combining p-values via averaging").
      The two fail in different places: distance flags every cell of a shifted query as far, and
      max-softmax misses a novel type that one known type absorbs. On the development panel (the
      fixed-table model with HVG tokens, ``benchmarks/novelty_scores.py``) the combined score raised
      novel-type AUROC from 0.685 (distance) and 0.707 (softmax) to 0.738 and cut the shifted known
      cells called unknown from 30% (distance) to 20% (softmax alone: 15%); with the shipped model
      AUROC 0.622 -> 0.674, but shifted known cells called unknown 12.9% -> 13.8% (softmax alone 1.9%).
    - ``"mahalanobis"``: the smallest Mahalanobis distance to a class mean, one covariance shared by
      the classes (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution
      samples and adversarial attacks"; here on the standardized embedding with a small ridge, not on
      a network's layers); ``shift_adjust`` does not apply to it alone;
    - ``"distance+mahalanobis+softmax"``: the mean conformal rank of the three.
    - ``"composition"``: how much more often than chance the query cells are each other's nearest
      neighbours than the reference's (:meth:`_composition`: the log-odds of the query's share among
      a cell's ``k`` nearest cells of reference and query together, smoothed once over its query
      neighbours, against the share expected if the query were mixed with the reference; the
      sample density ratio of MELD, Burkhardt et al. 2021, and the query-versus-reference
      neighbourhoods of Milo as Dann et al. 2023 use it to find states a reference lacks). A type
      the reference lacks forms neighbourhoods of query cells only, however near a known type it
      lies, where a distance sees only that it is near. It reads the query as a whole: a cell's score
      depends on the other query cells, it needs ``MIN_COMPOSITION_CELLS`` of them (a smaller query
      gets a neutral part, with a warning), and a known type far more common in the query than in
      the reference also scores above 0. Alone it reaches the highest novel-type AUROC measured
      (0.910 ± 0.004 on the panel's splits, adapted, three seeds) but calls more cells of a shifted
      query unknown (4.9% ± 2.6 batch-calibrated, cell lines across protocols 13.5%, before the spread
      adjustment below; with it 1.0% ± 0.7 on a rerun of the three seeds' adaptation, whose own
      figure without it is 2.9% ± 3.5), so the default mixes it with the other two.
    - ``"combined+composition"`` (default): the mean conformal rank of the distance, the max-softmax
      and the composition. On the development panel's splits (the head-adapted model, three seeds,
      ``benchmarks/novelty_scores.py --adapt --seed S``) it raised novel-type AUROC from 0.826 ± 0.005
      (``"combined"``) to 0.902 ± 0.001 and cut shifted known cells called unknown (calibrated on the
      reference's batches, as the panel does) from 3.4% ± 2.2 to 1.3% ± 1.1: pancreas across species
      9.9% -> 0.0%, cell lines across protocols 0.1% -> 3.5% (6.9% on one seed; 3.4% with the spread
      adjustment of ``shift_adjust`` below, which leaves AUROC within 0.001). Known cells called
      unknown when nothing is shifted 1.2% -> 0.9%, novel cells called unknown 28% -> 47%, predicted
      labels unchanged. The same composition on PCA of the HVGs scores 0.799, above every other
      baseline (logistic-regression max-softmax 0.719); on the ADT dataset it beats this default
      (0.978 against 0.932, 0.963 with ``weight_parts`` below), which composition alone matches (0.977).

      What differs from MELD and Milo: the share is counted among each cell's ``k`` nearest cells, not
      by a graph filter or a count model of neighbourhoods, and it is one part of a conformal score
      with a threshold calibrated on the reference, not a test of differential abundance.

    On the head-adapted model's latent (``cellweave adapt``, the 13 development-panel datasets, seed 0,
    the splits of ``benchmarks/novelty_scores.py --adapt``, measured by a prototype of that script
    reading cached embeddings; the script's own run on bone marrow agrees within 0.004) novel-type
    AUROC was 0.833 combined, 0.844 distance, 0.838 Mahalanobis and 0.847 for the three together,
    but that combination called more shifted known cells unknown (26.6% against 23.0%); neither is
    the default, and neither was measured zero-shot.

    ``softmax_when_far`` (default since this release): when half the query is beyond the threshold by
    distance, so that ``shift_adjust`` cannot tell a shift from new types, rank the softmax part alone
    instead of the whole score (``softmax_threshold_``, the same quantile of the softmax part's held-out
    ranks; after :meth:`predict`, ``applied_threshold_`` is the one used). On the head-adapted latent
    (the panel's splits, batch-calibrated as the panel does, three seeds, ``benchmarks/novelty_scores.py
    --adapt --seed S``) it cut shifted known cells called unknown from 22.2% to 8.6% (after Harmony on
    reference + query 5.7% -> 4.7%; pancreas across species stays the worst, 40%, 5% and 31% by seed)
    and moved novel-type AUROC from 0.827 to 0.825 (seed 0: CA1, where a held-out type is half the
    query, 0.975 -> 0.949); zero-shot it left the panel's novel-type AUROC at 0.753 and cut shifted
    known cells called unknown from 3.5% to 2.9% (``benchmarks/published/novelty_scores/``). ``False``
    keeps the rule before: a query that far is scored unadjusted, and much of it may be called unknown.

    ``sharpen_when_far`` (default since this release, with ``softmax_when_far``): a query that far is
    often also one the classifier is unsure of (mouse cells after training on human ones), and its
    max-softmax alone then calls many known cells unknown. Its softmax part is recomputed at the
    temperature (``temperature_``, at most 1) that brings the query's median back to the held-out
    reference cells' median, before the softmax threshold; a type the reference lacks stays the most
    doubtful part of the query. Temperature scaling (Guo et al. 2017, "On calibration of modern neural
    networks") estimated on the query, as ``shift_adjust`` re-estimates the distance's scale; it
    assumes, as that does, that at least half the query is of reference types: a query mostly of new
    types is then largely missed (a warning names ``sharpen_when_far=False``). On the head-adapted
    latent (the panel's splits, calibrated on the reference's groups as the panel does, three seeds,
    ``benchmarks/novelty_scores.py --adapt --seed S``) it cut shifted known cells called unknown from
    8.6% ± 5.9 to 3.4% ± 2.2 (pancreas across species 25.4% -> 9.9%), with novel-type AUROC (0.825),
    the share of novel cells called unknown (28.3% -> 28.1%) and the predicted labels unchanged (a
    temperature keeps the top class); zero-shot (seed 0) it changed nothing.

    With ``groups`` (the reference's batches: protocol, study, donor) of at least two values,
    :meth:`fit` calibrates on batches instead: each batch in turn (at most 5 folds of whole batches)
    is scored by an index and classifier fit on the others, and query cells are scored by the index
    and classifier of the whole reference. A query as different from the reference as its batches
    are from each other is then not unknown; a conformal score calibrated across groups, as in
    split-conformal prediction under distribution shift (Tibshirani et al. 2019), but without
    reweighting. On the panel's ADT dataset (12 studies in each reference, one held out) the share
    of shifted known cells called unknown fell from 5.0% to 2.2%; the price is a higher threshold, so
    fewer cells of a novel type are called unknown (cell lines 58% -> 34%, same AUROC).

    ``shift_adjust`` (default): a query of known types in a new state (another protocol, study,
    species or condition) lies farther from the reference than the held-out reference cells do, all
    of it, and was called unknown wholesale (38% of a pancreas query across species). The query's
    distances are therefore divided by the ratio of their median to the held-out reference cells'
    median before they are ranked, when that ratio is above 1: a shift of the whole query is taken
    out, while a type the reference lacks stays far relative to the rest of the query. The idea is
    prediction-time normalization, statistics recomputed on the test batch (Nado et al. 2020,
    "Evaluating prediction-time batch normalization for robustness under covariate shift"); here
    only one scale, of the novelty distance, is re-estimated. It assumes at least half the query is
    of reference types: it is skipped for queries of fewer than ``MIN_SHIFT_CELLS`` cells and,
    with a warning, when the query's median is beyond the threshold itself (half of it would be
    unknown by distance, and a shift cannot be told from a query of new types). On the development
    panel (shipped model, seed 0, ``benchmarks/novelty_scores.py``) the share of shifted known cells
    called unknown fell from 15.3% to 1.7% and novel-type AUROC moved from 0.750 to 0.753 (3 seeds,
    ``cellweave benchmark --task panel``: 12.8% to 3.9%); cells of a held-out type called unknown
    fell from 18.0% to 15.4%, the price of the tolerance.

    The composition part (an enrichment, in log-odds) is adjusted by location and spread
    (:meth:`_adjust_enrichment`): the query's median excess over the held-out reference cells' median
    is taken off each cell, since a query of known types that is not mixed with the reference is its
    own neighbourhood everywhere, and a type the reference lacks more than the rest of it; and when
    the query's composition is more spread out than the held-out cells' (median absolute deviations,
    ``composition_spread_``), the deviations from its median are divided by the ratio, since known
    types that mix unevenly (one partly, one not at all) spread it, and the one that does not mix
    would otherwise sit as far above the median as a missing type. On the panel's splits (the
    head-adapted model, a rerun of three seeds' adaptation, batch-calibrated) the spread adjustment
    cut shifted known cells called unknown on the one seed where it acts from 2.5% to 1.3% (cell
    lines across protocols 6.9% -> 3.4%; composition alone 7.8% -> 1.9%), with novel-type AUROC
    0.904 -> 0.903; the other two seeds' queries are not more spread than the held-out cells, and
    nothing changed. A known type that does not mix with the reference at all, in a query that
    otherwise does, still reads as missing to this part. When the typical query cell is beyond
    the threshold by distance, ``softmax_when_far`` leaves out the distance parts only: the
    composition part, so adjusted, stays beside the softmax part, and the threshold of those parts
    (``softmax_threshold_``) applies.

    ``weight_parts`` (default since this release): a score of several parts weights each part's
    conformal rank by how well that part tells a type the reference itself lacks, instead of equally
    (:meth:`_weigh_parts`: the reference's largest types left out in turn; ``part_aurocs_`` and
    ``part_weights_``). The parts fail in different places by dataset: on the ADT dataset the
    classifier's max-softmax misses a subtype that a sibling absorbs confidently (memory CD4 T cells
    left out: AUROC 0.50), while the composition finds it (0.98), and the equal mean sat 0.044 below the
    composition on PCA. Both thresholds are the same quantile of the held-out cells' weighted ranks (for
    a far query, over the parts kept, their weights renormalized), and predicted labels do not change.
    On the panel's splits (the head-adapted model, three seeds, ``benchmarks/novelty_scores.py --adapt
    --seed S``, the ``weighted`` rows) novel-type AUROC rose from 0.902 ± 0.001 to 0.914 ± 0.002 (ADT
    0.934 -> 0.963, the composition on PCA 0.978; bone marrow +0.038, Haber intestine +0.041,
    endocrinogenesis +0.035; none fell by more than 0.013, the novoSpaRc intestine, near chance either
    way), cells of a novel type called unknown 46% -> 51%, known cells 0.7% -> 0.7%, and shifted known
    cells called unknown (batch-calibrated) 0.5% -> 0.4% (cell lines on seed 2 3.4% -> 2.0%);
    ``"combined"`` 0.826 -> 0.834. It costs four more fits of the scorer in :meth:`fit` (a whole fit on
    10,000 synthetic cells of 15 types, 256-d, one thread: 0.5 s -> 3.2 s). A reference without three
    types of ``MIN_WEIGHT_TYPE_CELLS`` cells keeps equal weights (the CA1 dataset, two types). The rule
    was designed after seeing ADT's parts; it reads no query labels, and what it estimates on the
    reference is what the panel's protocol does to the query. ``False``: equal weights, the rule before.

    ``sharpen_when_shifted`` (default since this release): the softmax part of any query the classifier is
    less sure of than of held-out reference cells is sharpened as a far query's is (:meth:`_sharpened_softmax`),
    not only when the query is far by distance; ``temperature_`` is then below 1 for a query that is not
    far too. A query shifted moderately in every part at once (mouse cells against a human reference, near
    it by distance after ``shift_adjust``) crossed the threshold of the combined score although no single
    part called many cells unknown, since averaging conformal ranks narrows the held-out cells' spread of
    the mean; the distance and composition parts had their own adjustments for a shift and the softmax
    part had none. It is skipped, with a warning, when the query's median uncertainty is beyond the
    softmax part's own ``novelty_quantile`` of held-out cells (half of the query would be unknown by the
    classifier alone: a shift cannot be told from new types), and for queries of fewer than
    ``MIN_SHIFT_CELLS`` cells. ``weight_parts`` weighs the parts without it, as before. As a user runs
    ``annotate`` on two objects (``benchmarks/annotate_files.py``, the panel's three shift datasets, seed
    0) shifted known cells called unknown fell from 5.2% to 3.4% (mouse pancreas against the human
    reference 28.8% -> 18.3%, the rest unchanged; macro-F1 with unknown counted wrong 0.784 -> 0.795); on
    the panel's splits (``benchmarks/novelty_scores.py --default-rows``, seed 0) adapted: novel-type
    AUROC 0.912 -> 0.912, shifted known cells called unknown 0.0% -> 0.0% (batch-calibrated, as the
    panel does), novel cells called unknown 52.2% -> 50.8%; zero-shot: 0.871 -> 0.871, 1.1% -> 1.1% and
    34.6% -> 33.2% (``benchmarks/published/novelty_scores/sharpen_when_shifted_*``). The rule was designed
    after seeing the mouse split of ``annotate_files.py``, which its figure therefore does not test blind.
    Only a score of several parts is sharpened so (``"softmax"`` alone was not measured with it), and only
    with ``shift_adjust``. ``False``: the softmax part is sharpened only for a far query, the rule before.

    ``cross_fit`` (``"auto"``, the default since this release): a small reference is calibrated on all of
    its cells instead of one held-out 20%: ``CROSS_FIT_FOLDS`` stratified folds are held out in turn, each
    scored by an index and classifier fit on the others, and the query is scored by the index and
    classifier of the whole reference, as calibration on batches (``groups``) already did. With one split
    of a 225-cell reference the 0.99 quantile is the largest of 45 scores, so which known query cells
    cross it depends on the draw; the query was also scored against 80% of an already small reference.
    Cross-conformal prediction (Vovk 2015, "Cross-conformal predictors") and the jackknife+ / CV+ of
    Barber et al. 2021 ("Predictive inference with the jackknife+"); what differs: the threshold is a
    quantile of the pooled held-out scores, not the CV+ interval, so the query, scored by the whole
    reference, lies a little nearer it than the held-out cells did to their folds (the guarantee is not
    kept exactly; the error is towards fewer cells called unknown). ``"auto"`` cross-fits when the single
    split would hold fewer than ``MIN_CALIBRATION_CELLS`` cells (under 5 beyond the 0.99 quantile);
    ``True`` always; ``False`` never (the rule before); with ``groups`` of two or more batches the
    batches are the folds either way. The pseudo-queries of ``weight_parts`` keep one split. On small
    synthetic references (3 types of 40 cells, 20 draws, ``tests/tl/test_transfer.py``) the share of
    known cells called unknown by distance fell from 2.6% ± 3.0 (at worst 13%) to 1.1% ± 1.0; as a user
    runs ``annotate --adapt`` on two objects (``benchmarks/annotate_files.py --adapt``, seed 0) shifted
    known cells called unknown fell from 4.7% to 2.0% (cell lines, CEL-seq2 query against a 225-cell
    reference 6.4% -> 0.0%; mouse pancreas query 12.4% -> 2.6%, human 7.4% -> 8.0%; the 13-study ADT
    references are large and unchanged) and macro-F1 with unknown counted wrong rose from 0.808 to 0.818;
    zero-shot (``annotate_files.py``) 3.4% -> 1.6% (mouse pancreas query 18.3% -> 7.8%; macro-F1 0.795 ->
    0.804, logistic regression 0.762). On the panel's splits (``benchmarks/novelty_scores.py --default-rows``,
    seed 0; most panel references hold over 2,500 cells and keep one split, so only some datasets change)
    zero-shot: novel-type AUROC 0.871 -> 0.871 (hippocampus 0.882 -> 0.853, the largest fall; MERFISH
    +0.014), known cells called unknown 1.0% -> 0.7%, novel cells 33.2% -> 34.2%, shifted known cells 1.1%
    -> 0.4%; adapted: 0.912 -> 0.912, 0.8% -> 0.8%, 50.8% -> 50.4%, 0.0% -> 0.1%
    (``benchmarks/published/novelty_scores/cross_fit_*``). It costs ``CROSS_FIT_FOLDS`` fits of the scorer
    instead of one on a small reference. The rule was chosen after the thirty-fifth session's diagnosis of
    the adapted cell-line split (a 225-cell reference), which its figure therefore does not test blind.

    What differs from a conformal test: the threshold is a quantile of calibration scores, not a
    p-value level, and the combined scores of the calibration cells use their own ranks.
    """

    def __init__(self, *, novelty_quantile: float = 0.99, n_neighbors: int = N_NOVELTY_NEIGHBORS, C: float = 1.0,
                 novelty_score: str = "combined+composition", shift_adjust: bool = True, softmax_when_far: bool = True,
                 sharpen_when_far: bool = True, weight_parts: bool = True, sharpen_when_shifted: bool = True,
                 cross_fit: bool | str = "auto", seed: int = 0) -> None:
        if not 0.0 < novelty_quantile <= 1.0:
            raise CellWeaveInputError(f"novelty_quantile must be in (0, 1], got {novelty_quantile}.")
        if novelty_score not in NOVELTY_SCORES:
            raise CellWeaveInputError(f"novelty_score={novelty_score!r} is not one of {', '.join(NOVELTY_SCORES)}; "
                                      "'combined+composition' (the default) ranks the distance, the max-softmax "
                                      "and how much the query cells are each other's neighbours.")
        self.novelty_quantile = novelty_quantile
        self.n_neighbors = n_neighbors
        self.C = C
        self.novelty_score = novelty_score
        self.shift_adjust = bool(shift_adjust)
        self.softmax_when_far = bool(softmax_when_far)
        self.sharpen_when_far = bool(sharpen_when_far)
        self.weight_parts = bool(weight_parts)
        self.sharpen_when_shifted = bool(sharpen_when_shifted)
        if not (isinstance(cross_fit, (bool, np.bool_)) or cross_fit == "auto"):
            raise CellWeaveInputError(f"cross_fit must be True, False or 'auto', got {cross_fit!r}.")
        self.cross_fit = cross_fit if isinstance(cross_fit, str) else bool(cross_fit)
        self.seed = seed

    def _classifier(self, z: np.ndarray, labels: np.ndarray):
        from sklearn.linear_model import LogisticRegression

        # lbfgs fits the multinomial (softmax) model for more than two classes.
        return LogisticRegression(C=self.C, max_iter=1000, random_state=self.seed).fit(z, labels)

    def fit(self, embedding: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> LabelTransfer:
        return self._fit(embedding, labels, groups)

    def _fit(self, embedding: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None, *,
             classify: bool = True) -> LabelTransfer:
        """:meth:`fit`; ``classify=False`` (the pseudo-queries of ``weight_parts``, no ``groups``) fits only
        the novelty scorer and its thresholds, not the label classifier they never use."""
        from sklearn.model_selection import GroupKFold, train_test_split
        from sklearn.preprocessing import StandardScaler

        labels = np.asarray(labels).astype(str)
        # Fitted state, set here and not at construction: the parts of novelty_score as it is at fit.
        self.components_ = NOVELTY_COMPONENTS[self.novelty_score]
        self.scaler_ = StandardScaler().fit(embedding)
        z = self.scaler_.transform(embedding)
        self.classifier_ = self._classifier(z, labels) if classify else None
        # The classifier's classes are the sorted distinct labels.
        self.classes_ = [str(c) for c in (self.classifier_.classes_ if classify else np.unique(labels))]
        n_groups = 0 if groups is None else len(np.unique(np.asarray(groups).astype(str)))
        if groups is not None and len(groups) != len(labels):
            raise CellWeaveInputError(f"groups has {len(groups)} values for {len(labels)} reference cells; give "
                                      "one batch name per reference cell, in the embedding's order.")
        n_test = max(len(self.classes_), math.ceil(CALIBRATION_FRACTION * len(labels)))
        cross_fit = self.cross_fit is True or (self.cross_fit == "auto" and n_test < MIN_CALIBRATION_CELLS)
        folds = None
        if n_groups >= 2:
            # Whole batches held out in turn.
            folds = list(GroupKFold(n_splits=min(CROSS_FIT_FOLDS, n_groups)).split(
                z, labels, np.asarray(groups).astype(str)))
        elif cross_fit:
            folds = _stratified_folds(labels, self.seed)
            if folds is None:
                logger.info("cross_fit: the reference's largest type has fewer than 2 cells per fold; it is "
                            "calibrated on one held-out %.0f%% instead", 100 * CALIBRATION_FRACTION)
            elif "softmax" in self.components_ and any(len(np.unique(labels[fit])) < 2 for fit, _ in folds):
                raise CellWeaveInputError("Cross-fitting the novelty threshold: in one fold the other reference "
                                          "cells hold a single type, too few for a classifier. Give a reference "
                                          "with more cells of each type, or pass cross_fit=False "
                                          "(--cross-fit off) to calibrate on one held-out 20%.")
        self.cross_fitted_ = folds is not None and n_groups < 2
        if folds is not None:
            # Each fold held out in turn; the query is scored by the whole reference's scorer.
            self.k_ = min(self.n_neighbors, min(len(fit) for fit, _ in folds))
            parts = [self._fit_scorer(z[fit], labels[fit])._components(z[cal]) for fit, cal in folds]
            calibration = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
            self._fit_scorer(z, labels, classifier=self.classifier_)
        else:
            fit_idx, calib_idx = train_test_split(
                np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=self.seed
            )
            self.k_ = min(self.n_neighbors, len(fit_idx))
            calibration = self._fit_scorer(z[fit_idx], labels[fit_idx])._components(z[calib_idx])
        self.calibration_groups_ = n_groups if n_groups >= 2 else 0
        self.shift_factor_ = self.composition_spread_ = 1.0
        # Each component's held-out scores, sorted: the reference distribution a query score is ranked in.
        self.calibration_ = {name: np.sort(s) for name, s in calibration.items()}
        self.part_weights_ = {name: 1.0 / len(self.components_) for name in self.components_}
        self.part_aurocs_ = {}
        if self.weight_parts and len(self.components_) > 1:
            self._weigh_parts(z, labels)
        self.threshold_ = float(np.quantile(self._score(calibration), self.novelty_quantile))
        self.distance_ignored_ = self.far_ = False
        if "softmax" in self.calibration_ and len(self.components_) > 1:
            # The threshold of the parts kept for a far query (softmax_when_far): all but the distances.
            far = {name: calibration[name] for name in self.components_ if name not in DISTANCE_COMPONENTS}
            self.softmax_threshold_ = float(np.quantile(self._score(far), self.novelty_quantile))
        return self

    def _weigh_parts(self, z: np.ndarray, labels: np.ndarray) -> None:
        """``weight_parts``: each part's weight in the score, from how well it tells a type the reference itself
        leaves out. Each of the ``N_WEIGHT_TYPES`` largest reference types (of at least
        ``MIN_WEIGHT_TYPE_CELLS`` cells, with at least two other types; types of fewer than ``MIN_SPLIT_TYPE_CELLS``
        cells stay out of it all) is left out in turn: a label transfer
        with the same settings (equal weights, the adjustments' defaults but ``sharpen_when_shifted``, off) is
        fit on a stratified ``1 -
        WEIGHT_QUERY_FRACTION`` of the other types' cells and scores a pseudo-query of the rest of them and the
        left-out type (subsampled to a third of the pseudo-query at most, since ``shift_adjust`` takes most of a
        query to be of known types, but not below the ``MIN_COMPOSITION_CELLS`` the composition part needs),
        adjusted as a query is. The weights do not depend on the flags that act at predict time. A part's weight
        is its mean AUROC there less 0.5 (chance), floored at 0, normalized over the parts (``part_aurocs_``,
        ``part_weights_``); a part left out for a far pseudo-query counts as chance. When no type can be left
        out, or no part beats chance, the weights stay equal.

        Stacking, the weights of a combination chosen on held-out folds (Wolpert 1992, "Stacked
        generalization"), here with the folds made by leaving out a whole type, as in the leave-one-class-out
        validation of open-set recognition (Geng et al. 2021, "Recent advances in open set recognition: a
        survey"); what differs is that the weights are a simple function of each part's AUROC, not fit by a
        second-level model, so the few left-out types set one number per part and nothing more."""
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import train_test_split

        types, counts = np.unique(labels, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        left_out = [types[i] for i in order if counts[i] >= MIN_WEIGHT_TYPE_CELLS][:N_WEIGHT_TYPES]
        aurocs: dict[str, list[float]] = {name: [] for name in self.components_}
        # Types too rare to be split twice (the 70% here, then the scorer's 80%) stay out of the pseudo-queries.
        splittable = np.isin(labels, types[counts >= MIN_SPLIT_TYPE_CELLS])
        with _quiet(logger):
            for held_out in left_out:
                rest = np.flatnonzero((labels != held_out) & splittable)
                if len(np.unique(labels[rest])) < 2:
                    continue
                try:
                    fit_idx, query_idx = train_test_split(rest, test_size=WEIGHT_QUERY_FRACTION,
                                                          stratify=labels[rest], random_state=self.seed)
                except ValueError:  # a type of one cell, or more types than the query has cells
                    fit_idx, query_idx = train_test_split(rest, test_size=WEIGHT_QUERY_FRACTION, random_state=self.seed)
                if len(np.unique(labels[fit_idx])) < 2:
                    continue
                # The defaults of the adjustments, whatever this transfer's: they act at predict time only
                # (sharpen_when_shifted excepted: the weights are the ones measured before it).
                inner = LabelTransfer(novelty_quantile=self.novelty_quantile, n_neighbors=self.n_neighbors, C=self.C,
                                      novelty_score=self.novelty_score, weight_parts=False,
                                      sharpen_when_shifted=False, cross_fit=False, seed=self.seed)
                try:
                    inner._fit(z[fit_idx], labels[fit_idx], classify=False)
                except ValueError:  # a split the inner calibration cannot stratify: this type is not counted
                    logger.debug("weight_parts: leaving out %r leaves a split too small to calibrate; skipped",
                                 held_out)
                    continue
                new = np.flatnonzero(labels == held_out)
                # A third of the pseudo-query at most, as shift_adjust assumes, unless it would then be too small
                # for the composition part.
                n_new = max(len(query_idx) // 2, MIN_COMPOSITION_CELLS - len(query_idx))
                if len(new) > n_new:
                    new = np.sort(np.random.default_rng(self.seed).choice(new, n_new, replace=False))
                pseudo = np.concatenate([query_idx, new])
                zq = inner.scaler_.transform(z[pseudo])
                parts = inner._adjust_for_shift(inner._components(zq, query=True), zq)
                is_new = labels[pseudo] == held_out
                for name in self.components_:
                    aurocs[name].append(float(roc_auc_score(is_new, parts[name])) if name in parts else 0.5)
        if not left_out or not aurocs[self.components_[0]]:
            logger.info("No reference type of %d cells or more can be left out with two types beside it: the novelty "
                        "score's parts keep equal weights (weight_parts)", MIN_WEIGHT_TYPE_CELLS)
            return
        self.part_aurocs_ = {name: float(np.mean(a)) for name, a in aurocs.items()}
        above = {name: max(a - 0.5, 0.0) for name, a in self.part_aurocs_.items()}
        total = sum(above.values())
        if total > 0:
            self.part_weights_ = {name: a / total for name, a in above.items()}
        logger.info("Novelty score parts weighted by how well each tells a reference type left out (AUROC %s): %s "
                    "(weight_parts)", ", ".join(f"{n} {a:.3f}" for n, a in self.part_aurocs_.items()),
                    ", ".join(f"{n} {w:.2f}" for n, w in self.part_weights_.items()))

    def _fit_scorer(self, z: np.ndarray, labels: np.ndarray, classifier=None) -> LabelTransfer:
        """Fit the novelty scorer's parts on ``z`` (``classifier``: one already fit on it)."""
        from sklearn.neighbors import NearestNeighbors

        self.index_, self.calibration_classifier_, self.class_means_ = None, None, None
        if "distance" in self.components_ or "composition" in self.components_:
            self.index_ = NearestNeighbors(n_neighbors=self.k_).fit(z)
        if "mahalanobis" in self.components_:
            classes, codes = np.unique(labels, return_inverse=True)
            self.class_means_ = np.stack([z[codes == c].mean(axis=0) for c in range(len(classes))])
            within = z - self.class_means_[codes]
            # One covariance shared by the classes (Lee et al. 2018), a small ridge for collinear dimensions.
            covariance = within.T @ within / len(z) + MAHALANOBIS_RIDGE * np.eye(z.shape[1])
            self.precision_ = np.linalg.inv(covariance)
        if "softmax" in self.components_:
            if len(np.unique(labels)) < 2:
                raise CellWeaveInputError("Calibrating on batches: the reference cells outside one batch hold a "
                                          "single type, too few for a classifier. Give a reference whose batches "
                                          "share types, or no batch key.")
            self.calibration_classifier_ = classifier if classifier is not None else self._classifier(z, labels)
        return self

    def _components(self, z: np.ndarray, query: bool = False) -> dict[str, np.ndarray]:
        out = {}
        if self.index_ is not None:
            distances = self.index_.kneighbors(z)[0]
            if "distance" in self.components_:
                out["distance"] = distances.mean(axis=1)
            if "composition" in self.components_:
                out["composition"] = self._composition(z, distances, query)
        if self.class_means_ is not None:
            nearest = np.full(len(z), np.inf)
            for mean in self.class_means_:  # a loop over classes: no (cells x classes x dims) array
                diff = z - mean
                nearest = np.minimum(nearest, ((diff @ self.precision_) * diff).sum(axis=1))
            out["mahalanobis"] = nearest
        if self.calibration_classifier_ is not None:
            out["softmax"] = 1.0 - self.calibration_classifier_.predict_proba(z).max(axis=1)
        return out

    def _composition(self, z: np.ndarray, reference_distances: np.ndarray, query: bool) -> np.ndarray:
        """``composition``: how much more often than chance the cells scored together (``z``, the
        query) are each other's neighbours than the reference's, as log-odds. Among each cell's
        ``k_`` nearest cells of reference and ``z`` together (itself left out), the share from ``z``
        is averaged over the cell and its neighbours from ``z`` (one smoothing step on the joint kNN
        graph), then compared with the share expected if ``z`` were mixed with the reference,
        ``n_z / (n_z + n_reference)``: ``logit(share) - logit(expected)``, 0 for a cell of a known
        type in a well-mixed query. A type the reference lacks forms neighbourhoods of query cells
        only, however close it lies to a known type, where a distance sees only that it is near.

        The sample-associated density ratio of MELD (Burkhardt et al. 2021, "Quantifying the
        effect of experimental perturbations at single-cell resolution") and the neighbourhood
        abundance test of Milo (Dann et al. 2022) used by Dann et al. 2023 ("Precise identification of
        cell states altered in disease using healthy single-cell references") to find query states a
        reference lacks; here per cell, with the share counted among the ``k_`` nearest cells instead
        of a graph filter or a neighbourhood's count model."""
        from sklearn.neighbors import NearestNeighbors

        n, n_ref, k = len(z), self.index_.n_samples_fit_, self.k_
        if n < MIN_COMPOSITION_CELLS:
            if query:
                logger.warning("The query has %d cells, fewer than %d: too few to count whose neighbours they are, so "
                               "the composition part of the novelty score is left neutral (the held-out reference "
                               "cells' median) and only its other parts tell unknown cells.", n, MIN_COMPOSITION_CELLS)
                return np.full(n, float(np.median(self.calibration_["composition"])))
            if n < 2:
                return np.zeros(n)
        own_k = min(k + 1, n)
        own_dist, own_idx = NearestNeighbors(n_neighbors=own_k).fit(z).kneighbors(z)
        own_dist, own_idx = own_dist[:, 1:], own_idx[:, 1:]  # a cell is not its own neighbour
        # Of the k nearest cells of both sets, the ones from z: its neighbours nearer than the k-th joint one.
        joint = np.sort(np.hstack([reference_distances, own_dist]), axis=1)[:, k - 1:k]
        near = own_dist <= joint
        share = near.sum(axis=1) / k
        smoothed = (share + (np.where(near, share[own_idx], 0.0)).sum(axis=1)) / (1 + near.sum(axis=1))
        expected = n / (n + n_ref)
        kept_off_bounds = (smoothed * k + 0.5) / (k + 1)  # a share of 0 or 1 has no log-odds
        return np.log(kept_off_bounds / (1 - kept_off_bounds)) - np.log(expected / (1 - expected))

    def _score(self, components: dict[str, np.ndarray]) -> np.ndarray:
        if len(self.components_) == 1:
            return components[self.components_[0]]
        ranks = [np.searchsorted(self.calibration_[name], s, side="right") / len(self.calibration_[name])
                 for name, s in components.items()]
        weights = getattr(self, "part_weights_", None) or {}
        w = np.array([weights.get(name, 1.0) for name in components])
        # The parts kept (all, or all but the distances for a far query), their weights renormalized.
        return np.average(ranks, axis=0, weights=w if w.sum() > 0 else None)

    def _adjust_for_shift(self, components: dict[str, np.ndarray], z: np.ndarray) -> dict[str, np.ndarray]:
        """``shift_adjust``: the distance and enrichment parts adjusted (:meth:`_adjust_distances`), and, with
        ``sharpen_when_shifted``, the softmax part of a query that is not far, in a score of several parts,
        sharpened as a far one's is (:meth:`_sharpened_softmax`), unless the query's median uncertainty is beyond
        the ``novelty_quantile`` quantile of the held-out cells' softmax part (half of it would be unknown by the
        classifier alone: a shift cannot be told from new types). A far query is never sharpened here: with
        ``softmax_when_far`` its own rule applies, and without it the rule before."""
        adjusted = self._adjust_distances(components, z)
        if (self.far_ or not self.sharpen_when_shifted or len(self.components_) < 2 or "softmax" not in adjusted
                or len(adjusted["softmax"]) < MIN_SHIFT_CELLS):
            return adjusted
        softmax = adjusted["softmax"]
        if float(np.median(softmax)) > float(np.quantile(self.calibration_["softmax"], self.novelty_quantile)):
            logger.warning("Half of the query is less sure to the classifier than %.0f%% of held-out reference "
                           "cells: a shift of known types cannot be told from a query mostly of types the "
                           "reference lacks, so the classifier's probabilities are not sharpened "
                           "(sharpen_when_shifted). If the query is of reference types, try align=True (--align).",
                           100 * self.novelty_quantile)
            return adjusted
        adjusted["softmax"] = self._sharpened_softmax(softmax, z)
        return adjusted

    def _adjust_distances(self, components: dict[str, np.ndarray], z: np.ndarray) -> dict[str, np.ndarray]:
        """``shift_adjust``: the query's distance parts divided by how far their median exceeds the
        calibration cells' (never multiplied up), when the query is large enough to estimate a shift;
        the kNN distance's factor is kept in ``shift_factor_``. When the query's median distance is
        beyond the novelty threshold itself, the score is left as it is; with ``softmax_when_far`` and a
        softmax part, the distance parts are left out instead (``distance_ignored_``) and the softmax
        part alone is ranked and thresholded."""
        self.shift_factor_ = 1.0
        self.distance_ignored_ = self.far_ = False
        components = self._adjust_enrichment(components)
        if "distance" not in components:
            return components
        d = components["distance"]
        calibration = self.calibration_["distance"]
        reference, query = float(np.median(calibration)), float(np.median(d)) if len(d) else 0.0
        if len(d) < MIN_SHIFT_CELLS or not query > reference > 0:
            return components
        ceiling = float(np.quantile(calibration, self.novelty_quantile))
        if query > ceiling:
            self.far_ = True
            if self.softmax_when_far and "softmax" in components:
                logger.warning(
                    "Half of the query is farther from the reference than %.0f%% of held-out reference cells: "
                    "too far to tell a shift of known types from cells of types the reference lacks by distance, "
                    "so the distance is left out and the classifier's uncertainty (max-softmax, with the composition "
                    "part where the score has one) decides which cells are unknown. Cells of "
                    "a new type that the classifier assigns confidently are missed; if the query is of reference "
                    "types in a new state, align=True (--align) corrects the shift.", 100 * self.novelty_quantile)
                self.distance_ignored_ = True
                # The distance parts are left out; an enrichment part (already adjusted above) is kept.
                kept = {name: s for name, s in components.items() if name not in DISTANCE_COMPONENTS}
                if self.sharpen_when_far:
                    kept["softmax"] = self._sharpened_softmax(components["softmax"], z)
                return kept
            logger.warning(
                "Half of the query is farther from the reference than %.0f%% of held-out reference cells: "
                "too far to tell a shift of known types from cells of types the reference lacks, so the "
                "novelty score is not adjusted for a shift. Many query cells may be called unknown; if "
                "they are of reference types, try align=True (--align).", 100 * self.novelty_quantile)
            return components
        adjusted = dict(components)
        for name in DISTANCE_COMPONENTS:
            if name not in components:
                continue
            ref, q = float(np.median(self.calibration_[name])), float(np.median(components[name]))
            factor = ref / q if q > ref > 0 else 1.0
            adjusted[name] = components[name] * factor
            if name == "distance":
                self.shift_factor_ = factor
        logger.info("Query distances to the reference are %.2fx the held-out reference cells' (medians); "
                    "scaled down by that before the novelty threshold (shift_adjust)", query / reference)
        return adjusted

    def _adjust_enrichment(self, components: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The enrichment parts (``composition``) brought back to the held-out reference cells' median and
        spread, as ``shift_adjust`` scales distances: a query of known types that is not mixed with the
        reference (another batch, not integrated) is enriched in its own neighbourhoods everywhere, a
        type the reference lacks more than the rest of the query.

        Two statistics are re-estimated on the query (prediction-time normalization, Nado et al. 2020,
        which recomputes a batch's mean and variance; here their robust forms): the query's median
        excess over the held-out cells' median is taken off, and the deviations from the query's median
        are divided by the ratio of the query's median absolute deviation to the held-out cells' when
        that ratio is above 1 (``composition_spread_``; never scaled up). The spread matters when known
        types mix unevenly with the reference: one that mixes partly pulls the median down, and then a
        known type that does not mix at all sits as far above the median as a missing type would."""
        adjusted = dict(components)
        self.composition_spread_ = 1.0
        for name in ENRICHMENT_COMPONENTS:
            if name not in components or len(components[name]) < MIN_SHIFT_CELLS:
                continue
            scores, calibration = components[name], self.calibration_[name]
            query, reference = float(np.median(scores)), float(np.median(calibration))
            reference_spread = float(np.median(np.abs(calibration - reference)))
            spread = float(np.median(np.abs(scores - query))) / reference_spread if reference_spread > 0 else 1.0
            excess = query - reference
            if excess <= 0 and spread <= 1.0:
                continue
            adjusted[name] = (reference if excess > 0 else query) + (scores - query) / max(spread, 1.0)
            self.composition_spread_ = max(spread, 1.0)
            logger.info("The query's neighbourhood composition (median log-odds %+.2f against the held-out reference "
                        "cells', spread %.2fx theirs) is brought back to their median and spread before the "
                        "novelty threshold (shift_adjust)", excess, spread)
        return adjusted

    def _sharpened_softmax(self, softmax: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``sharpen_when_far`` (and ``sharpen_when_shifted`` for a query that is not far, the flag the log
        names): the softmax part of a far (shifted) query recomputed at the temperature ``T <= 1``
        (``temperature_``) that brings its median back to the held-out reference cells' median, found
        by bisection on the calibration classifier's logits; unchanged when the query's median is not
        above the reference's. Temperature scaling (Guo et al. 2017, "On calibration of modern neural
        networks") re-estimated on the query, as ``shift_adjust`` re-estimates the distance's scale
        (Nado et al. 2020); it assumes, as that does, that most of the query is of reference types."""
        reference = float(np.median(self.calibration_["softmax"]))
        if not len(softmax) or not float(np.median(softmax)) > reference > 0:
            return softmax
        logits = self.calibration_classifier_.decision_function(z)
        if logits.ndim == 1:  # two classes: one logit against the other's 0
            logits = np.stack([np.zeros_like(logits), logits], axis=1)
        logits = logits - logits.max(axis=1, keepdims=True)

        def part(t: float) -> np.ndarray:
            e = np.exp(logits / t)
            return 1.0 - 1.0 / e.sum(axis=1)  # 1 - the top class's probability (its logit is 0)

        low, high = 1e-3, 1.0  # median of part(t) grows with t; part(high) is above the reference
        if float(np.median(part(low))) > reference:
            low = high = 1e-3
        for _ in range(40):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if float(np.median(part(mid))) < reference else (low, mid)
        self.temperature_ = low
        # A temperature near 1 changes little (about half of unshifted queries sit just above the median).
        log = logger.warning if low < SHARPEN_WARN_TEMPERATURE else logger.info
        flag = "sharpen_when_far" if self.far_ else "sharpen_when_shifted"
        log("The classifier is less sure of the query than of held-out reference cells (median max-softmax "
            "uncertainty %.3g against %.3g): its probabilities are sharpened at temperature %.3g before the "
            "threshold, taking the query to be mostly of reference types in a new state. If most of it is of "
            "types the reference lacks, pass %s=False (--no-%s).",
            float(np.median(softmax)), reference, low, flag, flag.replace("_", "-"))
        return part(low)

    def predict(self, embedding: np.ndarray) -> TransferResult:
        z = self.scaler_.transform(embedding)
        proba = self.classifier_.predict_proba(z)
        raw = self.classifier_.classes_[proba.argmax(axis=1)].astype(object)
        components = self._components(z, query=True)
        # Set again by the shift adjustment; never left from an earlier query.
        self.distance_ignored_ = self.far_ = False
        self.temperature_ = self.composition_spread_ = 1.0
        if self.shift_adjust:
            components = self._adjust_for_shift(components, z)
        novelty = self._score(components).astype(np.float32)
        # The threshold applied to this query: the softmax part's own when a far query is ranked by it alone.
        self.applied_threshold_ = self.softmax_threshold_ if self.distance_ignored_ else self.threshold_
        unknown = novelty > self.applied_threshold_
        pred = raw.copy()
        pred[unknown] = UNKNOWN_LABEL
        return TransferResult(pred, raw, proba.max(axis=1).astype(np.float32), novelty, unknown, proba)
