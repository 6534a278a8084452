"""Label-transfer accuracy of an embedding by kNN, and the PCA-on-HVG baseline embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cellweave._metrics import knn_accuracy  # pretraining's kNN monitor scores by the same rule

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["dataset_mixing", "knn_accuracy", "pca_hvg_embedding", "tissue_scores"]


def pca_hvg_embedding(
    adata: AnnData, *, n_comps: int = 50, n_top_genes: int = 2000, layer: str | None = None, seed: int = 0
) -> np.ndarray:
    """The standard baseline: normalize to 10k, log1p, top highly variable genes, PCA.

    Accepts counts or log-normalized values (the latter are used as they are).
    """
    import scanpy as sc
    from anndata import AnnData as _AnnData

    from cellweave.io import detect_x_kind

    X = adata.layers[layer] if layer else adata.X
    a = _AnnData(X=X.copy())
    a.var_names = adata.var_names
    if detect_x_kind(a.X) == "counts":
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    n_top = min(n_top_genes, a.n_vars)
    if n_top < a.n_vars:
        sc.pp.highly_variable_genes(a, n_top_genes=n_top, flavor="seurat")
        a = a[:, a.var["highly_variable"].values].copy()
    n = int(min(n_comps, a.n_vars - 1, a.n_obs - 1))
    sc.pp.pca(a, n_comps=n, random_state=seed)
    return np.asarray(a.obsm["X_pca"], dtype=np.float32)


def dataset_mixing(X: np.ndarray, groups, *, k: int = 15) -> float:
    """How mixed the groups (datasets, batches) are among each cell's ``k`` nearest neighbours: the mean
    share of neighbours from another group divided by that share's expectation if the groups were fully
    mixed (each group's complement), capped at 1. 1 = mixed, 0 = each group its own island.

    A kNN form of the batch-mixing entropy idea (Haghverdi et al. 2018; iLISI, Korsunsky et al. 2019)
    that reads directly as a share.
    """
    from sklearn.neighbors import NearestNeighbors

    groups = np.asarray(groups).astype(str)
    if len(np.unique(groups)) < 2:
        raise ValueError("dataset_mixing needs at least two groups.")
    k = min(k, len(groups) - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]
    other = (groups[idx] != groups[:, None]).mean(axis=1)
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    expected = 1.0 - counts[inverse] / len(groups)
    return float(min(1.0, other.mean() / expected.mean()))


def tissue_scores(X: np.ndarray, groups, labels, *, k: int = 15, seed: int = 0) -> dict[str, float]:
    """The two scores of datasets of one tissue embedded together (the panel's protocol 5, the demo's
    tissue section): ``"dataset mixing"`` (:func:`dataset_mixing` over all cells) and
    ``"labelled kNN macro-F1"`` (:func:`knn_accuracy` over the cells whose label is not ``""``; NaN
    with fewer than two labelled types)."""
    labels = np.asarray(labels, dtype=object)
    labelled = labels != ""
    f1 = (knn_accuracy(X[labelled], labels[labelled], k=k, seed=seed)["macro_f1"]
          if len(set(labels[labelled])) > 1 else float("nan"))
    return {"labelled kNN macro-F1": f1, "dataset mixing": dataset_mixing(X, groups, k=k)}
