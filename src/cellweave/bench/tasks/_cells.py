"""Shared pieces of the cell-level tasks (annotate, integrate, map): data, splits, baseline features."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: Bundled labelled datasets of the cell-level tasks: name -> (label key, batch key or None).
LABELLED = {
    "multibatch_cellbench_sc_mixology": ("cell_type", "batch"),
    "spatial_osmfish_scvi": ("cell_type", None),
    "spatial_novosparc_intestine": ("zone", None),
}
SHORT = {
    "multibatch_cellbench_sc_mixology": "cellbench",
    "spatial_osmfish_scvi": "osmFISH",
    "spatial_novosparc_intestine": "intestine",
}
#: Extra "across" groupings of the bundled data (train on some groups, test on the held-out one).
ACROSS = {"multibatch_cellbench_sc_mixology": ["protocol", "batch"]}


@dataclass
class CellTaskData:
    """One labelled dataset: the RNA AnnData, labels, batches and the log-normalized matrix."""

    name: str
    adata: Any
    labels: np.ndarray
    label_key: str
    batch_key: str | None
    across: list[str]
    lognorm: sp.csr_matrix

    @property
    def short(self) -> str:
        return SHORT.get(self.name, self.name)


def load_cell_tasks(ctx, *, need_batch: bool = False) -> list[CellTaskData]:
    """The datasets of a cell-level task: the user's file (``INPUT``) or the bundled ones."""
    from cellweave import datasets
    from cellweave.data import log_normalize
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.io import as_modalities

    out = []
    if ctx.data is not None:
        rna = as_modalities(ctx.data).get("rna")
        if rna is None:
            raise CellWeaveInputError("INPUT has no RNA modality; the cell-level benchmarks need RNA.")
        if hasattr(ctx.data, "mod"):
            rna = rna.copy()
            for col in ctx.data.obs.columns:
                rna.obs[col] = ctx.data.obs[col].to_numpy()
        items = [(ctx.data_name or "user_data", rna, ctx.label_key, ctx.batch_key,
                  [ctx.batch_key] if ctx.batch_key else [])]
    else:
        names = list(LABELLED)[:1] if ctx.quick else list(LABELLED)
        items = []
        for n in names:
            label_key, batch_key = LABELLED[n]
            if need_batch and batch_key is None:
                continue
            items.append((n, datasets.load(n), label_key, batch_key, ACROSS.get(n, [])))
    for name, adata, label_key, batch_key, across in items:
        keep = adata.obs[label_key].notna().to_numpy()
        if not keep.all():
            adata = adata[keep].copy()
        labels = adata.obs[label_key].astype(str).to_numpy()
        out.append(CellTaskData(name, adata, labels, label_key, batch_key, across, log_normalize(adata)))
    return out


def stratified_folds(labels: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    _, counts = np.unique(labels, return_counts=True)
    n = int(max(2, min(n_splits, counts.min())))
    return list(StratifiedKFold(n_splits=n, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def across_splits(obs: pd.DataFrame, key: str, labels: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Leave-one-group-out splits of ``obs[key]``; the test group keeps only labels seen in training."""
    groups = obs[key].astype(str).to_numpy()
    out = []
    for g in sorted(set(groups)):
        train = np.flatnonzero(groups != g)
        test = np.flatnonzero(groups == g)
        test = test[np.isin(labels[test], labels[train])]
        if len(test) and len(set(labels[train])) >= 2:
            out.append((g, train, test))
    return out


def scib_scores(batches: np.ndarray, labels: np.ndarray, reps: dict[str, np.ndarray], *,
                kbet: bool) -> dict[str, dict[str, float]]:
    """scib-metrics' Benchmarker (unscaled) on ``reps`` (method -> embedding; the first one is the
    pre-integration reference for PCR): method -> every metric, the aggregates named "scIB batch
    correction", "scIB bio conservation" and "scIB total". ``kbet=False`` leaves out kBET, the
    slowest metric; the aggregates then average the rest."""
    import anndata as ad
    from scib_metrics.benchmark import BatchCorrection, Benchmarker

    a = ad.AnnData(obs=pd.DataFrame({"batch": np.asarray(batches, dtype=str), "label": np.asarray(labels, dtype=str)},
                                    index=[str(i) for i in range(len(labels))]))
    keys = {}
    for i, (name, rep) in enumerate(reps.items()):
        keys[f"rep{i}"] = name
        a.obsm[f"rep{i}"] = np.asarray(rep, dtype=np.float32)
    bm = Benchmarker(a, "batch", "label", list(keys), pre_integrated_embedding_obsm_key="rep0",
                     batch_correction_metrics=BatchCorrection(kbet_per_label=kbet), n_jobs=1, progress_bar=False)
    bm.benchmark()
    table = bm.get_results(min_max_scale=False).drop(index="Metric Type", errors="ignore")
    names = {"Batch correction": "scIB batch correction", "Bio conservation": "scIB bio conservation",
             "Total": "scIB total"}
    return {method: {names.get(col, col): float(val) for col, val in table.loc[key].items()}
            for key, method in keys.items()}
