"""``cellweave.tl.annotate``: label transfer from a labelled reference, with a novelty score."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cellweave._constants import EMBEDDING_KEY, UNS_KEY
from cellweave._exceptions import CellWeaveInputError
from cellweave.data import neighbourhood_mean, section_neighbors, spatial_coordinates
from cellweave.models import CellWeave, environment_versions

from ._embed import _h5_safe, _resolve, embed
from ._transfer import UNKNOWN_LABEL, LabelTransfer, cross_fit_name

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


def annotate(
    adata: AnnData,
    *,
    reference: AnnData,
    label_key: str,
    model: CellWeave | str | None = None,
    key_added: str = "cellweave",
    novelty_quantile: float = 0.99,
    novelty_score: str = "combined+composition",
    batch_key: str | None = None,
    align: bool = False,
    shift_adjust: bool = True,
    softmax_when_far: bool = True,
    sharpen_when_far: bool = True,
    weight_parts: bool = True,
    sharpen_when_shifted: bool = True,
    cross_fit: bool | str = "auto",
    reference_token_space: bool = True,
    finetune: bool = False,
    finetune_epochs: int = 3,
    spatial: bool | None = None,
    spatial_key: str = "spatial",
    section_key: str | None = None,
    n_spatial_neighbors: int | None = None,
    seed: int = 0,
    precision: str = "32-true",
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Transfer cell labels from a labelled reference to ``adata`` through CellWeave embeddings.

    Both datasets are embedded with the same frozen model. A multinomial logistic regression
    (``C=1.0``) on standardized reference embeddings predicts the label of each query cell. A
    novelty score flags cells unlike anything in the reference, with a threshold set on the
    reference alone: 80% of the reference cells (stratified by label, seeded) fit the scorer, and
    the threshold is the ``novelty_quantile`` quantile of the scores of the held-out 20%, cells of
    known types the scorer has not seen; query cells above it are predicted ``"unknown"`` (a
    reference under 2,500 cells is cross-fitted instead, every cell held out once in 5 folds and the
    query scored by the whole reference: ``cross_fit``; "the 80%" below is then the whole). The
    default score (``novelty_score="combined+composition"``) averages the conformal ranks of three
    scores among those held-out cells: the mean Euclidean distance, in the standardized space, to
    the ``k=15`` nearest cells of the 80%; one minus the maximum class probability of a classifier
    fit on the 80%; and how much more often than chance the query cells are each other's nearest
    neighbours than the reference's (a type the reference lacks forms neighbourhoods of query cells
    only; this part reads the query as a whole and needs at least 50 query cells). See
    :class:`~cellweave.tl.LabelTransfer`. ``"combined"`` (the default before) leaves the third out,
    ``"distance"`` uses the distance alone (the rule of earlier versions), ``"softmax"`` the
    probability alone.

    With spatial context (by default whenever reference and query both carry
    ``obsm[spatial_key]``), each cell's embedding is extended with the mean embedding of its
    ``n_spatial_neighbors`` nearest cells in space, as :func:`cellweave.tl.embed` does with
    ``spatial=True``; classifier and novelty score then work on that representation. The
    neighbourhoods of reference and query are computed separately, each within its own tissue
    sections: a query cell's neighbours are query cells of its own section, never reference
    cells, and coordinates of different sections are never compared.

    Parameters
    ----------
    adata
        Query AnnData with RNA counts (or log-normalized values) in ``X``. An existing
        ``.obsm["X_cellweave"]`` is reused when ``.uns["cellweave"]["X_cellweave"]`` records
        the same model (by SHA-256); otherwise the query is embedded.
    reference
        Labelled AnnData, same conventions as ``adata``. Its embedding is reused under the same
        rule and is never written into ``reference``.
    label_key
        Column of ``reference.obs`` with the labels. Cells with a missing label (NaN or an empty
        string) are left out with a logged warning that counts them; none left is an error.
    model
        A :class:`~cellweave.CellWeave`, a model folder, a shipped model's name, or ``None`` for
        the shipped default model.
    key_added
        Prefix of the ``obs`` columns written.
    novelty_quantile
        Quantile (in ``(0, 1]``) of held-out reference novelty scores used as the threshold;
        higher flags fewer cells as unknown.
    novelty_score
        ``"combined+composition"`` (default), ``"combined"``, ``"distance"``, ``"softmax"``,
        ``"composition"``, ``"mahalanobis"`` or ``"distance+mahalanobis+softmax"``: the score thresholded (see above and
        :class:`~cellweave.tl.LabelTransfer`).
    batch_key
        Column of ``reference.obs`` naming its batches (protocol, study, donor). With at least two,
        the threshold is calibrated on whole batches instead of held-out cells: each batch in turn
        (at most 5 folds) is scored against a scorer fit on the others, so query cells that differ
        from the reference as much as its batches differ from each other are not called unknown.
    align
        Correct reference and query embeddings together by Harmony before the classifier and the
        novelty score (see above). Needs at least a few dozen cells on each side.
    shift_adjust
        Take a shift of the whole query out of the novelty distance before the threshold: the
        query's distances to the reference are scaled down by the ratio of their median to the
        held-out reference cells' median, when it is above 1 (see
        :class:`~cellweave.tl.LabelTransfer`). Known types in a new state (another protocol,
        species or condition) are then not called unknown wholesale, while a type the reference
        lacks stays far relative to the rest of the query. Assumes at least half the query is of
        reference types; skipped below 50 query cells and, with a warning, when the typical query
        cell is beyond the threshold itself. The factor is recorded (``shift_factor``).
    softmax_when_far
        When the typical query cell is beyond the threshold by distance (so ``shift_adjust`` cannot
        tell a shifted query of known types from one of new types), decide "unknown" by the
        classifier's max-softmax alone, against its own held-out threshold (default). Recorded as
        ``distance_ignored``. ``False``: score such a query unadjusted, as earlier versions did, which
        may call much of it unknown. See :class:`~cellweave.tl.LabelTransfer`.
    sharpen_when_far
        With ``softmax_when_far``, when it applies: first sharpen the classifier's probabilities on the
        query (a temperature below 1, recorded as ``temperature``) until the query's median max-softmax
        uncertainty equals the held-out reference cells', so a query the classifier is unsure of as a
        whole (another species) is not called unknown wholesale (default). Predicted labels do not
        change. ``False``: the rule before. See :class:`~cellweave.tl.LabelTransfer`.
    weight_parts
        Weight the parts of a score of several (the distance, the max-softmax, the composition) by how
        well each tells the reference's own types left out in turn, not equally (default; recorded as
        ``part_weights``). ``False``: equal weights, the rule before. See :class:`~cellweave.tl.LabelTransfer`.
    sharpen_when_shifted
        Sharpen the classifier's probabilities on any query it is less sure of than of held-out reference
        cells, as ``sharpen_when_far`` does for a far one, so a query shifted a little in every part of the
        score (another species, not far by distance) is not called unknown for the classifier's doubt alone
        (default; the temperature is recorded as ``temperature``). Labels do not change. It acts only with
        ``shift_adjust``, on a score of several parts, a query of 50 cells or more that is not far (a far one
        has ``sharpen_when_far``), and not when half the query is less sure to the classifier than 99% of
        held-out reference cells. ``False``: the rule before. See :class:`~cellweave.tl.LabelTransfer`.
    cross_fit
        Calibrate the threshold on every reference cell, each held out once in 5 stratified folds, and
        score the query with the whole reference (``"auto"``, the default: only when the single held-out
        20% would be under 500 cells, where the 0.99 quantile rests on its few largest scores; ``True``:
        always; ``False``: one held-out 20%, the rule before). A ``batch_key`` of two or more batches
        calibrates on whole batches instead. See :class:`~cellweave.tl.LabelTransfer`.
    reference_token_space
        Embed the query in the reference's token space: its tokens are drawn from the reference's
        most variable genes and ranked by deviation from the reference's gene means
        (:func:`cellweave.data.adopt_token_space`), as PCA fitted on a reference projects a query.
        ``False``: the query chooses its own, as :func:`cellweave.tl.embed` on it alone does (the
        rule before; then a query from another protocol is tokenized differently and much of it
        may be called unknown). Only when the query is embedded here (a stored embedding of the
        same model is reused as it is).
    finetune
        Fine-tune a copy of the model's encoder on the reference labels first (a linear head on
        the cell embedding, cross-entropy, ``finetune_epochs`` epochs; see
        :func:`cellweave.train.finetune_classifier`), then embed both datasets with it. Off by
        default: the classifier is then fit on frozen embeddings.
    finetune_epochs
        Epochs of fine-tuning.
    spatial
        Tissue context: ``None`` (default) uses it when reference and query both carry
        ``obsm[spatial_key]``; ``True`` requires it (an error names the side without
        coordinates); ``False`` never uses it. With ``finetune=True`` the fine-tuning itself sees
        each cell alone (its head reads the cell embedding); the classifier is then fit on the
        fine-tuned embedding plus the neighbourhood mean of the fine-tuned embedding.
    spatial_key
        Key of the 2-D coordinates in ``obsm`` of both datasets.
    section_key
        Column of ``obs`` (in both datasets) naming the tissue section of each cell; neighbours
        are searched within a section only. Default: the first of ``section``, ``library_id``,
        ``sample``, ``batch`` present in each dataset's ``obs``, else one section.
    n_spatial_neighbors
        Neighbours averaged per cell (default: the model's ``config.spatial_neighbors``, else 10).
        Unlabelled reference cells count as neighbours; only their labels are left out.
    seed
        Seed of the embedding's token sampling, the fine-tuning and the reference split.
    precision
        ``"32-true"`` (default) or ``"bf16-mixed"``: the embedding passes under bf16 autocast, as
        :func:`cellweave.tl.embed` takes it; with ``finetune=True`` the fine-tuning too (Lightning's
        bf16-mixed, weights float32); the classifier stays float32. Recorded in ``uns``.
    progress
        Show a progress bar while embedding.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``.obs[f"{key_added}_prediction"]``
        categorical predicted label; ``"unknown"`` where the novelty is above the threshold.
    ``.obs[f"{key_added}_confidence"]``
        float32, the classifier's highest class probability (0..1), computed for every cell,
        unknown ones included.
    ``.obs[f"{key_added}_novelty"]``
        float32, the ``novelty_score``; higher is more novel. ``"combined+composition"`` and
        ``"combined"``: in ``[0, 1]``, the mean share of held-out reference cells the cell is at
        least as far from the reference, at least as uncertain and (the first) at least as much
        among query neighbours as. ``"distance"``: mean distance to the 15 nearest reference cells
        (standardized space, >= 0). ``"softmax"``: one minus the top class probability. With
        spatial context the scores live in the space of embedding plus neighbourhood mean.
    ``.uns["cellweave"]["annotate"]``
        model name and SHA-256, ``label_key``, ``key_added``, classes, ``novelty_quantile``,
        ``novelty_score``, ``shift_adjust`` and the factor applied (``shift_factor``, 1: none),
        ``softmax_when_far`` and whether the distance was left out for this query
        (``distance_ignored``; ``threshold`` is then the softmax part's), ``sharpen_when_far`` and
        the temperature applied (``temperature``, 1: none; with ``sharpen_when_shifted`` too),
        ``sharpen_when_shifted``, ``weight_parts`` and the weight of each part
        of the score (``part_weights``), the query's token space
        (``query_token_space``: ``"reference"``, ``"own"`` or ``"stored"``, a reused embedding),
        ``batch_key`` and the number of batches calibrated on
        (``calibration_batches``, 0: none), ``cross_fit`` (``"auto"``, ``"on"`` or ``"off"``) and whether
        it applied (``cross_fitted``; neither: a random 20%), threshold, number of unknown cells, number of
        reference cells, seed, ``precision``, versions and
        ``spatial`` (whether tissue context was used; with it ``spatial_context``: key,
        neighbours, and per side the section column used (``""``: one section) and the number
        of sections).
    ``.obsm["X_cellweave"]`` and ``.uns["cellweave"]["X_cellweave"]``
        as written by :func:`cellweave.tl.embed` with ``spatial=False``, when the query had to
        be embedded (frozen model only): each cell's own embedding; the neighbourhood part is
        recomputed from it and the record above.
    ``.obsm[f"X_{key_added}_finetuned"]``
        with ``finetune=True``: the query's embedding by the fine-tuned encoder; the record in
        ``uns`` then holds the fine-tuning summary (epochs, loss per epoch, seconds).

    Examples
    --------
    >>> import cellweave
    >>> reference = cellweave.datasets.load("multibatch_cellbench_sc_mixology")
    >>> query = reference[reference.obs["batch"] == reference.obs["batch"].iloc[0]].copy()
    >>> cellweave.tl.annotate(query, reference=reference, label_key="cell_type")
    >>> query.obs[["cellweave_prediction", "cellweave_confidence", "cellweave_novelty"]]
    """
    labels = _reference_labels(reference, label_key)
    batches = _reference_batches(reference, batch_key)
    CellWeave.check_precision(precision)
    adata = adata.copy() if copy else adata
    model = _resolve(model)
    # Checks the quantile and the score before any embedding.
    transfer = LabelTransfer(novelty_quantile=novelty_quantile, novelty_score=novelty_score,
                             shift_adjust=shift_adjust, softmax_when_far=softmax_when_far,
                             sharpen_when_far=sharpen_when_far, weight_parts=weight_parts,
                             sharpen_when_shifted=sharpen_when_shifted, cross_fit=cross_fit, seed=seed)

    keep = labels.notna().to_numpy()
    # Neighbourhoods first (cheap, and bad sections or coordinates fail before any embedding).
    neighbourhoods = None
    if _use_spatial(spatial, adata, reference, spatial_key):
        if n_spatial_neighbors is not None and n_spatial_neighbors < 1:
            raise CellWeaveInputError(f"n_spatial_neighbors must be at least 1, not {n_spatial_neighbors}.")
        n_context = int(n_spatial_neighbors or model.config.spatial_neighbors or 10)
        neighbourhoods = {
            side: section_neighbors(data, spatial_key=spatial_key, section_key=section_key, n_neighbors=n_context,
                                    name=side)
            for side, data in (("reference", reference), ("query", adata))
        }
    finetune_summary = None
    if finetune:
        from cellweave.train import finetune_classifier

        ref = reference[keep] if not keep.all() else reference
        ref_labels = labels[keep].astype(str).to_numpy()
        model, finetune_summary = finetune_classifier(
            model, model.prepare(ref, dataset="reference"), ref_labels, max_epochs=finetune_epochs, seed=seed,
            progress=progress, precision=precision,
        )
        # With tissue context, unlabelled reference cells are still neighbours: embed them all.
        ref_corpus = model.prepare(reference if neighbourhoods is not None else ref)
        with model.autocast(precision):
            ref_emb = model.embed_corpus(ref_corpus, seed=seed, progress=progress)
            query_emb = model.embed(adata, spatial=False, seed=seed, progress=progress,
                                    token_space=ref_corpus if reference_token_space else None)[0]
        adata.obsm[f"X_{key_added}_finetuned"] = query_emb
        token_space = "reference" if reference_token_space else "own"
    else:
        ref_emb, query_emb, token_space = reference_and_query_embeddings(
            reference, adata, model, seed=seed, progress=progress, reference_token_space=reference_token_space,
            precision=precision)
        ref_labels = labels[keep].astype(str).to_numpy()

    spatial_context = None
    if neighbourhoods is not None:
        (ref_nbr, ref_rec), (query_nbr, query_rec) = neighbourhoods["reference"], neighbourhoods["query"]
        ref_col, ref_n = ref_rec["section_key"], ref_rec["n_sections"]
        query_col, query_n = query_rec["section_key"], query_rec["n_sections"]
        # The same construction as tl.embed(spatial=True): own embedding, then the neighbourhood mean.
        ref_emb = np.concatenate([ref_emb, neighbourhood_mean(ref_emb, ref_nbr)], axis=1)
        query_emb = np.concatenate([query_emb, neighbourhood_mean(query_emb, query_nbr)], axis=1)
        spatial_context = {"spatial_key": spatial_key, "n_neighbors": int(ref_nbr.shape[1]),
                           "reference_section_key": ref_col, "reference_n_sections": ref_n,
                           "query_section_key": query_col, "query_n_sections": query_n}
        logger.info("Spatial context: mean embedding of the %d nearest cells of the same section appended "
                    "(reference: %d section(s), query: %d)", ref_nbr.shape[1], ref_n, query_n)
    if ref_emb.shape[0] == reference.n_obs and not keep.all():
        ref_emb = ref_emb[keep]  # unlabelled cells served as neighbours only
    if align:
        from ._integrate import align_reference_query

        ref_emb, query_emb = align_reference_query(ref_emb, query_emb, seed=seed)
        logger.info("Reference and query aligned by Harmony before label transfer (align=True)")

    transfer.fit(ref_emb, ref_labels, groups=None if batches is None else batches[keep])
    res = transfer.predict(query_emb)
    classes, threshold, k, unknown = transfer.classes_, transfer.applied_threshold_, transfer.k_, res.unknown
    categories = classes + ([UNKNOWN_LABEL] if UNKNOWN_LABEL not in classes else [])
    adata.obs[f"{key_added}_prediction"] = pd.Categorical(res.prediction, categories=categories)
    adata.obs[f"{key_added}_confidence"] = res.confidence
    adata.obs[f"{key_added}_novelty"] = res.novelty

    record: dict[str, Any] = {
        "model": model.name,
        "model_sha256": model.model_hash,
        "label_key": label_key,
        "key_added": key_added,
        "classes": classes,
        "novelty_quantile": novelty_quantile,
        "novelty_score": novelty_score,
        "batch_key": batch_key or "",
        "calibration_batches": transfer.calibration_groups_,
        "cross_fit": cross_fit_name(cross_fit),
        "cross_fitted": bool(transfer.cross_fitted_),
        "align": bool(align),
        "shift_adjust": bool(shift_adjust),
        "shift_factor": float(transfer.shift_factor_),
        "softmax_when_far": bool(softmax_when_far),
        "distance_ignored": bool(transfer.distance_ignored_),
        "sharpen_when_far": bool(sharpen_when_far),
        "temperature": float(transfer.temperature_),
        "sharpen_when_shifted": bool(sharpen_when_shifted),
        "weight_parts": bool(weight_parts),
        "part_weights": {name: float(w) for name, w in transfer.part_weights_.items()},
        "query_token_space": token_space,
        "threshold": threshold,
        "n_neighbors": k,
        "n_unknown": int(unknown.sum()),
        "n_reference": len(ref_labels),
        "finetune": finetune_summary or False,
        "spatial": spatial_context is not None,
        "spatial_context": spatial_context,
        "seed": seed,
        "precision": precision,
        "versions": environment_versions(),
    }
    uns = dict(adata.uns.get(UNS_KEY, {}))
    uns["annotate"] = _h5_safe(record)
    adata.uns[UNS_KEY] = uns
    logger.info(
        "Annotated %d cells from %d reference cells (%d classes); %d unknown (novelty > %.3f)",
        adata.n_obs, len(ref_labels), len(classes), int(unknown.sum()), threshold,
    )
    return adata if copy else None


def _reference_labels(reference: AnnData, label_key: str) -> pd.Series:
    """The reference labels, checked to be usable for training and a stratified split."""
    if label_key not in reference.obs.columns:
        raise CellWeaveInputError(
            f"label_key {label_key!r} is not a column of reference.obs. Pass one of: "
            f"{', '.join(map(str, reference.obs.columns)) or '(reference.obs has no columns)'}."
        )
    labels = reference.obs[label_key]
    # An empty or blank string is no label either (a CSV export writes NaN as ""): both are left out.
    blank = labels.notna().to_numpy() & labels.astype(str).str.strip().eq("").to_numpy()
    if blank.any():
        labels = labels.where(~blank)
        if isinstance(labels.dtype, pd.CategoricalDtype):
            labels = labels.cat.remove_unused_categories()
    n_missing = int(labels.isna().sum())
    if n_missing == len(labels):
        raise CellWeaveInputError(
            f"reference.obs[{label_key!r}] has no label in any of its {len(labels)} cells (all NaN or empty). "
            "Fill in the labels, or pass the column that holds them as label_key (--label-key)."
        )
    if n_missing:
        logger.warning(
            "Leaving out %d of %d reference cells with no %r label (NaN or empty): they do not train the label "
            "transfer. Fill in their labels to use them.", n_missing, len(labels), label_key,
        )
    counts = labels.dropna().astype(str).value_counts()
    if len(counts) < 2:
        raise CellWeaveInputError(
            f"reference.obs[{label_key!r}] has {len(counts)} class(es); label transfer needs at least 2. "
            "Use a reference with more cell types, or a finer label column."
        )
    rare = counts[counts < 2]
    if len(rare):
        raise CellWeaveInputError(
            f"reference.obs[{label_key!r}] has classes with fewer than 2 cells: "
            f"{', '.join(map(str, rare.index))}. Remove those cells or merge the classes."
        )
    return labels


def _reference_batches(reference: AnnData, batch_key: str | None) -> np.ndarray | None:
    """The reference's batch names (strings, one per cell) that the novelty threshold is calibrated on,
    ``None`` without ``batch_key``; an error naming the reference's columns when it is not one of them."""
    if batch_key is None:
        return None
    if batch_key not in reference.obs:
        raise CellWeaveInputError(f"batch_key={batch_key!r} is not a column of reference.obs (columns: "
                                  f"{', '.join(map(str, reference.obs.columns)) or 'none'}); name the column of the "
                                  "reference's batches, or leave it out to calibrate on held-out reference cells.")
    return reference.obs[batch_key].astype(str).to_numpy()


def _use_spatial(spatial: bool | None, query: AnnData, reference: AnnData, spatial_key: str) -> bool:
    """Whether to add tissue context: ``spatial``, or (``None``) whether both sides have coordinates."""
    if spatial is False:
        return False
    missing = [side for side, data in (("reference", reference), ("query", query))
               if spatial_coordinates(data, spatial_key) is None]
    if spatial is None:
        if missing and len(missing) < 2:
            logger.info("No spatial context: the %s has no obsm[%r] (the other side has)", missing[0], spatial_key)
        return not missing
    if missing:
        both = len(missing) == 2
        raise CellWeaveInputError(
            f"spatial=True but the {' and the '.join(missing)} {'have' if both else 'has'} no obsm[{spatial_key!r}] "
            f"coordinates; tissue context needs coordinates on both sides. Add them to the "
            f"{' and the '.join(missing)} (or pass spatial_key= where they are), or annotate without context: "
            "spatial=False (--no-spatial)."
        )
    return True


def reference_and_query_embeddings(
    reference: AnnData, query: AnnData, model: CellWeave, *, seed: int, progress: bool, reference_token_space: bool,
    precision: str = "32-true",
) -> tuple[np.ndarray, np.ndarray, str]:
    """The reference's and the query's own embeddings by ``model`` (no tissue context), and how the
    query was tokenized (``"stored"``: its embedding of the same weights reused; ``"reference"``:
    embedded here in the reference's token space; ``"own"``). A query embedded here is written to
    ``query.obsm["X_cellweave"]`` as :func:`cellweave.tl.embed` writes it; the reference is never
    written to. ``precision``: of the forward passes, as :func:`cellweave.tl.embed` takes it."""
    query_emb = _stored_embedding(query, model)
    if query_emb is not None or not reference_token_space:
        ref_emb = _embedding(reference, model, seed=seed, progress=progress, write=False, precision=precision)
        if query_emb is not None:
            return ref_emb, query_emb, "stored"
        query_emb = _embedding(query, model, seed=seed, progress=progress, write=True, precision=precision)
        return ref_emb, query_emb, "own"
    ref_corpus = model.prepare(reference)  # the token space the query adopts
    ref_emb = _stored_embedding(reference, model)
    if ref_emb is None:
        with model.autocast(precision):
            ref_emb = model.embed_corpus(ref_corpus, seed=seed, progress=progress)
    embed(query, model=model, seed=seed, progress=progress, spatial=False, token_space=ref_corpus,
          precision=precision)
    return ref_emb, np.asarray(query.obsm[EMBEDDING_KEY], dtype=np.float32), "reference"


def _embedding(data: AnnData, model: CellWeave, *, seed: int, progress: bool, write: bool,
               precision: str = "32-true") -> np.ndarray:
    """``data``'s own embedding by ``model`` (no tissue context): reused when recorded with the same
    weights, else computed at ``precision`` (and written as :func:`cellweave.tl.embed` writes it
    when ``write``)."""
    stored = _stored_embedding(data, model)
    if stored is not None:
        return stored
    if write:
        embed(data, model=model, seed=seed, progress=progress, spatial=False, precision=precision)
        return np.asarray(data.obsm[EMBEDDING_KEY], dtype=np.float32)
    with model.autocast(precision):
        return model.embed(data, spatial=False, seed=seed, progress=progress)[0]


def _stored_embedding(data: AnnData, model: CellWeave) -> np.ndarray | None:
    """``data``'s own embedding by ``model`` (no tissue context) when recorded with the same weights,
    else ``None``."""
    record = data.uns.get(UNS_KEY, {}).get(EMBEDDING_KEY, {})
    if EMBEDDING_KEY in data.obsm and record.get("model_sha256") == model.model_hash:
        stored = np.asarray(data.obsm[EMBEDDING_KEY], dtype=np.float32)
        width = model.module.embedding_dim
        if not record.get("spatial", False) and stored.shape[1] == width:
            logger.info("Reusing .obsm[%r] (same model weights)", EMBEDDING_KEY)
            return stored
        if record.get("spatial", False) and stored.shape[1] == 2 * width:
            # tl.embed appends the neighbourhood mean after the cell's own embedding.
            logger.info("Reusing the cell's own part of .obsm[%r] (same model weights, spatial context dropped)",
                        EMBEDDING_KEY)
            return stored[:, :width]
    return None
