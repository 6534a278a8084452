"""Benchmark task ``annotate``: label transfer and novel-type detection, cellweave vs baselines."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cellweave.bench._results import CELLWEAVE, Record, make_records

from cellweave.data import hvg_features

from ._cells import across_splits, load_cell_tasks, stratified_folds

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Cell-type annotation. cellweave = cellweave.tl.annotate's classifier: logistic regression (C=1) on the "
    "standardized frozen embedding, novelty = its default score (the mean rank, among held-out reference cells, "
    "of the mean distance to the 15 nearest reference cells and of 1 - max softmax). Baselines on the "
    "same splits: logistic regression with L2 (C=1, multinomial) and L1 (C=0.1, one-vs-rest liblinear) penalties on standardized log-normalized "
    "top-2000 HVGs chosen on the training cells (novelty = 1 - max softmax), and kNN (k=15) on 50 PCs of those "
    "HVGs (novelty = mean neighbour distance). Splits: '5-fold' = stratified 5-fold by cells; 'across <key>' = "
    "leave one group out (test cells of types absent from training are dropped); 'novel type' = each type in "
    "turn removed from a stratified 70% reference, all 30% query cells scored (AUROC of novelty for that type; "
    "accuracy and macro-F1 on the known-type query cells). 'cellweave (fine-tuned)' (full runs, first seed, "
    "first 'across' grouping) = annotate --finetune: the encoder fine-tuned 3 epochs on the training cells, then the same "
    "classifier on its embeddings."
)
TASK = "annotate"
#: Largest training set fine-tuned in the benchmark (3 epochs take minutes per 1,000 cells on 2 cores).
FINETUNE_MAX_CELLS = 1500


def _baselines(Xtr, ytr, Xte, *, seed: int, include_l1: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (predicted labels, novelty score) for each baseline, fit on training cells only."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(Xtr)
    ztr, zte = scaler.transform(Xtr), scaler.transform(Xte)
    out = {}
    lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(ztr, ytr)
    p = lr.predict_proba(zte)
    out["logreg-L2 (HVG)"] = (lr.classes_[p.argmax(1)], 1.0 - p.max(1))
    if include_l1:
        from sklearn.multiclass import OneVsRestClassifier

        # liblinear (one-vs-rest) fits the L1 model in about a second where saga takes ~20 s.
        l1 = OneVsRestClassifier(LogisticRegression(C=0.1, penalty="l1", solver="liblinear",
                                                    random_state=seed)).fit(ztr, ytr)
        p = l1.predict_proba(zte)
        out["logreg-L1 (HVG)"] = (l1.classes_[p.argmax(1)], 1.0 - p.max(1))
    n = int(min(50, ztr.shape[1] - 1, ztr.shape[0] - 1))
    pca = PCA(n_components=n, random_state=seed).fit(ztr)
    ptr, pte = pca.transform(ztr), pca.transform(zte)
    knn = KNeighborsClassifier(n_neighbors=min(15, len(ptr))).fit(ptr, ytr)
    out["kNN (PCA)"] = (knn.predict(pte), knn.kneighbors(pte)[0].mean(1))
    return out


def _finetuned(ctx, d, tr, te, seed: int) -> np.ndarray:
    """Labels predicted after fine-tuning the encoder on the training cells (as annotate --finetune)."""
    from cellweave.tl import LabelTransfer
    from cellweave.train import finetune_classifier

    ref = d.adata[tr]
    tuned, _ = finetune_classifier(ctx.model, ctx.model.prepare(ref, dataset=d.name), d.labels[tr], seed=seed,
                                   progress=ctx.progress, precision=ctx.precision)
    with tuned.autocast(ctx.precision):
        e_tr = tuned.embed(ref, seed=seed, progress=ctx.progress)[0]
        e_te = tuned.embed(d.adata[te], seed=seed, progress=ctx.progress)[0]
    return LabelTransfer(seed=seed).fit(e_tr, d.labels[tr]).predict(e_te).raw_prediction.astype(str)


def _scores(y_true, y_pred) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))}


def run(ctx, report) -> list[Record]:
    from sklearn.model_selection import train_test_split
    from sklearn.metrics import roc_auc_score

    from cellweave.tl import LabelTransfer

    records: list[Record] = []
    pooled: dict[str, dict[str, list]] = {}
    for d in load_cell_tasks(ctx):
        for seed in ctx.seeds:
            emb = ctx.embedding(d.name, d.adata, seed=seed)
            splits: list[tuple[str, np.ndarray, np.ndarray]] = [
                ("5-fold", tr, te) for tr, te in stratified_folds(d.labels, 5, seed)]
            for key in d.across[:1] if ctx.quick else d.across:
                splits += [(f"across {key}", tr, te) for _, tr, te in across_splits(d.adata.obs, key, d.labels)]
            include_l1 = not ctx.quick
            for split, tr, te in splits:
                hv = hvg_features(d.lognorm[tr])
                Xtr, Xte = d.lognorm[tr][:, hv].toarray(), d.lognorm[te][:, hv].toarray()
                cw = LabelTransfer(seed=seed).fit(emb[tr], d.labels[tr]).predict(emb[te])
                preds = {CELLWEAVE: cw.raw_prediction.astype(str)}
                preds.update({k: v[0] for k, v in _baselines(Xtr, d.labels[tr], Xte, seed=seed,
                                                              include_l1=include_l1).items()})
                if (d.across and split == f"across {d.across[0]}" and not ctx.quick and seed == ctx.seeds[0]
                        and len(tr) <= FINETUNE_MAX_CELLS):
                    # Fine-tuning costs minutes per split on a CPU: first seed, first "across" grouping only.
                    preds["cellweave (fine-tuned)"] = _finetuned(ctx, d, tr, te, seed)
                for method, yp in preds.items():
                    records += make_records(TASK, d.short, split, seed, method, _scores(d.labels[te], yp))
                    if split == "5-fold" and seed == ctx.seeds[0]:
                        pooled.setdefault(d.short, {}).setdefault(method, []).append((d.labels[te], yp))
            # Novel type: each label left out of the reference in turn.
            classes = sorted(set(d.labels))
            ref_idx, query_idx = train_test_split(np.arange(len(d.labels)), test_size=0.3, stratify=d.labels,
                                                  random_state=seed)
            novel_types = classes if len(classes) > 2 else []
            for novel in novel_types[:3] if ctx.quick else novel_types:
                tr = ref_idx[d.labels[ref_idx] != novel]
                is_novel = d.labels[query_idx] == novel
                hv = hvg_features(d.lognorm[tr])
                Xtr, Xte = d.lognorm[tr][:, hv].toarray(), d.lognorm[query_idx][:, hv].toarray()
                cw = LabelTransfer(seed=seed).fit(emb[tr], d.labels[tr]).predict(emb[query_idx])
                results = {CELLWEAVE: (cw.raw_prediction.astype(str), cw.novelty)}
                results.update(_baselines(Xtr, d.labels[tr], Xte, seed=seed, include_l1=include_l1))
                for method, (yp, nov) in results.items():
                    m = _scores(d.labels[query_idx][~is_novel], np.asarray(yp)[~is_novel])
                    m["novel_auroc"] = roc_auc_score(is_novel, nov)
                    records += make_records(TASK, d.short, "novel type", seed, method, m)
                    if method == CELLWEAVE:
                        m_unknown = float(cw.unknown[is_novel].mean())
                        records += make_records(TASK, d.short, "novel type", seed, method,
                                                {"novel_flagged_unknown": m_unknown,
                                                 "known_flagged_unknown": float(cw.unknown[~is_novel].mean())},
                                                higher_is_better={"known_flagged_unknown": False})
            logger.info("annotate: %s seed %d done", d.short, seed)
    _plots(report, pooled)
    return records


def _plots(report, pooled) -> None:
    """Confusion matrices (cellweave and the best baseline) and per-class F1, 5-fold, first seed."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, f1_score

    for dataset, methods in pooled.items():
        acc = {m: np.mean([np.mean(t == p) for t, p in v]) for m, v in methods.items()}
        best_base = max((m for m in acc if m != CELLWEAVE), key=acc.get)
        shown = [CELLWEAVE, best_base]
        fig, axes = plt.subplots(1, 3, figsize=(17, 5))
        per_class = {}
        for ax, m in zip(axes[:2], shown):
            t = np.concatenate([a for a, _ in methods[m]])
            p = np.concatenate([b for _, b in methods[m]]).astype(str)
            ConfusionMatrixDisplay.from_predictions(t, p, ax=ax, colorbar=False, xticks_rotation=45,
                                                    normalize="true", values_format=".2f")
            ax.set_title(f"{dataset}: {m} (accuracy {acc[m]:.3f})")
        for m, v in methods.items():
            t = np.concatenate([a for a, _ in v])
            p = np.concatenate([b for _, b in v]).astype(str)
            labels = np.unique(t)
            per_class[m] = pd.Series(f1_score(t, p, labels=labels, average=None), index=labels)
        pd.DataFrame(per_class).plot.bar(ax=axes[2])
        axes[2].set_ylabel("F1 (5-fold, pooled)")
        axes[2].set_ylim(0, 1.0)
        axes[2].set_title(f"{dataset}: per-class F1")
        # Outside the axes: inside, the legend covers the bars (F1 near 1 fills the whole plot).
        axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        report.heading(f"{dataset}: confusion matrices and per-class F1 (5-fold, first seed)", level=3)
        report.figure(fig)
