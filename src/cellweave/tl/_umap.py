"""UMAP coordinates of an embedding (exact kNN graph, then scanpy's UMAP)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _exact_knn(**kwargs):
    """scikit-learn's exact kNN graph as a ``csr_matrix``.

    scikit-learn >= 1.8 returns ``csr_array``, which scanpy 1.11's neighbor code cannot read
    (it calls ``getnnz``); the conversion keeps both working. Built on first use so that
    ``import cellweave`` (which imports ``tl``) does not import scikit-learn.
    """
    from sklearn.neighbors import KNeighborsTransformer

    class _ExactKNN(KNeighborsTransformer):
        def transform(self, X):
            return sp.csr_matrix(super().transform(X))

        def fit_transform(self, X, y=None):
            return sp.csr_matrix(super().fit_transform(X, y))

    return _ExactKNN(**kwargs)


def umap_coordinates(X: np.ndarray, *, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """2-D UMAP of the rows of ``X`` (cells x dimensions)."""
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(X=np.zeros((X.shape[0], 0), dtype=np.float32))
    a.obsm["rep"] = np.asarray(X, dtype=np.float32)
    k = min(n_neighbors, X.shape[0] - 1)
    sc.pp.neighbors(a, use_rep="rep", n_neighbors=k,
                    transformer=_exact_knn(n_neighbors=k, mode="distance", algorithm="brute"), random_state=seed)
    sc.tl.umap(a, random_state=seed)
    return np.asarray(a.obsm["X_umap"])
