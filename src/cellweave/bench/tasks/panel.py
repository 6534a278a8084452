"""Benchmark task ``panel``: the development panel for the model's cell representations.

Every labelled counts dataset the registry tags ``panel`` and that is available locally, with the
protocols the representation work is measured on (cellweave zero-shot beside the baselines on the
same splits; nothing is chosen on a test split):

1. **zero-shot kNN**: macro-F1 of a k=15 kNN classifier, stratified 5-fold, on the frozen
   embedding vs 50 PCs of log-normalized top-2000 HVGs vs the scVI latent (unsupervised, all cells);
2. **annotation across a shift**: train on all groups but one of a shift key (protocol, species,
   study), test on the held-out one (types it lacks in training dropped): cellweave's label transfer
   (tl.annotate's classifier on the frozen embedding) vs L2 logistic regression on HVGs chosen on
   the training cells; also the share of test cells cellweave calls "unknown" (all of their types
   are in the reference, so this should be near 0; the threshold is calibrated on the groups left
   in the reference, ``tl.annotate(batch_key=...)``; a query beyond that threshold by distance is
   judged by the classifier's max-softmax alone, ``softmax_when_far``, a default newer than the
   panels published before December 2026) and the expected calibration error; each
   cellweave variant also as "+ Harmony (reference + query)" (``tl.annotate(align=True)``);
3. **novel type**: each type in turn removed from a stratified 70% reference; AUROC of the novelty
   score for that type among the 30% query: cellweave (tl.annotate's novelty score on the
   embedding: by default the mean conformal rank of the kNN distance to the reference, the
   classifier's max-softmax and the query's neighbourhood composition) vs logistic-regression
   max-softmax, kNN distance on PCA, kNN distance after Harmony on PCA of reference + query
   together, and the neighbourhood composition alone on PCA (the part of cellweave's score that
   reads the query, on the baseline's representation);
4. **integration** (datasets with batches): scib-metrics total (0.6 bio + 0.4 batch) of the
   embedding with Harmony (tl.integrate's default) vs Harmony on PCA and scVI;
5. **integration across datasets of one tissue** (``TISSUE_GROUPS``: the three human PBMC RNA
   datasets, on their shared genes, embedded together, each dataset a batch): how mixed the
   datasets are among each cell's 15 neighbours (:func:`cellweave.bench.dataset_mixing`, 1 =
   mixed, 0 = islands) and kNN macro-F1 of the cell types on the labelled dataset's cells in the
   joint embedding; their total 0.6 F1 + 0.4 mixing, scIB's weights (only one of the three is
   labelled, so scIB's label-aware metrics cannot run). Cellweave's embedding raw and with Harmony
   (datasets as batches; an adapted variant also with the dataset as its decoder's covariate) vs
   PCA, Harmony on PCA and scVI with the dataset as covariate;
6. **spatial annotation with a section held out**: needs labelled data with several sections; no
   panel dataset has them yet, so the protocol reports nothing (the summary says so).

``--adapt pretrained`` adds "cellweave (adapted)": the model adapted to each dataset's cells without
labels (:func:`cellweave.train.adapt`, the dataset's batch key, else its shift key, as the count
decoder's covariate; transductive like scVI, which also trains on every cell); ``--adapt scratch``
adds the same adaptation from random weights, the control that says whether pretraining helps;
``--adapt untrained`` adds the architecture with random weights and no training at all;
``--adapt genes`` adds the same adaptation from random weights with the model's pretrained gene
embeddings (a cellweave variant: it uses what pretraining learned about genes).
Every protocol scores them beside the zero-shot model; ``--adapt-max-steps`` and ``--adapt-lr``
set the budget and learning rate.

``--quick`` keeps 3 seeds and every dataset but trains scVI for fewer epochs, scores at most 4
novel types per dataset and leaves kBET out of the scIB batch score. The summary (written as
``panel.json`` beside ``results.json`` and as the report's first table) gives, per protocol, the
mean over datasets of cellweave and of each baseline, the gap to the best baseline, and the worst
single-dataset gap: the goal is gap >= 0 on the mean and > -0.03 on every dataset. Beside it
(``panel.json``'s ``"over seeds"``, and a report table with more than one seed) every method's mean
over datasets per seed and their mean ± sd over seeds (:func:`panel_seed_table`;
``benchmarks/panel_seeds.py`` pools the seeds of separate runs of one model the same way).

After each dataset and seed the records so far are saved in ``panel_partial.json`` in the output
folder (removed when the panel ends); ``--resume`` continues a stopped run from them, if the model
and the settings that change the numbers (quick, the adapted variants, their budget and learning
rate, cellweave's version) are the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cellweave.bench._results import CELLWEAVE, Record, make_records, records_frame

logger = logging.getLogger(__name__)

TASK = "panel"
DESCRIPTION = (
    "Development panel: every registered labelled counts dataset tagged 'panel' and available locally. "
    "Protocols: zero-shot kNN macro-F1 (5-fold, k=15) on the frozen embedding vs PCA-50 of log-normalized "
    "HVGs and the scVI latent; annotation across a shift (leave one protocol/species/study out) vs L2 "
    "logistic regression on HVGs, with cellweave's 'unknown' rate and expected calibration error; novel-type "
    "AUROC (each type left out of a 70% reference) vs LR max-softmax, kNN distance on PCA and kNN distance "
    "after Harmony on reference + query; integration (scIB total) vs Harmony and scVI; integration across the "
    "human PBMC datasets embedded together (0.6 cell-type kNN F1 + 0.4 dataset mixing) vs PCA, Harmony and "
    "scVI. Spatial annotation "
    "with a held-out section: no panel dataset has labelled sections yet."
)
#: Registry name -> obs column whose groups are held out in turn (annotation across a shift).
SHIFT_KEYS = {
    "multibatch_cellbench_sc_mixology": "protocol",
    "scrna_pancreas_baron2016_human_mouse_cider": "species",
    "prot_citeseq_adt_13studies_adtnorm": "study_name",
}
#: Point 2's per-dataset margin: no dataset more than this below its best baseline (strictly).
GOAL_MARGIN = 0.03
#: Labels that mean "not annotated"; their cells are left out of every protocol.
UNLABELLED = {"unknown", "undefined", "unassigned", "nan", "none", ""}
#: Types with fewer cells are left out (a 5-fold split needs several cells per type).
MIN_CELLS_PER_TYPE = 10
#: Largest number of cells taken from a dataset (a seeded random subset, the same for every seed).
MAX_CELLS = 6000
SCVI_EPOCHS, SCVI_EPOCHS_QUICK = 200, 25
#: Cells scored by scib-metrics in quick mode (a seeded random subset; its metrics grow superlinearly).
INTEGRATION_MAX_CELLS_QUICK = 3000
NOVEL_TYPES_QUICK = 4
N_NEIGHBORS = 15
#: How ``--adapt`` adapts (:func:`cellweave.train.adapt`'s default): a count-likelihood VAE readout of the frozen
#: model's embedding. Panels published before it (``panel_adapt_quick/``, ``panel_deviation_adapt_quick/``)
#: fine-tuned the encoder (``method="encoder"``).
ADAPT_METHOD = "head"
#: Method names of the adapted model and of its control (same architecture and budget, random start).
ADAPTED = "cellweave (adapted)"
SCRATCH = "scratch transformer (same adaptation)"
UNTRAINED = "untrained transformer (same architecture)"
GENES = "cellweave (adapted, pretrained gene embeddings only)"
#: Suffix of a cellweave variant whose reference and query are corrected together by Harmony.
ALIGNED = " + Harmony (reference + query)"
#: Records of the finished (dataset, seed) pairs, rewritten after each pair and removed when the panel
#: ends: a stopped run (hours with adaptation) keeps them, and ``--resume`` continues from there.
PARTIAL = "panel_partial.json"
#: Datasets of one tissue embedded together, each dataset a batch (protocol 5): name -> registry names.
TISSUE_GROUPS = {
    "human PBMC (3 datasets)": ("scrna_pbmc4k_10x_soupx", "scrna_pbmc_1k_pisces", "citeseq_pbmc_10x_scvi_tests"),
}
#: The obs column of a tissue group naming each cell's dataset.
TISSUE_BATCH = "dataset"
#: Protocol 5's weights of cell-type kNN macro-F1 and dataset mixing in its total (scIB's 0.6 bio + 0.4 batch).
TISSUE_WEIGHTS = (0.6, 0.4)
#: Protocol of each (split, metric) pair the summary reads, and whether higher is better.
PROTOCOLS = {
    ("zero-shot kNN", "macro_f1"): "zero-shot kNN macro-F1",
    ("across shift", "macro_f1"): "annotation across a shift, macro-F1",
    ("novel type", "novel_auroc"): "novel-type AUROC",
    ("integration", "scIB total"): "integration, scIB total",
    ("tissue integration", "tissue total"): "integration across datasets of one tissue, 0.6 F1 + 0.4 mixing",
}


@dataclass
class PanelData:
    """One panel dataset: what the model embeds, the RNA/protein AnnData, labels and keys."""

    name: str
    model_input: Any  # AnnData (RNA) or a MuData with one "prot" modality
    adata: Any  # the AnnData whose X is counts (baselines)
    labels: np.ndarray
    shift_key: str | None
    batch_key: str | None
    lognorm: Any  # float32 CSR, log1p CP10k

    @property
    def short(self) -> str:
        return self.name


def _rna_counts(name: str):
    """A registry dataset's RNA AnnData (its only modality, or ``"rna"`` of several)."""
    from cellweave import datasets

    return datasets.load(name, modality="rna") if len(datasets.REGISTRY[name].modalities) > 1 else datasets.load(name)


def _unannotated(labels: np.ndarray) -> np.ndarray:
    """Which labels mean "not annotated" (``UNLABELLED``, any case and padding)."""
    return pd.Series(labels).str.strip().str.lower().isin(UNLABELLED).to_numpy()


def protein_model_input(adata):
    """What the model embeds for a protein-only panel dataset: a MuData whose one ``"prot"`` modality
    is ``adata`` (the panel's baselines read ``adata`` itself)."""
    import mudata as md

    with md.set_options(pull_on_update=False):
        return md.MuData({"prot": adata})


def panel_datasets(quick: bool = False) -> list[PanelData]:  # noqa: ARG001 - same data in quick mode
    """The panel's datasets (registry tag ``panel``, available in the mirror or the cache)."""
    from cellweave import datasets
    from cellweave.data import log_normalize

    out = []
    for name, entry in datasets.REGISTRY.items():
        if "panel" not in entry.tasks or entry.label_key is None:
            continue
        if not datasets.is_available(name):
            logger.warning("panel: %s is not in the mirror or the cache; left out", name)
            continue
        if entry.protein_only:
            adata = datasets.load(name, modality="prot")
        else:
            adata = _rna_counts(name)
        labels = adata.obs[entry.label_key].astype(str).to_numpy()
        keep = ~_unannotated(labels)
        counts = pd.Series(labels[keep]).value_counts()
        keep &= pd.Series(labels).map(counts).fillna(0).to_numpy() >= MIN_CELLS_PER_TYPE
        idx = np.flatnonzero(keep)
        if len(idx) > MAX_CELLS:
            idx = np.sort(np.random.default_rng(0).choice(idx, MAX_CELLS, replace=False))
        adata = adata[idx].copy()
        labels = labels[idx]
        if len(set(labels)) < 2:
            continue
        model_input = protein_model_input(adata) if entry.protein_only else adata
        shift = SHIFT_KEYS.get(name)
        batch = entry.batch_key if entry.batch_key in adata.obs else None
        out.append(PanelData(name, model_input, adata, labels, shift, batch, log_normalize(adata)))
        logger.info("panel: %s, %d cells, %d types", name, adata.n_obs, len(set(labels)))
    return out


def tissue_groups() -> list[PanelData]:
    """Protocol 5's data: each ``TISSUE_GROUPS`` entry whose datasets are all available, their RNA
    counts on the genes they share, concatenated with the dataset in ``obs["dataset"]``; labels are
    the labelled datasets' types ("" for the cells of unlabelled datasets and of rare or unannotated
    types, left out of the F1 but kept for the mixing)."""
    import anndata as ad

    from cellweave import datasets
    from cellweave.data import log_normalize

    out = []
    for group, names in TISSUE_GROUPS.items():
        missing = [n for n in names if not datasets.is_available(n)]
        if missing:
            logger.warning("panel: %s left out; not in the mirror or the cache: %s", group, ", ".join(missing))
            continue
        parts, labels = {}, []
        for name in names:
            entry = datasets.REGISTRY[name]
            a = _rna_counts(name)
            a.var_names = a.var_names.astype(str)
            a.var_names_make_unique()
            parts[name] = a
            y = (a.obs[entry.label_key].astype(str).to_numpy() if entry.label_key
                 else np.full(a.n_obs, "", dtype=object))
            labels.append(np.where(_unannotated(y), "", y))
        data = ad.concat(parts, join="inner", label=TISSUE_BATCH, index_unique="-")
        y = np.concatenate(labels).astype(object)
        counts = pd.Series(y[y != ""]).value_counts()
        y[(y != "") & (pd.Series(y).map(counts).fillna(0).to_numpy() < MIN_CELLS_PER_TYPE)] = ""
        if len(set(y) - {""}) < 2:
            logger.warning("panel: %s left out; fewer than 2 labelled types", group)
            continue
        out.append(PanelData(group, data, data, y, None, TISSUE_BATCH, log_normalize(data)))
        logger.info("panel: %s, %d cells on %d shared genes, %d labelled", group, data.n_obs, data.n_vars,
                    int((y != "").sum()))
    return out


def _tissue_integration(ctx, d: PanelData, embs: dict[str, np.ndarray], seed: int) -> list[Record]:
    """Protocol 5 on one tissue group: dataset mixing, the labelled cells' kNN macro-F1 and their total."""
    from cellweave.bench import pca_hvg_embedding, tissue_scores
    from cellweave.tl import harmony, integrate_embedding

    batches = d.adata.obs[TISSUE_BATCH].astype(str).to_numpy()
    pcs = pca_hvg_embedding(d.adata, seed=seed)
    reps = {"PCA (HVG)": pcs, "Harmony": harmony(pcs, batches, seed=seed)}
    latent = _scvi_latent(ctx, d, seed=seed)
    if latent is not None:
        reps["scVI"] = latent
    for method, emb in embs.items():
        reps[method] = emb
        name = "cellweave (harmony)" if method == CELLWEAVE else f"{method} + harmony"
        reps[name] = integrate_embedding(emb, batches, method="harmony", seed=seed)
    records = []
    w_bio, w_batch = TISSUE_WEIGHTS
    for method, rep in reps.items():
        scores = tissue_scores(rep, batches, d.labels, k=N_NEIGHBORS, seed=seed)
        total = w_bio * scores["labelled kNN macro-F1"] + w_batch * scores["dataset mixing"]
        records += make_records(TASK, d.short, "tissue integration", seed, method, {"tissue total": total, **scores})
    return records


def _scvi_latent(ctx, d: PanelData, *, seed: int) -> np.ndarray | None:
    """scVI latent (10-d) of the 2000 HVGs' counts with the dataset's batches as covariate, trained
    once per dataset and seed (zero-shot kNN and integration share it); None for too few genes."""
    from cellweave.data import hvg_features
    from ._scvi_baselines import scvi_latent

    key = ("panel scVI", d.name, seed)
    if key not in ctx.cache:
        if d.adata.n_vars < 20:
            ctx.cache[key] = None
        else:
            batches = (d.adata.obs[d.batch_key].astype(str).to_numpy() if d.batch_key
                       else np.full(d.adata.n_obs, "0", dtype=object))
            ctx.cache[key] = scvi_latent(d.adata, hvg_features(d.lognorm), np.asarray(batches, dtype=str), seed=seed,
                                   max_epochs=SCVI_EPOCHS_QUICK if ctx.quick else SCVI_EPOCHS)
    return ctx.cache[key]


def standardized_hvgs(d: PanelData, train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-normalized top-2000 HVGs chosen on ``train`` and standardized on it, for ``train`` and ``other``."""
    from sklearn.preprocessing import StandardScaler

    from cellweave.data import hvg_features

    hv = hvg_features(d.lognorm[train])
    xtr, xo = d.lognorm[train][:, hv].toarray(), d.lognorm[other][:, hv].toarray()
    scaler = StandardScaler().fit(xtr)
    return scaler.transform(xtr), scaler.transform(xo)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the bin-weighted gap between mean confidence and accuracy over ``n_bins`` equal-width bins
    (Guo et al. 2017, "On calibration of modern neural networks")."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(confidence[sel].mean() - correct[sel].mean())
    return float(ece)


def _macro_f1(y_true, y_pred) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))}


def _zero_shot(ctx, d: PanelData, embs: dict[str, np.ndarray], seed: int) -> list[Record]:
    from cellweave.bench import knn_accuracy, pca_hvg_embedding

    reps = {**embs, "PCA (HVG)": pca_hvg_embedding(d.adata, seed=seed)}
    latent = _scvi_latent(ctx, d, seed=seed)
    if latent is not None:
        reps["scVI latent"] = latent
    records = []
    for method, rep in reps.items():
        res = knn_accuracy(rep, d.labels, k=N_NEIGHBORS, seed=seed)
        records += make_records(TASK, d.short, "zero-shot kNN", seed, method,
                                {"accuracy": res["accuracy"], "macro_f1": res["macro_f1"]})
    return records


def _with_aligned(embs: dict[str, np.ndarray], ref: np.ndarray, query: np.ndarray,
                  seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reference and query rows of each embedding, plus, for each cellweave variant, the two
    corrected together by Harmony (``tl.annotate(align=True)``), named ``"<variant> + Harmony
    (reference + query)"``: a combination with a baseline method, reported as one."""
    from cellweave.tl import align_reference_query

    out = {}
    for method, emb in embs.items():
        out[method] = (emb[ref], emb[query])
        if method.startswith(CELLWEAVE):
            out[f"{method}{ALIGNED}"] = align_reference_query(emb[ref], emb[query], seed=seed)
    return out


def _across_shift(d: PanelData, embs: dict[str, np.ndarray], seed: int) -> list[Record]:
    from sklearn.linear_model import LogisticRegression

    from cellweave.tl import LabelTransfer

    from ._cells import across_splits

    records = []
    # The groups left in the reference are its batches: the threshold is calibrated on them
    # (tl.annotate(batch_key=...)), held-out cells where only one is left (cross-fitted if few).
    groups = d.adata.obs[d.shift_key].astype(str).to_numpy()
    for group, tr, te in across_splits(d.adata.obs, d.shift_key, d.labels):
        split = f"across shift ({d.shift_key}={group})"
        yte = d.labels[te]
        lower = {"unknown_rate": False, "ece": False}
        for method, (etr, ete) in _with_aligned(embs, tr, te, seed).items():
            cw = LabelTransfer(seed=seed).fit(etr, d.labels[tr], groups=groups[tr]).predict(ete)
            m = _macro_f1(yte, cw.raw_prediction.astype(str))
            m["unknown_rate"] = float(cw.unknown.mean())
            m["ece"] = expected_calibration_error(cw.confidence, cw.raw_prediction.astype(str) == yte)
            records += make_records(TASK, d.short, split, seed, method, m, higher_is_better=lower)
        ztr, zte = standardized_hvgs(d, tr, te)
        lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(ztr, d.labels[tr])
        p = lr.predict_proba(zte)
        pred = lr.classes_[p.argmax(1)]
        m = _macro_f1(yte, pred)
        m["ece"] = expected_calibration_error(p.max(1), pred == yte)
        records += make_records(TASK, d.short, split, seed, "logreg-L2 (HVG)", m, higher_is_better=lower)
    return records


def novel_type_splits(d: PanelData, *, seed: int, quick: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The novel-type protocol's splits: ``(novel type, reference cells, query cells)``. The query is
    a stratified 30% of the cells (seeded); the reference is the other 70% without the novel type.
    Every type in turn, or in quick mode the ``NOVEL_TYPES_QUICK`` largest ones (the ones a
    reference is least likely to lack, hardest to call novel); none with fewer than 3 types."""
    from sklearn.model_selection import train_test_split

    classes = sorted(set(d.labels))
    if len(classes) < 3:
        return []
    ref, query = train_test_split(np.arange(len(d.labels)), test_size=0.3, stratify=d.labels, random_state=seed)
    if quick:
        sizes = pd.Series(d.labels).value_counts()
        classes = sorted(sizes.index[:NOVEL_TYPES_QUICK])
    return [(novel, ref[d.labels[ref] != novel], query) for novel in classes]


def baseline_novelty_scores(d: PanelData, tr: np.ndarray, query: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The novelty baselines' scores of the ``query`` cells against the ``tr`` reference, all on the
    standardized 2,000 HVGs chosen on the reference: logistic regression's max-softmax, the mean
    distance to the 15 nearest reference cells in PCA-50, the same after Harmony on reference +
    query together (the strongest simple baseline we know before the next), and the neighbourhood
    composition of :class:`cellweave.tl.LabelTransfer` (``novelty_score="composition"``) on PCA-50:
    how much more often than chance query cells are each other's neighbours."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestNeighbors

    from cellweave.tl import LabelTransfer, harmony

    ztr, zq = standardized_hvgs(d, tr, query)
    lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(ztr, d.labels[tr])
    scores = {"logreg max-softmax": 1.0 - lr.predict_proba(zq).max(1)}
    n_pc = int(min(50, ztr.shape[1] - 1, ztr.shape[0] - 1))
    pca = PCA(n_components=n_pc, random_state=seed).fit(ztr)
    ptr, pq = pca.transform(ztr), pca.transform(zq)
    k = min(N_NEIGHBORS, len(tr))
    scores["kNN distance (PCA)"] = NearestNeighbors(n_neighbors=k).fit(ptr).kneighbors(pq)[0].mean(1)
    joint = np.vstack([ptr, pq]).astype(np.float32)
    side = np.array(["reference"] * len(tr) + ["query"] * len(query))
    corrected = harmony(joint, side, seed=seed)
    scores["kNN distance (Harmony)"] = NearestNeighbors(n_neighbors=k).fit(corrected[: len(tr)]).kneighbors(
        corrected[len(tr):])[0].mean(1)
    composition = LabelTransfer(novelty_score="composition", seed=seed).fit(ptr, d.labels[tr])
    scores["kNN composition (PCA)"] = composition.predict(pq).novelty
    return scores


def _novel_type(ctx, d: PanelData, embs: dict[str, np.ndarray], seed: int) -> list[Record]:
    from sklearn.metrics import roc_auc_score

    from cellweave.tl import LabelTransfer

    records = []
    for novel, tr, query in novel_type_splits(d, seed=seed, quick=ctx.quick):
        is_novel = d.labels[query] == novel
        transfers = {method: LabelTransfer(seed=seed).fit(etr, d.labels[tr]).predict(eq)
                     for method, (etr, eq) in _with_aligned(embs, tr, query, seed).items()}
        scores = {method: cw.novelty for method, cw in transfers.items()}
        scores.update(baseline_novelty_scores(d, tr, query, seed))
        for method, s in scores.items():
            records += make_records(TASK, d.short, "novel type", seed, method,
                                    {"novel_auroc": roc_auc_score(is_novel, s)})
        for method, cw in transfers.items():
            records += make_records(TASK, d.short, "novel type", seed, method,
                                    {"known_flagged_unknown": float(cw.unknown[~is_novel].mean()),
                                     "novel_flagged_unknown": float(cw.unknown[is_novel].mean())},
                                    higher_is_better={"known_flagged_unknown": False})
    return records


def _integration(ctx, d: PanelData, embs: dict[str, np.ndarray], seed: int) -> list[Record]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from cellweave.tl import harmony, integrate_embedding

    from cellweave.data import hvg_features

    from ._cells import scib_scores

    latent = _scvi_latent(ctx, d, seed=seed)
    cells = np.arange(d.adata.n_obs)
    if ctx.quick and len(cells) > INTEGRATION_MAX_CELLS_QUICK:
        cells = np.sort(np.random.default_rng(seed).choice(cells, INTEGRATION_MAX_CELLS_QUICK, replace=False))
    batches = d.adata.obs[d.batch_key].astype(str).to_numpy()[cells]
    lognorm = d.lognorm[cells]
    hv = hvg_features(lognorm)
    z = StandardScaler().fit_transform(lognorm[:, hv].toarray())
    pcs = PCA(n_components=min(50, z.shape[1] - 1), random_state=seed).fit_transform(z).astype(np.float32)
    reps = {"HVG+PCA": pcs, "Harmony": harmony(pcs, batches, seed=seed)}
    if latent is not None:
        reps["scVI"] = latent[cells]
    for method, emb in embs.items():
        if not ctx.quick:  # the raw embedding is in the zero-shot protocol; quick mode scores what users run
            reps[method] = emb[cells]
        name = "cellweave (harmony)" if method == CELLWEAVE else f"{method} + harmony"
        reps[name] = integrate_embedding(emb[cells], batches, method="harmony", seed=seed)
    records = []
    for method, scores in scib_scores(batches, d.labels[cells], reps, kbet=not ctx.quick).items():
        metrics = {k: scores[k] for k in ("scIB total", "scIB bio conservation", "scIB batch correction")}
        records += make_records(TASK, d.short, "integration", seed, method, metrics)
    return records


def integration_records(ctx, d: PanelData, seed: int) -> list[Record]:
    """Protocol 4 alone on ``d`` with ``d.batch_key`` as the batch: the model zero-shot and ``ctx.adapt``'s
    variants, each with Harmony, beside Harmony on PCA and scVI, for scripts that build their own
    integration sets (``benchmarks/depth_shift_integration.py``)."""
    if not d.batch_key:
        raise ValueError(f"{d.name}: integration needs a batch key")
    embs, records = _model_embeddings(ctx, d, seed)
    return records + _integration(ctx, d, embs, seed)


def _model_embeddings(ctx, d: PanelData, seed: int) -> tuple[dict[str, np.ndarray], list[Record]]:
    """The embeddings every protocol scores: the model zero-shot; with ``ctx.adapt`` containing
    ``"untrained"`` the same architecture with random weights, zero-shot (on four panel datasets it
    embeds better than the shipped model); with ``"pretrained"`` the model adapted to the dataset's cells (``cellweave adapt``, no labels; the batch, else the shift key, as the count
    decoder's covariate) and the same architecture adapted from random weights in the same budget
    (the control: a transformer that never saw the corpus)."""
    from cellweave.train import adapt

    embs = {CELLWEAVE: ctx.embedding(d.name, d.model_input, seed=seed)}
    records: list[Record] = []
    for variant in ctx.adapt:
        if variant == "untrained":  # the control every cellweave variant must beat
            import torch

            from cellweave.models import CellWeave
            from cellweave.nn import CellWeaveModule

            torch.manual_seed(seed)
            untrained = CellWeave(ctx.model.config, ctx.model.vocab, module=CellWeaveModule(ctx.model.config).eval())
            with untrained.autocast(ctx.precision):
                embs[UNTRAINED] = untrained.embed(d.model_input, seed=seed, progress=False, dataset=d.name)[0]
            continue
        start, method = {"pretrained": ("pretrained", ADAPTED), "scratch": ("random", SCRATCH),
                         "genes": ("genes", GENES)}[variant]
        key = d.batch_key or d.shift_key
        budget = {"max_steps": ctx.adapt_max_steps} if ctx.adapt_max_steps else {}  # else adapt's default
        if ctx.adapt_lr is not None:
            budget["lr"] = ctx.adapt_lr
        model = adapt(d.model_input, model=ctx.model, method=ADAPT_METHOD, batch_key=key, start=start, seed=seed,
                      progress=False, precision=ctx.precision, **budget)
        with model.autocast(ctx.precision):
            embs[method] = model.embed(d.model_input, seed=seed, progress=False, dataset=d.name)[0]
        rec = model.card["adaptation"]
        records += make_records(TASK, d.short, "adaptation", seed, method,
                                {"seconds": rec["seconds"], "steps": rec["steps"]},
                                higher_is_better={"seconds": False, "steps": False})
    return embs, records


def _protocol(split: str) -> str:
    return "across shift" if split.startswith("across shift") else split


def panel_summary(records: list[Record]) -> pd.DataFrame:
    """Per protocol: cellweave's mean over datasets, the best baseline, cellweave's gap to it and the
    worst per-dataset gap (cellweave minus the best baseline of that dataset).

    A baseline that did not run on some datasets (scVI on the 9-antibody protein set) is compared
    with cellweave on the datasets where both ran, so no mean is taken over different datasets.
    """
    if not records:
        return pd.DataFrame()
    df = pd.DataFrame([r.to_dict() for r in records])
    df["protocol"] = df["split"].map(_protocol)
    rows = []
    for (protocol, metric), label in PROTOCOLS.items():
        sel = df[(df["protocol"] == protocol) & (df["metric"] == metric)]
        if sel.empty:
            rows.append({"protocol": label, "datasets": 0})
            continue
        per_dataset = sel.groupby(["dataset", "method"])["value"].mean().unstack("method")
        means = per_dataset.mean(axis=0)
        baselines = [m for m in per_dataset.columns if not m.startswith(CELLWEAVE)]
        ours = [m for m in per_dataset.columns if m.startswith(CELLWEAVE)]
        if not ours or not baselines:  # nothing to compare (e.g. a run whose baselines failed)
            rows.append({"protocol": label, "datasets": len(per_dataset)})
            continue
        best_ours = means[ours].idxmax()
        gaps = {}
        for b in baselines:  # over the datasets where both ran
            both = per_dataset[[best_ours, b]].dropna()
            gaps[b] = (both[best_ours].mean() - both[b].mean(), both[b].mean(), len(both))
        best_base = min(gaps, key=lambda b: gaps[b][0])
        per_gap = per_dataset[best_ours] - per_dataset[baselines].max(axis=1)
        worst = per_gap.idxmin()
        gap, base_mean, n_common = gaps[best_base]
        row = {"protocol": label, "datasets": len(per_dataset), "cellweave variant": best_ours,
               "cellweave": means[best_ours],
               "best baseline": f"{best_base} {base_mean:.3f}" + (
                   f" ({n_common} datasets)" if n_common < len(per_dataset) else ""),
               "gap (mean)": gap,
               "worst dataset gap": f"{per_gap[worst]:+.3f} ({worst})",
               "goal met": bool(gap >= 0 and per_gap.min() > -GOAL_MARGIN)}
        rows.append(row)
    return pd.DataFrame(rows)


#: What :func:`panel_seed_table` pools: the summary's protocols and point 4's two rates across a shift.
SEED_TABLE = {
    ("zero-shot kNN", "macro_f1"): PROTOCOLS[("zero-shot kNN", "macro_f1")],
    ("across shift", "macro_f1"): PROTOCOLS[("across shift", "macro_f1")],
    ("across shift", "unknown_rate"): "across a shift, known cells called unknown",
    ("across shift", "ece"): "across a shift, expected calibration error",
    ("novel type", "novel_auroc"): PROTOCOLS[("novel type", "novel_auroc")],
    ("integration", "scIB total"): PROTOCOLS[("integration", "scIB total")],
    ("tissue integration", "tissue total"): PROTOCOLS[("tissue integration", "tissue total")],
}


def panel_seed_table(records: list[Record]) -> pd.DataFrame:
    """Per protocol and method: the mean over datasets for each seed, then mean and sd over seeds.

    Within one seed a dataset's splits (shifts, left-out types, folds) are averaged first, then the
    datasets, as :func:`panel_summary` averages them; only datasets that the method holds on every
    seed enter, so every seed's mean is over the same datasets. ``sd`` is the sample standard
    deviation over seeds (``NaN`` with one seed). Columns: protocol, method, datasets, seeds, mean,
    sd, per-seed means (``seed S``).
    """
    columns = ["protocol", "method", "datasets", "seeds", "mean", "sd"]
    if not records:
        return pd.DataFrame(columns=columns)
    df = records_frame(records)
    df["protocol"] = df["split"].map(_protocol)
    all_seeds = sorted(int(s) for s in df["seed"].unique())
    rows = []
    for (protocol, metric), label in SEED_TABLE.items():
        sel = df[(df["protocol"] == protocol) & (df["metric"] == metric)]
        for method, m in sel.groupby("method", sort=True):
            per = m.groupby(["seed", "dataset"])["value"].mean().unstack("dataset")  # seeds x datasets
            per = per.dropna(axis=1)  # datasets the method holds on every one of its seeds
            if per.shape[1] == 0:
                continue
            by_seed = per.mean(axis=1)
            row = {"protocol": label, "method": method, "datasets": int(per.shape[1]),
                   "seeds": len(by_seed), "mean": float(by_seed.mean()),
                   "sd": float(by_seed.std(ddof=1)) if len(by_seed) > 1 else float("nan")}
            row.update({f"seed {int(s)}": float(v) for s, v in by_seed.items()})
            rows.append(row)
    return pd.DataFrame(rows, columns=columns + [f"seed {s}" for s in all_seeds])


def _run_config(ctx) -> dict:
    """What makes two panel runs' records comparable: a run resumes only records written under the same
    (the label transfer's ``softmax_when_far``, ``sharpen_when_far``, ``weight_parts`` and
    ``sharpen_when_shifted`` and ``cross_fit`` too: their defaults changed within version 0.1.0; and the
    precision of cellweave's passes)."""
    from cellweave._version import __version__
    from cellweave.tl import LabelTransfer

    defaults = LabelTransfer()
    return {"model_sha256": ctx.model.model_hash, "quick": bool(ctx.quick), "adapt": list(ctx.adapt),
            "adapt_method": ADAPT_METHOD if set(ctx.adapt) - {"untrained"} else None,
            "adapt_max_steps": ctx.adapt_max_steps, "adapt_lr": ctx.adapt_lr, "precision": ctx.precision,
            "cellweave": __version__,
            **{flag: getattr(defaults, flag) for flag in
               ("softmax_when_far", "sharpen_when_far", "weight_parts", "sharpen_when_shifted", "cross_fit")}}


def _finished(ctx) -> list[Record]:
    """Records of the (dataset, seed) pairs a stopped run in ``ctx.out`` finished (with ``ctx.resume``)."""
    import json

    from cellweave._exceptions import CellWeaveInputError
    from cellweave.bench._results import records_from_rows

    path = ctx.out / PARTIAL if ctx.out is not None else None
    if path is None or not path.exists():
        if ctx.resume:
            logger.warning("panel: --resume, but %s holds no stopped run; starting from the first dataset",
                           ctx.out or "no output folder")
        return []
    if not ctx.resume:
        logger.warning("panel: %s holds a stopped run's records; starting over and replacing them "
                       "(pass --resume to continue it instead)", path)
        return []
    try:
        with open(path) as fh:
            payload = json.load(fh)
        config, rows = dict(payload["config"]), payload["records"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CellWeaveInputError(f"{path}: cannot resume from it ({e}); delete it to start over.") from e
    config.setdefault("precision", "32-true")  # runs before the panel had a precision ran in float32
    now = _run_config(ctx)
    changed = [k for k in now if config.get(k) != now[k]]
    if changed:
        what = ", ".join(f"{k}: {config.get(k)!r} there, {now[k]!r} now" for k in changed)
        raise CellWeaveInputError(f"{path} was written by a panel run with other settings ({what}); resume with "
                                  "the same settings, or drop --resume to start over.")
    records = records_from_rows(rows, path)
    logger.info("panel: resuming %s: %d (dataset, seed) pairs already done", path,
                len({(r.dataset, r.seed) for r in records}))
    return records


def _save_finished(ctx, records: list[Record]) -> None:
    """Rewrite the records of every finished (dataset, seed) pair, atomically, so a stopped run keeps them."""
    from cellweave._io_utils import atomic_write_json

    if ctx.out is not None:
        atomic_write_json(ctx.out / PARTIAL, {"config": _run_config(ctx), "records": [r.to_dict() for r in records]})


def _dataset_protocols(ctx, d: PanelData, embs: dict[str, np.ndarray], seed: int) -> list[Record]:
    """Protocols 1-4 on one panel dataset."""
    records = _zero_shot(ctx, d, embs, seed)
    if d.shift_key:
        records += _across_shift(d, embs, seed)
    records += _novel_type(ctx, d, embs, seed)
    if d.batch_key:
        records += _integration(ctx, d, embs, seed)
    return records


def run(ctx, report) -> list[Record]:
    records = _finished(ctx)
    done = {(r.dataset, r.seed) for r in records}
    data = panel_datasets(ctx.quick)
    groups = tissue_groups()
    work = [(d, _dataset_protocols) for d in data] + [(g, _tissue_integration) for g in groups]
    for d, protocols in work:
        for seed in ctx.seeds:
            if (d.short, seed) in done:
                logger.info("panel: %s seed %d done in the stopped run; kept", d.name, seed)
                continue
            embs, adapt_records = _model_embeddings(ctx, d, seed)
            records += adapt_records + protocols(ctx, d, embs, seed)
            _save_finished(ctx, records)
            logger.info("panel: %s seed %d done", d.name, seed)
    summary = panel_summary(records)
    report.heading("Panel summary: mean over datasets per protocol", level=3)
    report.text("Goal: cellweave's mean at least the best baseline's, and no dataset more than 0.03 below its "
                "best baseline. Spatial annotation with a held-out section: no panel dataset has labelled "
                "sections, so it is not scored yet.", css_class="note")
    if not summary.empty:
        report.table(summary.round(3))
        logger.info("Panel summary:\n%s", summary.round(3).to_string(index=False))
    by_seed = panel_seed_table(records)
    if len(ctx.seeds) > 1 and not by_seed.empty:
        report.heading("Per protocol and method: mean over datasets, mean ± sd over seeds", level=3)
        report.table(by_seed.round(3))
        logger.info("Per protocol, mean over datasets, then over seeds:\n%s",
                    by_seed[["protocol", "method", "datasets", "mean", "sd"]].round(3).to_string(index=False))
    if ctx.out is not None:
        from cellweave._io_utils import atomic_write_json

        atomic_write_json(ctx.out / "panel.json", {
            "datasets": [d.name for d in data], "tissue groups": {d.name: TISSUE_GROUPS[d.name] for d in groups},
            "seeds": list(ctx.seeds), "quick": ctx.quick, "precision": ctx.precision,
            "summary": summary.replace({np.nan: None}).to_dict(orient="records"),
            "over seeds": by_seed.astype(object).where(by_seed.notna(), None).to_dict(orient="records"),
        })
        # The runner writes every record to results.json next; the checkpoint has served.
        (ctx.out / PARTIAL).unlink(missing_ok=True)
    return records
