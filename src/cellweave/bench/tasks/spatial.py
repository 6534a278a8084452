"""Benchmark task ``spatial``: cell-type / zone prediction with and without tissue context.

A logistic regression is trained on the cells of a stratified 70% split (per seed) and scored
on the other 30%, on four representations of the same cells:

* ``cellweave``: the cellweave embedding;
* ``cellweave (spatial context)``: the embedding with the mean embedding of each cell's 10
  nearest cells in space appended (``tl.embed(..., spatial=True)``);
* ``logreg on expression``: log-normalized expression (the 2000 most variable genes of the
  training cells, standardized);
* ``logreg on expression + neighbourhood``: the same plus the mean expression of the 10
  nearest cells in space.

Neighbourhoods are searched within a section only. Neighbours' expression (never their labels)
is used for test cells too: the information a user has when annotating a section.
"""

from __future__ import annotations

import logging

import numpy as np

from cellweave.bench import CELLWEAVE, make_records

from ._multimodal_common import dense, log_normalize, top_variable

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Spatial context: cell-type (osmFISH) and zone (intestine) prediction by logistic regression on the cellweave "
    "embedding with and without the mean embedding of the 10 nearest cells in space, vs logistic regression on "
    "expression alone and on expression + neighbourhood averages; stratified 70/30 splits."
)

N_NEIGHBORS = 10
#: (dataset, label key); datasets without coordinates get the expression-only methods.
DATASETS: list[tuple[str, str]] = [
    ("spatial_osmfish_scvi", "cell_type"),
    ("spatial_novosparc_intestine", "zone"),
]


def _logreg_scores(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int) -> tuple[dict, np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    clf.fit(X[train], y[train])
    pred = clf.predict(X[test])
    return {"accuracy": float(accuracy_score(y[test], pred)),
            "macro F1": float(f1_score(y[test], pred, average="macro"))}, clf.predict(X)


def run(ctx, report) -> list:
    import cellweave.datasets as cwd
    from cellweave.data._spatial import neighbourhood_mean, section_labels, spatial_coordinates, spatial_neighbors
    from sklearn.model_selection import train_test_split

    records: list = []
    seeds = ctx.seeds[:1] if ctx.quick else ctx.seeds
    maps = []
    notes = []
    # Quick mode (the demo): osmFISH only, the one set with both coordinates and labels.
    for name, label_key in (DATASETS[:1] if ctx.quick else DATASETS):
        adata = cwd.load(name)
        y = adata.obs[label_key].astype(str).to_numpy()
        keep = np.flatnonzero(~adata.obs[label_key].isna().to_numpy())
        counts = np.unique(y[keep], return_counts=True)
        keep = keep[np.isin(y[keep], counts[0][counts[1] >= 5])]  # classes too small to split
        coords = spatial_coordinates(adata)
        if coords is None:
            notes.append(f"{name} has no spatial coordinates (only its '{label_key}' labels): expression-only methods.")
        X = log_normalize(dense(adata.X))
        nbr = None
        if coords is not None:
            sections, _ = section_labels(adata.obs)
            nbr = spatial_neighbors(coords, sections, n_neighbors=N_NEIGHBORS)
        for seed in seeds:
            train, test = train_test_split(keep, test_size=0.3, random_state=seed, stratify=y[keep])
            emb = ctx.embedding(name, adata, seed=seed)
            cols = top_variable(X, train, 2000)
            reps = {CELLWEAVE: emb, "logreg on expression": X[:, cols]}
            if nbr is not None:
                reps[f"{CELLWEAVE} (spatial context)"] = np.concatenate([emb, neighbourhood_mean(emb, nbr)], axis=1)
                reps["logreg on expression + neighbourhood"] = np.concatenate(
                    [X[:, cols], neighbourhood_mean(X[:, cols], nbr)], axis=1)
            if ctx.cache.get("cellweave_only"):  # benchmarks/joint_vs_rna_pretraining.py
                reps = {m: r for m, r in reps.items() if m.startswith(CELLWEAVE)}
            for method, rep in reps.items():
                scores, pred = _logreg_scores(rep, y, train, test, seed)
                records.extend(make_records("spatial", f"{name} ({label_key})", "stratified 70/30", seed, method, scores))
                if seed == seeds[0] and coords is not None and method == f"{CELLWEAVE} (spatial context)":
                    maps.append((name, coords, y, pred, test))
    _report(report, maps, notes)
    return records


def _report(report, maps, notes) -> None:
    import matplotlib.pyplot as plt

    report.text(
        "Only osmFISH carries both coordinates and labels among the bundled spatial sets (the Visium sets have no "
        "labels; the intestine zones have no coordinates), so the with/without comparison rests on one dataset "
        "with 3 seeds of a 70/30 split.", css_class="note")
    for n in notes:
        report.text(n, css_class="note")
    for name, coords, y, pred, test in maps:
        cats = sorted(set(y))
        cmap = plt.get_cmap("tab20")
        colour = {c: cmap(i % 20) for i, c in enumerate(cats)}
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
        for ax, lab, title in ((axes[0], y, "measured label"),
                               (axes[1], pred, "cellweave (spatial context) prediction")):
            ax.scatter(coords[:, 0], coords[:, 1], s=2, c=[colour.get(v, (0.5, 0.5, 0.5, 1)) for v in lab])
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        wrong = test[pred[test] != y[test]]
        axes[1].scatter(coords[wrong, 0], coords[wrong, 1], s=6, facecolors="none", edgecolors="k", linewidths=0.3)
        handles = [plt.Line2D([], [], marker="o", ls="", color=colour[c], label=c) for c in cats]
        axes[1].legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
        fig.suptitle("Spatial map coloured by label; black rings: misclassified test cells", fontsize=9)
        fig.tight_layout()
        report.figure(fig)
