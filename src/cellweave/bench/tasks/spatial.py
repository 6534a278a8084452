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

The report shows, per dataset with coordinates and for the first seed, the spatial map
coloured by the measured label and by the two cellweave predictions on the test cells.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
    from cellweave.data import neighbourhood_mean, section_neighbors, spatial_coordinates
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
            nbr, _ = section_neighbors(adata, n_neighbors=N_NEIGHBORS, name=name)
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
            predictions = {}
            for method, rep in reps.items():
                scores, pred = _logreg_scores(rep, y, train, test, seed)
                records.extend(make_records("spatial", f"{name} ({label_key})", "stratified 70/30", seed, method, scores))
                if method.startswith(CELLWEAVE):
                    predictions[method] = (pred, scores["accuracy"])
            if seed == seeds[0] and coords is not None:
                maps.append(SpatialMap(name, label_key, seed, coords, y, train, test, predictions))
    _report(report, maps, notes, n_seeds=len(seeds))
    return records


@dataclass
class SpatialMap:
    """What one figure of the report shows: a dataset's coordinates, labels and predictions."""

    name: str
    label_key: str
    seed: int
    coords: np.ndarray
    labels: np.ndarray  # measured label of every cell
    train: np.ndarray
    test: np.ndarray
    predictions: dict[str, tuple[np.ndarray, float]]  # method -> (prediction of every cell, test accuracy)


def _report(report, maps: list[SpatialMap], notes: list[str], *, n_seeds: int) -> None:
    report.text(
        "Only osmFISH carries both coordinates and labels among the bundled spatial sets, so the with/without "
        f"comparison rests on one dataset ({n_seeds} seed(s) of a 70/30 split). The intestine zones have no "
        "coordinates. Of the Visium sets, the two Giotto crops carry no annotation, and "
        "spatial_visium_squidpy_test (49 spots) only 'leiden' clusters that scanpy computed from the same "
        "expression: not an independent label, so it is left out.", css_class="note")
    for n in notes:
        report.text(n, css_class="note")
    for m in maps:
        report.figure(_map_figure(m))
        report.text(
            f"{m.name}: cells at their measured coordinates (obsm['spatial']), seed {m.seed}. Left: the measured "
            f"'{m.label_key}' of every cell. Middle and right: the prediction of a logistic regression trained on "
            f"the {len(m.train)} training cells (70%), shown for the {len(m.test)} held-out test cells only "
            "(training cells in light grey); black rings mark misclassified test cells; titles give the test "
            "accuracy.", css_class="note")


def _map_figure(m: SpatialMap):
    import matplotlib.pyplot as plt

    from cellweave.pl import category_colors

    cats = sorted(set(m.labels))
    colour = category_colors(cats)  # distinct hues, none of them the grey of the training cells
    panels = [(f"measured {m.label_key} (all cells)", m.labels, None, None)]
    for method in (CELLWEAVE, f"{CELLWEAVE} (spatial context)"):
        if method in m.predictions:
            pred, accuracy = m.predictions[method]
            panels.append((f"{method} prediction\n(test cells; accuracy {accuracy:.3f})", pred, m.test, pred))
    xy = m.coords
    span = np.ptp(xy, axis=0)
    width = float(np.clip(5.5 * span[0] / max(span[1], 1e-9), 2.5, 7.0))  # panels follow the tissue's shape
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 2.0, 6.0), squeeze=False)
    for ax, (title, values, shown, pred) in zip(axes[0], panels):
        if shown is None:
            shown = np.arange(len(values))
        else:  # the training cells as context only
            ax.scatter(xy[m.train, 0], xy[m.train, 1], s=1.5, c=[(0.85, 0.85, 0.85, 1.0)], linewidths=0)
        ax.scatter(xy[shown, 0], xy[shown, 1], s=3, c=[colour.get(v, (0.5, 0.5, 0.5, 1.0)) for v in values[shown]],
                   linewidths=0)
        if pred is not None:
            wrong = m.test[pred[m.test] != m.labels[m.test]]
            ax.scatter(xy[wrong, 0], xy[wrong, 1], s=9, facecolors="none", edgecolors="k", linewidths=0.4)
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=colour[c], label=c) for c in cats]
    axes[0, -1].legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    fig.suptitle(f"{m.name}: spatial map coloured by measured and predicted {m.label_key}", fontsize=10)
    fig.tight_layout()
    return fig
