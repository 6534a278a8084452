"""Benchmark task ``impute``: predict protein (CITE-seq) and chromatin (multiome) from RNA.

Per dataset and seed, cells (or batches) are split into train and test. Every method sees the
RNA of all cells and the measured target modality of the training cells only, and predicts the
target of the test cells; per-feature Pearson and Spearman against the measurement (protein:
CLR of counts; ATAC: log1p counts per 10k per 10 kb bin), averaged over features.

* ``cellweave (zero-shot)``: the cell head of the pretrained model, from each cell's RNA-only
  state (no training on this split at all);
* ``cellweave (kNN on embedding)``: kNN regression (k=15) on the RNA-only cellweave embedding;
* ``cellweave (fine-tuned)``: a feature-query decoder over the frozen encoder's token states,
  trained on the training cells (``tl.impute(..., reference=)``; early stopping on 15% of the
  training cells, never on test cells);
* ``kNN on RNA PCA``: kNN regression (k=15) on 50 PCs of log-normalized RNA (2000 most variable
  genes of the training cells);
* ``ridge on RNA``: ridge regression on the same genes, alpha chosen by cross-validation on the
  training cells (RidgeCV);
* ``totalVI``: scvi-tools' TOTALVI on RNA counts of the 2000 most variable genes + protein, the
  test cells' protein treated as missing (CITE-seq only; 60 epochs on the CPU, 30 in quick mode,
  KL warm-up over the first third);
* ``MultiVI``: scvi-tools' MULTIVI, training cells paired, test cells expression-only (multiome
  only; accessibility probabilities, scored by correlation; 100 epochs, 40 in quick mode).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cellweave import modalities
from cellweave.bench import CELLWEAVE, make_records
from cellweave.data import clr

from ._multimodal_common import dense, log_normalize, per_feature_correlations, pretraining_heldout, top_variable

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Cross-modal prediction: RNA -> surface protein (CITE-seq, CLR) and RNA -> ATAC (multiome peaks); "
    "mean per-feature Pearson/Spearman on test cells; cellweave zero-shot (cell head from the RNA-only state), "
    "fine-tuned (decoder trained on the training cells) and kNN on its embedding vs kNN on RNA PCA, ridge on "
    "log-normalized RNA, totalVI (protein) and MultiVI (ATAC), same splits."
)

#: (dataset, target modality, split kind)
DATASETS: list[tuple[str, str, str]] = [
    ("citeseq_pbmc_10x_scvi_tests", "prot", "batch"),
    ("citeseq_citefuse_eccite", "prot", "random"),
    ("multiome_muon_test", "atac", "random"),
]
K_NEIGHBORS = 15


def _splits(kind: str, batches: np.ndarray | None, n: int, seed: int, quick: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if kind == "batch" and batches is not None and len(np.unique(batches)) > 1:
        out = []
        for b in np.unique(batches):
            out.append((f"test batch {b}", np.flatnonzero(batches != b), np.flatnonzero(batches == b)))
        return out[:1] if quick else out
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = int(round(0.3 * n))
    return [("random 30% test cells", np.sort(perm[n_test:]), np.sort(perm[:n_test]))]


def _target_matrix(model, data, target: str) -> tuple[list[str], list[str], np.ndarray]:
    """Every measured feature of ``target``: its vocabulary key ("" when the model lacks it),
    name, and values (cells x features) in the metric's units: CLR for protein, log1p counts
    per 10k per peak for ATAC. Peaks in one 10 kb bin share the bin's zero-shot prediction."""
    from cellweave.tl import feature_keys

    mod = data[target]
    keys = feature_keys(model, mod, target)
    Y = clr(mod.X) if modalities.get(target).readout == "clr" else log_normalize(mod.X)
    return keys, [str(n) for n in mod.var_names], Y


def _totalvi(rna_counts: np.ndarray, prot_counts: np.ndarray, train: np.ndarray, test: np.ndarray,
             batches: np.ndarray | None, seed: int, quick: bool) -> np.ndarray:
    """totalVI predictions of the test cells' protein (their protein is hidden as a missing batch)."""
    import anndata as ad
    import pandas as pd
    import scvi

    scvi.settings.seed = seed
    scvi.settings.verbosity = logging.WARNING
    idx = np.concatenate([train, test])
    a = ad.AnnData(X=rna_counts[idx].astype(np.float32))
    prot = prot_counts[idx].astype(np.float32).copy()
    prot[len(train):] = 0.0
    a.obsm["protein"] = pd.DataFrame(prot, index=a.obs_names, columns=[f"p{j}" for j in range(prot.shape[1])])
    # The test cells form their own batch (the one whose protein is missing); a real batch label
    # of the training cells is kept when the split is by batch.
    tb = np.where(np.arange(len(idx)) < len(train), "train", "test").astype(object)
    if batches is not None:
        tb = np.array([f"{s}:{b}" for s, b in zip(tb, batches[idx])], dtype=object)
    a.obs["split_batch"] = pd.Categorical(tb)
    scvi.model.TOTALVI.setup_anndata(a, batch_key="split_batch", protein_expression_obsm_key="protein")
    m = scvi.model.TOTALVI(a, n_latent=10)
    epochs = 30 if quick else 60
    # KL warm-up over a third of the epochs: the default (0.75 x n_obs steps) is longer than the
    # whole run on sets of a few hundred cells, leaving the KL term under-weighted at the end.
    m.train(max_epochs=epochs, batch_size=128, accelerator="cpu", enable_progress_bar=False,
            early_stopping=False, plan_kwargs={"n_epochs_kl_warmup": max(1, epochs // 3), "n_steps_kl_warmup": None})
    train_batches = list(pd.unique(tb[: len(train)]))
    _, pro = m.get_normalized_expression(a, indices=np.arange(len(train), len(idx)), n_samples=5,
                                         transform_batch=train_batches, include_protein_background=False,
                                         return_mean=True)
    return np.log1p(np.asarray(pro, dtype=np.float64))


def _finetuned(model, corpus, Y: np.ndarray, train: np.ndarray, test: np.ndarray, target: str, keys: list[str],
               names: list[str], seed: int, quick: bool, progress: bool,
               precision: str = "32-true") -> tuple[np.ndarray, dict]:
    from cellweave.train import finetune_cross_modal

    predictor = finetune_cross_modal(
        model, corpus.subset(train), Y[train], target=target, feature_names=names, feature_keys=keys,
        input_modalities=["rna"], max_epochs=30 if quick else 40, seed=seed, progress=progress, precision=precision,
    )
    pred = predictor.predict(corpus.subset(test), seed=seed, progress=progress, precision=precision)
    return pred, predictor.summary


def _knn_predict(Z: np.ndarray, Y: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import KNeighborsRegressor

    k = min(K_NEIGHBORS, len(train))
    return KNeighborsRegressor(n_neighbors=k, weights="distance").fit(Z[train], Y[train]).predict(Z[test])


def _baselines(R: np.ndarray, Y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV

    cols = top_variable(R, train, 2000)
    Rt = R[:, cols]
    n_comp = int(min(50, len(train) - 1, Rt.shape[1] - 1))
    pca = PCA(n_components=n_comp, random_state=seed).fit(Rt[train])
    Z = pca.transform(Rt)
    ridge = RidgeCV(alphas=np.logspace(-1, 4, 12)).fit(Rt[train], Y[train])
    return {"kNN on RNA PCA": _knn_predict(Z, Y, train, test), "ridge on RNA": ridge.predict(Rt[test])}


def _score(task_records: list, dataset: str, split: str, seed: int, method: str, pred: np.ndarray,
           truth: np.ndarray, per_feature: dict) -> None:
    pear, spear = per_feature_correlations(pred, truth)
    if not np.isfinite(pear).any():
        return
    per_feature[method] = pear
    task_records.extend(make_records("impute", dataset, split, seed, method, {
        "pearson": float(np.nanmean(pear)), "spearman": float(np.nanmean(spear)),
    }))


def run(ctx, report) -> list:
    import cellweave.datasets as cwd

    model = ctx.model
    records: list = []
    seeds = ctx.seeds[:1] if ctx.quick else ctx.seeds
    datasets = DATASETS[:1] + DATASETS[2:] if ctx.quick else DATASETS
    scatter_payload: dict[str, Any] | None = None
    per_feature_tables = []
    notes = []
    fits: list[tuple[str, str, int, float]] = []
    for name, target, kind in datasets:
        data = cwd.load(name)
        label = f"{name} (RNA→{target})"
        keys, names, Y = _target_matrix(model, data, target)
        known = [k for k in dict.fromkeys(keys) if k]
        zero_shot_ok = bool(known)
        if not zero_shot_ok:
            # A model without this modality's tokens (e.g. RNA-only pretraining) has no zero-shot
            # prediction; kNN on its embedding still runs.
            notes.append(f"{name}: the model knows none of its {target} features: no zero-shot prediction.")
        rna = data["rna"]
        rna_counts = dense(rna.X)
        R = log_normalize(rna_counts)
        batches = np.asarray(data.obs["batch"]).astype(str) if "batch" in data.obs else None
        corpus = model.prepare(data, modalities=["rna"], dataset=name)
        heldout = pretraining_heldout(model, name, data.n_obs)
        for seed in seeds:
            with model.autocast(ctx.precision):  # the cell head reads the states in float32, as tl.impute's
                states = model.embed_corpus(corpus, seed=seed, progress=ctx.progress, pooling="cls")
                emb = model.embed_corpus(corpus, seed=seed, progress=ctx.progress)
            zero_shot = None
            if zero_shot_ok:
                pk = model.predict_features(corpus, known, target=target, cell_states=states)
                col = {k: j for j, k in enumerate(known)}
                # Features the model lacks get a constant (no correlation: left out of the mean).
                zero_shot = np.stack([pk[:, col[k]] if k else np.zeros(len(pk), np.float32) for k in keys], axis=1)
            split_list = _splits(kind, batches, data.n_obs, seed, ctx.quick)
            if heldout is not None and heldout.size >= 20 and not ctx.quick:
                rest = np.setdiff1d(np.arange(data.n_obs), heldout)
                split_list.append(("cells held out of pretraining", rest, heldout))
            for split, train, test in split_list:
                truth = Y[test]
                per_feature: dict[str, np.ndarray] = {}
                if zero_shot is not None:
                    _score(records, label, split, seed, f"{CELLWEAVE} (zero-shot)", zero_shot[test], truth, per_feature)
                _score(records, label, split, seed, f"{CELLWEAVE} (kNN on embedding)",
                       _knn_predict(emb, Y, train, test), truth, per_feature)
                tuned, summary = _finetuned(model, corpus, Y, train, test, target, keys, names, seed, ctx.quick,
                                            ctx.progress, ctx.precision)
                _score(records, label, split, seed, f"{CELLWEAVE} (fine-tuned)", tuned, truth, per_feature)
                # Facts about the fit, not scores of the prediction: a note, not metric rows.
                if seed == seeds[0]:
                    fits.append((label, split, int(summary["best_epoch"]), float(summary["seconds"])))
                if ctx.cache.get("cellweave_only"):  # benchmarks/joint_vs_rna_pretraining.py
                    continue
                for method, pred in _baselines(R, Y, train, test, seed).items():
                    _score(records, label, split, seed, method, pred, truth, per_feature)
                if target == "prot" and split != "cells held out of pretraining":
                    try:
                        genes = top_variable(R, train, 2000)  # as scvi-tools' tutorials: HVGs only
                        pred = _totalvi(rna_counts[:, genes], dense(data["prot"].X), train, test,
                                        batches if kind == "batch" else None, seed, ctx.quick)
                        _score(records, label, split, seed, "totalVI", pred, truth, per_feature)
                    except Exception as err:  # a baseline failing must not hide the others' numbers
                        logger.warning("totalVI failed on %s / %s: %s", name, split, err)
                        notes.append(f"totalVI failed on {name} / {split}: {type(err).__name__}: {err}")
                if target == "atac" and split != "cells held out of pretraining":
                    try:
                        from ._scvi_baselines import multivi_atac

                        pred = multivi_atac(rna_counts, dense(data["atac"].X), train, test, seed, ctx.quick)
                        _score(records, label, split, seed, "MultiVI", pred, truth, per_feature)
                    except Exception as err:  # a baseline failing must not hide the others' numbers
                        logger.warning("MultiVI failed on %s / %s: %s", name, split, err)
                        notes.append(f"MultiVI failed on {name} / {split}: {type(err).__name__}: {err}")
                if seed == seeds[0] and split == split_list[0][0]:
                    per_feature_tables.append((label, split, names, per_feature))
                    if scatter_payload is None and target == "prot":
                        scatter_payload = {"label": label, "split": split, "names": names, "truth": truth,
                                           "pred": tuned}
    if fits:
        notes.append("cellweave (fine-tuned), first seed: the decoder's best validation epoch and fine-tuning time: "
                     + "; ".join(f"{lab}, {split}: epoch {ep}, {sec:.0f} s" for lab, split, ep, sec in fits) + ".")
    _report(report, scatter_payload, per_feature_tables, notes, model)
    return records


def _report(report, scatter, tables, notes, model) -> None:
    import matplotlib.pyplot as plt
    import pandas as pd

    from cellweave.pl import predicted_vs_observed

    report.text(
        "Splits: the 10x PBMC CITE-seq set is split by batch (train on one, test on the other); the ECCITE and "
        "multiome sets by a random 30% of cells per seed. These sets are small (400-1000 cells, 14-49 proteins; "
        "the multiome set has 45 genes and 174 peaks): expect noisy numbers. The shipped model was pretrained on these datasets (RNA and the "
        "other modality, 90% of the cells), so its zero-shot predictions on most test cells are transductive; "
        "the split 'cells held out of pretraining' tests on the 10% its pretraining never saw (all methods "
        "trained on the rest).", css_class="note")
    for n in notes:
        report.text(n, css_class="note")
    for label, split, names, per_feature in tables:
        df = pd.DataFrame(per_feature, index=names)
        df.index.name = "feature"
        if len(df) > 30:
            df = df.describe().loc[["mean", "25%", "50%", "75%"]]
            df.index.name = "Pearson over features"
        report.text(f"Per-feature Pearson, {label}, {split}, first seed:", css_class="note")
        report.table(df.reset_index())
    if scatter is not None:
        names = scatter["names"]
        n = len(names)
        ncol = min(7, n)
        nrow = int(np.ceil(n / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 2.4 * nrow), squeeze=False)
        for j, ax in enumerate(axes.ravel()):
            if j >= n:
                ax.axis("off")
                continue
            # Axis labels on the outer panels only (the panel below, if any, carries the x label).
            predicted_vs_observed(ax, scatter["truth"][:, j], scatter["pred"][:, j],
                                  xlabel="measured (CLR)" if j + ncol >= n else "",
                                  ylabel="predicted (CLR)" if j % ncol == 0 else "", title=names[j][:18])
            ax.tick_params(labelsize=6)
        fig.suptitle(f"cellweave fine-tuned prediction vs measured CLR protein, test cells: {scatter['label']}, "
                     f"{scatter['split']} (dashed: perfect prediction)", fontsize=9)
        fig.tight_layout()
        report.figure(fig)
