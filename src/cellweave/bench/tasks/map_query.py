"""Benchmark task ``map-query`` (the old name ``map`` still runs it, with a warning): map a query
onto a labelled reference across batches/protocols."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cellweave.bench._results import CELLWEAVE, Record, make_records

from cellweave.data import hvg_features

from ._cells import across_splits, load_cell_tasks

logger = logging.getLogger(__name__)

TASK = "map-query"
DESCRIPTION = (
    "Reference mapping: the reference is every group but one (leave one protocol out on the cell-line mixture, "
    "or one --batch-key group on user data), the query is the "
    "held-out group (query cells of types absent from the reference dropped); datasets without groups use a "
    "stratified 70/30 split. cellweave = tl.map_query (frozen embedding standardized on the reference, 15 faiss "
    "neighbours, Gaussian-weighted vote; uncertainty = 1 - winning share). 'cellweave (harmony)' = the same vote "
    "after Harmony on PCs of the joint reference+query embedding (reference vs query as batch). Baselines: kNN "
    "(k=15, distance-weighted) on 50 PCs of reference HVGs with the query projected; Harmony on the joint PCs "
    "then kNN; scVI + scArches query surgery then kNN (full mode only). uncertainty_auroc = AUROC of the "
    "uncertainty for wrong vs right predictions (does the uncertainty find the errors). known_flagged_unknown "
    "(cellweave rows only) = share of the query, all of reference types, that tl.map_query calls 'unknown' "
    "(annotate's rule: LabelTransfer's combined score with shift_adjust and softmax_when_far)."
)
SCVI_EPOCHS = 100


def _vote_knn(ref: np.ndarray, ytr: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(15, len(ref)), weights="distance").fit(ref, ytr)
    p = knn.predict_proba(query)
    return knn.classes_[p.argmax(1)], 1.0 - p.max(1)


def _harmony_joint(X: np.ndarray, is_query: np.ndarray, seed: int) -> np.ndarray:
    from cellweave.tl import harmony

    return harmony(X, np.where(is_query, "query", "reference"), seed=seed)


def _scarches(adata, hv, tr, te, ytr, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    import anndata as ad
    import scipy.sparse as sp
    import scvi

    from cellweave.io import detect_x_kind

    X = sp.csr_matrix(adata.X[:, hv], dtype=np.float32)
    if detect_x_kind(X) != "counts":
        return None
    scvi.settings.seed = seed
    ref = ad.AnnData(X=X[tr])
    ref.obs["batch"] = "reference"
    scvi.model.SCVI.setup_anndata(ref, batch_key="batch")
    model = scvi.model.SCVI(ref, n_latent=10, encode_covariates=True, deeply_inject_covariates=False,
                            use_layer_norm="both", use_batch_norm="none")
    model.train(max_epochs=SCVI_EPOCHS, accelerator="cpu", enable_progress_bar=False, logger=False)
    query = ad.AnnData(X=X[te])
    query.obs["batch"] = "query"
    q = scvi.model.SCVI.load_query_data(query, model)
    q.train(max_epochs=SCVI_EPOCHS, accelerator="cpu", enable_progress_bar=False, logger=False,
            plan_kwargs={"weight_decay": 0.0})
    return _vote_knn(model.get_latent_representation(), ytr, q.get_latent_representation())


def _scores(y_true, y_pred, uncertainty) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    wrong = np.asarray(y_pred).astype(str) != np.asarray(y_true).astype(str)
    out = {"accuracy": accuracy_score(y_true, y_pred),
           "macro_f1": f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))}
    out["uncertainty_auroc"] = roc_auc_score(wrong, uncertainty) if 0 < wrong.sum() < len(wrong) else float("nan")
    return out


def run(ctx, report) -> list[Record]:
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from cellweave.tl import LabelTransfer, NeighborIndex, kernel_vote

    records: list[Record] = []
    examples = []
    for d in load_cell_tasks(ctx):
        for seed in ctx.seeds:
            emb = ctx.embedding(d.name, d.adata, seed=seed)
            splits = []
            # The first grouping only (protocol for the cell-line mixture): query surgery costs minutes per split.
            for key in d.across[:1]:
                splits += [(f"across {key}", g, tr, te) for g, tr, te in across_splits(d.adata.obs, key, d.labels)]
            if not splits:
                tr, te = train_test_split(np.arange(len(d.labels)), test_size=0.3, stratify=d.labels, random_state=seed)
                splits = [("random 70/30", "30%", tr, te)]
            for split, group, tr, te in splits:
                ytr, yte = d.labels[tr], d.labels[te]
                scaler = StandardScaler().fit(emb[tr])
                ref_z, q_z = scaler.transform(emb[tr]), scaler.transform(emb[te])
                codes, classes = pd.factorize(ytr, sort=True)
                idx, dist = NeighborIndex(ref_z, backend="faiss").query(q_z, 15)
                proba = kernel_vote(idx, dist, codes, len(classes))
                results = {CELLWEAVE: (np.asarray(classes)[proba.argmax(1)], 1.0 - proba.max(1))}
                joint = np.vstack([ref_z, q_z])
                n = min(50, joint.shape[1] - 1)
                jp = PCA(n_components=n, random_state=seed).fit_transform(joint)
                is_q = np.r_[np.zeros(len(tr), bool), np.ones(len(te), bool)]
                h = _harmony_joint(jp, is_q, seed)
                hidx, hdist = NeighborIndex(h[~is_q], backend="faiss").query(h[is_q], 15)
                hp = kernel_vote(hidx, hdist, codes, len(classes))
                results["cellweave (harmony)"] = (np.asarray(classes)[hp.argmax(1)], 1.0 - hp.max(1))
                # Every query cell is of a reference type: the share tl.map_query's rule calls unknown.
                unknown = {CELLWEAVE: LabelTransfer(seed=seed).fit(emb[tr], ytr).predict(emb[te]).unknown,
                           "cellweave (harmony)": LabelTransfer(seed=seed).fit(h[~is_q], ytr).predict(h[is_q]).unknown}

                hv = hvg_features(d.lognorm[tr])
                xr, xq = d.lognorm[tr][:, hv].toarray(), d.lognorm[te][:, hv].toarray()
                sc_ = StandardScaler().fit(xr)
                xr, xq = sc_.transform(xr), sc_.transform(xq)
                pca = PCA(n_components=min(50, xr.shape[1] - 1), random_state=seed).fit(xr)
                pr, pq = pca.transform(xr), pca.transform(xq)
                results["kNN (PCA)"] = _vote_knn(pr, ytr, pq)
                hb = _harmony_joint(np.vstack([pr, pq]), is_q, seed)
                results["Harmony + kNN"] = _vote_knn(hb[~is_q], ytr, hb[is_q])
                if not ctx.quick:
                    sa = _scarches(d.adata, hv, tr, te, ytr, seed)
                    if sa is not None:
                        results["scVI + scArches"] = sa
                for method, (yp, unc) in results.items():
                    records += make_records(TASK, d.short, split, seed, method, _scores(yte, yp, unc))
                    if method in unknown:
                        records += make_records(TASK, d.short, split, seed, method,
                                                {"known_flagged_unknown": float(unknown[method].mean())},
                                                higher_is_better={"known_flagged_unknown": False})
                if seed == ctx.seeds[0] and len(examples) < 2:
                    examples.append((d, split, group, tr, te, emb))
            logger.info("map: %s seed %d done", d.short, seed)
    _plots(ctx, report, examples)
    return records


def _plots(ctx, report, examples) -> None:
    """The query placed on the reference UMAP by cellweave.tl.map_query (first seed)."""
    import anndata as ad
    import matplotlib.pyplot as plt

    from cellweave.pl import query_mapping
    from cellweave.tl import map_query

    for d, split, group, tr, te, emb in examples:
        ref = ad.AnnData(obs=pd.DataFrame({"label": d.labels[tr]}, index=d.adata.obs_names[tr]))
        qry = ad.AnnData(obs=pd.DataFrame(index=d.adata.obs_names[te]))
        # Reuse the cached embedding: map_query takes obsm["X_cellweave"] recorded for the same model.
        for a, rows in ((ref, tr), (qry, te)):
            a.obsm["X_cellweave"] = emb[rows]
            a.uns["cellweave"] = {"X_cellweave": {"model_sha256": ctx.model.model_hash}}
        map_query(qry, reference=ref, label_key="label", model=ctx.model, seed=ctx.seeds[0], progress=False)
        labs = qry.obs["cellweave_prediction"].astype(str).to_numpy()
        wrong = labs != d.labels[te]
        fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.6, 1]})
        # Reference and query in the same colours by measured type: a query cell on a patch of its
        # own colour landed on its type; crosses mark wrong (or 'unknown') predictions.
        qry.obs["measured_label"] = d.labels[te]
        query_mapping(qry, label_key="measured_label", ax=axes[0],
                      title=f"{d.short}, {split} = {group}: query on the reference UMAP")
        unc = qry.obs["cellweave_uncertainty"].to_numpy()
        axes[1].hist([unc[~wrong], unc[wrong]], bins=20, label=["correct", "wrong or unknown"], stacked=True)
        axes[1].set_xlabel("cellweave_uncertainty")
        axes[1].set_ylabel("query cells")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        report.heading(f"{d.short}: query mapping example ({split} = {group})", level=3)
        report.figure(fig)
