"""Benchmark task ``markers``: marker genes by attribution through the model vs scanpy's Wilcoxon
and t-test ``rank_genes_groups``, on the same cells.

Protocol
--------
* Per seed, cells are split 50/50, stratified by label. Every method finds markers on the
  training half only, among the same genes (those the model knows).
  - ``cellweave``: integrated gradients of the group's log-probability under a logistic
    regression on the frozen cell embeddings (fitted on the training half), averaged over
    training cells of the group (:func:`cellweave.tl.markers`).
  - ``Wilcoxon``, ``t-test``: scanpy ``rank_genes_groups`` (one group vs rest) on log1p(CP10k).
  - ``random``: a random ranking per group (the control).
* Classification: the union of each method's top-k markers per group (k = 5 and 10) are the
  only features of a logistic regression (standardized log1p(CP10k)) trained on the training
  half; accuracy and macro-F1 on the held-out half.
* Canonical markers (PBMC only): share of the bundled canonical markers of each type found in
  that type's top 20 (recall@20), averaged over types with at least one marker in the data.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from cellweave.bench._results import make_records

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Marker genes: cellweave (integrated gradients through a classifier on frozen embeddings) vs scanpy Wilcoxon "
    "and t-test rank_genes_groups, found on the same training cells; scored by how well only the top-k markers "
    "classify held-out cells (logistic regression) and, on PBMC, by recall of canonical markers."
)
TOP_K = (5, 10)
CANONICAL_TOP = 20


def _datasets(ctx: Any) -> list[tuple[str, Any, str]]:
    from cellweave import datasets

    if ctx.data is not None:
        from cellweave.tl import rna_adata

        return [(ctx.data_name or "data", rna_adata(ctx.data), ctx.label_key)]
    # pbmc68k_reduced's X is scaled; its .raw holds log-normalized values the model accepts.
    out = [("scanpy_pbmc68k_reduced (.raw)", datasets.load("scanpy_pbmc68k_reduced").raw.to_adata(), "cell_type")]
    if not ctx.quick:
        out.append(("multibatch_cellbench_sc_mixology", datasets.load("multibatch_cellbench_sc_mixology"), "cell_type"))
    return out


def _scanpy_markers(X, genes: list[str], labels: np.ndarray, method: str) -> dict[str, list[str]]:
    import anndata as ad
    import scanpy as sc

    obs = pd.DataFrame({"g": pd.Categorical(labels)}, index=[str(i) for i in range(len(labels))])
    a = ad.AnnData(X=X, obs=obs)
    a.var_names = genes
    sc.tl.rank_genes_groups(a, "g", method=method, use_raw=False, n_genes=max(TOP_K + (CANONICAL_TOP,)))
    names = a.uns["rank_genes_groups"]["names"]
    return {g: [str(x) for x in names[g]] for g in names.dtype.names}


def _classify(X_tr, y_tr, X_te, y_te, cols: np.ndarray, seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    A_tr = np.asarray(X_tr[:, cols].todense()) if hasattr(X_tr, "todense") else X_tr[:, cols]
    A_te = np.asarray(X_te[:, cols].todense()) if hasattr(X_te, "todense") else X_te[:, cols]
    scaler = StandardScaler().fit(A_tr)
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(scaler.transform(A_tr), y_tr)
    pred = clf.predict(scaler.transform(A_te))
    return {"accuracy": accuracy_score(y_te, pred), "macro_f1": f1_score(y_te, pred, average="macro")}


def run(ctx: Any, report: Any) -> list:
    from sklearn.model_selection import train_test_split

    from cellweave.tl import gene_sets
    from cellweave.tl import log_normalized, prepare_rna
    from cellweave.tl import corpus_var_names, attribution_scores, fit_group_classifier

    model = ctx.model
    n_cells = 10 if ctx.quick else 20
    n_steps = 4 if ctx.quick else 8
    canonical_all = gene_sets("marker")
    records: list = []
    examples = []
    timing: dict[str, float] = {}
    for name, adata, label_key in _datasets(ctx):
        labels_all = adata.obs[label_key]
        keep = labels_all.notna().to_numpy()
        counts = labels_all[keep].astype(str).value_counts()
        keep &= labels_all.astype(str).isin(counts.index[counts >= 4]).to_numpy()
        adata = adata[keep].copy()
        y = adata.obs[label_key].astype(str).to_numpy()
        corpus, tok = prepare_rna(adata, model)
        genes = [str(g) for g in corpus_var_names(adata, model, tok, None)]
        X = log_normalized(adata)[:, adata.var_names.get_indexer(genes)].tocsr()
        pos = {g: i for i, g in enumerate(genes)}
        emb = ctx.embedding(name, adata, seed=0)
        groups = sorted(set(y))
        canonical = {g: [m for m in canonical_all.get(g, []) if m in pos] for g in groups}
        canonical = {g: v for g, v in canonical.items() if v}
        for seed in ctx.seeds:
            tr, te = train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed)
            rng = np.random.default_rng(seed)
            ranked: dict[str, dict[str, list[str]]] = {}
            t = time.perf_counter()
            ranked["Wilcoxon"] = _scanpy_markers(X[tr], genes, y[tr], "wilcoxon")
            timing["Wilcoxon"] = time.perf_counter() - t
            t = time.perf_counter()
            ranked["t-test"] = _scanpy_markers(X[tr], genes, y[tr], "t-test")
            timing["t-test"] = time.perf_counter() - t
            t = time.perf_counter()
            clf, classes = fit_group_classifier(emb[tr], y[tr], seed=seed)
            cw = {}
            for g in groups:
                members = tr[y[tr] == g]
                cells = np.sort(rng.choice(members, size=min(n_cells, len(members)), replace=False))
                s = attribution_scores(model, corpus, tok, clf, cells, classes.index(g), n_steps=n_steps, seed=seed)
                cw[g] = [genes[i] for i in np.argsort(-s, kind="stable")]
            ranked["cellweave"] = cw
            timing["cellweave"] = time.perf_counter() - t
            ranked["random"] = {g: list(np.array(genes)[rng.permutation(len(genes))]) for g in groups}
            for method, rk in ranked.items():
                metrics: dict[str, float] = {}
                for k in TOP_K:
                    cols = np.array(sorted({pos[x] for g in groups for x in rk[g][:k]}))
                    m = _classify(X[tr], y[tr], X[te], y[te], cols, seed)
                    metrics[f"top{k}_accuracy"] = m["accuracy"]
                    metrics[f"top{k}_macro_f1"] = m["macro_f1"]
                if canonical:
                    metrics[f"canonical_recall@{CANONICAL_TOP}"] = float(np.mean(
                        [np.mean([x in rk[g][:CANONICAL_TOP] for x in canonical[g]]) for g in canonical]))
                records += make_records("markers", name, "50/50 stratified", seed, method, metrics)
                if seed == ctx.seeds[0] and name == _datasets_first(ctx):
                    for g in groups:
                        examples.append({"group": g, "method": method, "top 5": ", ".join(rk[g][:5])})
    _report(report, examples, canonical_all, timing, n_cells, n_steps)
    return records


def _datasets_first(ctx: Any) -> str:
    if ctx.data is not None:
        return ctx.data_name or "data"
    return "scanpy_pbmc68k_reduced (.raw)"


def _report(report: Any, examples: list[dict], canonical: dict, timing: dict, n_cells: int, n_steps: int) -> None:
    if not examples:
        return
    df = pd.DataFrame(examples)
    wide = df[df["method"] != "random"].pivot(index="group", columns="method", values="top 5").reset_index()
    wide.columns.name = None
    wide["canonical markers (bundled)"] = [", ".join(canonical.get(g, [])) or "–" for g in wide["group"]]
    report.text(f"Top-5 markers per group (first seed and dataset; cellweave: integrated gradients, {n_steps} steps, "
                f"over {n_cells} training cells per group).", css_class="note")
    report.table(wide)
    report.text("Seconds per method (last seed): " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items())
                + ". scanpy_pbmc68k_reduced: X is scaled, so every method uses the log-normalized .raw (765 genes).",
                css_class="note")
