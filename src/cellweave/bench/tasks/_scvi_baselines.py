"""scvi-tools baselines for the cross-modal benchmark tasks (imported lazily: scvi-tools is optional).

* :func:`scvi_latent`: the SCVI latent of a dataset (integration and zero-shot baselines).
* :func:`multivi_atac`: MultiVI (scvi-tools' ``MULTIVI``) trained on the training cells as paired
  RNA + ATAC and the test cells as expression-only (ATAC hidden), predicting the test cells'
  accessibility from their RNA.

This module imports nothing from scvi-tools at import time; every function imports it inside.
"""

from __future__ import annotations

import inspect
import logging

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: Training epochs of :func:`multivi_atac` (normal, quick) and its learning rate. MultiVI's default
#: (lr 1e-4, up to 500 epochs with early stopping) is meant for large data sets; with ~1000 cells
#: (8 minibatches an epoch) it is still far from converged after 300 epochs, while at lr 1e-3 the
#: training ELBO flattens by ~100 epochs (bundled multiome set: ~0.25 s an epoch on one CPU thread).
MULTIVI_EPOCHS = (100, 40)
MULTIVI_LR = 1e-3
#: RNA genes given to MultiVI: the most variable (log1p CP10k, training cells) when there are more.
MULTIVI_MAX_GENES = 2000
#: Batch labels of the "modality" covariate, as in scvi-tools' MultiVI tutorial.
PAIRED, EXPRESSION, ACCESSIBILITY = "paired", "expression", "accessibility"


def _csr(X) -> sp.csr_matrix:
    return sp.csr_matrix(X, dtype=np.float32)


def _log1p_cp10k(X: np.ndarray) -> np.ndarray:
    tot = X.sum(1, keepdims=True)
    return np.log1p(X / np.where(tot > 0, tot, 1.0) * 1e4)


def multivi_atac(rna_counts: np.ndarray, atac_counts: np.ndarray, train: np.ndarray, test: np.ndarray,
                 seed: int, quick: bool, *, max_epochs: int | None = None, n_hidden: int | None = 128,
                 n_latent: int | None = 10, lr: float | None = None) -> np.ndarray:
    """MultiVI predictions of the test cells' chromatin accessibility from their RNA.

    ``rna_counts`` (cells x genes) and ``atac_counts`` (cells x regions) are raw counts of the same
    cells, dense or sparse; ``train`` and ``test`` are disjoint row positions. scvi-tools'
    ``MULTIVI`` is fit on the training cells as paired cells (RNA + ATAC) and the test cells as
    expression-only cells (their ATAC replaced by zeros, which MultiVI reads as "not measured"),
    with a ``modality`` batch covariate (``paired`` / ``expression``) as in scvi-tools' tutorial.
    Training cells with no ATAC count at all are expression-only cells to MultiVI whatever their
    label, so they are labelled so; training cells without RNA counts are accessibility-only.

    Only the RNA counts of the 2000 most variable genes (log1p counts per 10k over the training
    cells) are used when there are more genes than that (for speed; the bundled multiome set has
    45 genes, all used). ``n_hidden``/``n_latent`` default to 128/10 instead of MultiVI's
    sqrt(n_regions)/sqrt(n_hidden) rule, which is sized for genome-wide peak sets and gives a
    13-unit, 3-dimensional model on a panel of ~170 regions (pass ``None`` for MultiVI's rule).

    Training: ``scvi.settings.seed = seed``, CPU (torch limited to one thread during the fit, then
    restored), no progress bar, no early stopping, all cells in the training set (no validation
    split), ``max_epochs`` epochs (default ``MULTIVI_EPOCHS``: 100, or 40 when ``quick``) at
    learning rate ``lr`` (default ``MULTIVI_LR`` = 1e-3, ten times MultiVI's default: see
    ``MULTIVI_EPOCHS``), KL warm-up over the first third of the epochs. About 25 s per fit (10 s
    quick) on the bundled 1000-cell multiome set on a busy two-core CPU.

    Returns a float64 array (``len(test)`` x n_regions, rows in the order of ``test``) of
    MultiVI's accessibility probabilities ``get_normalized_accessibility(..., transform_batch=
    "paired")``: the probability, in [0, 1], that each region is open in each test cell, decoded
    from the latent state inferred from the cell's RNA alone, with neither the cell's ATAC library
    size factor nor the region factors applied. These are not in the units of the benchmark's
    target (log1p counts per 10k): compare them with rank- or Pearson-type per-feature
    correlations only (per feature, the two are monotonically related in expectation up to the
    cell-level library factor that MultiVI deliberately leaves out).
    """
    import anndata as ad
    import pandas as pd
    import scvi

    train = np.asarray(train, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    if len(np.intersect1d(train, test)):
        raise ValueError("train and test cells overlap")
    rna = _csr(rna_counts)
    atac = _csr(atac_counts)
    if rna.shape[0] != atac.shape[0]:
        raise ValueError(f"RNA has {rna.shape[0]} cells, ATAC {atac.shape[0]}")
    n_regions = atac.shape[1]

    if rna.shape[1] > MULTIVI_MAX_GENES:
        lt = _log1p_cp10k(rna[train].toarray().astype(np.float64))
        genes = np.sort(np.argsort(-lt.var(0))[:MULTIVI_MAX_GENES])
        rna = rna[:, genes]

    idx = np.concatenate([train, test])
    n_tr = len(train)
    X_rna = rna[idx]
    X_atac = atac[idx].tolil()
    X_atac[n_tr:] = 0.0  # the test cells' ATAC is hidden
    X_atac = X_atac.tocsr()
    X_atac.eliminate_zeros()
    has_rna = np.asarray(X_rna.sum(1)).ravel() > 0
    has_atac = np.asarray(X_atac.sum(1)).ravel() > 0
    modality = np.where(has_rna & has_atac, PAIRED, np.where(has_atac, ACCESSIBILITY, EXPRESSION)).astype(object)
    if not (modality == PAIRED).any():
        raise ValueError("no training cell has both RNA and ATAC counts")

    scvi.settings.seed = seed
    scvi.settings.verbosity = logging.WARNING
    if max_epochs is None:
        max_epochs = MULTIVI_EPOCHS[1] if quick else MULTIVI_EPOCHS[0]
    obs_names = [f"c{i}" for i in idx]
    obs = pd.DataFrame({"modality": pd.Categorical(modality, categories=[PAIRED, EXPRESSION, ACCESSIBILITY])},
                       index=obs_names)
    obs["modality"] = obs["modality"].cat.remove_unused_categories()
    gene_names = [f"g{j}" for j in range(X_rna.shape[1])]
    region_names = [f"r{j}" for j in range(n_regions)]

    model_kwargs = dict(n_hidden=n_hidden, n_latent=n_latent)
    if hasattr(scvi.model.MULTIVI, "setup_mudata"):
        # scvi-tools >= 1.1: one MuData with an "rna" and an "atac" modality over the same cells.
        import mudata as md

        data = md.MuData({
            "rna": ad.AnnData(X=X_rna, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=gene_names)),
            "atac": ad.AnnData(X=X_atac, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=region_names)),
        })
        data.obs["modality"] = obs["modality"].values
        scvi.model.MULTIVI.setup_mudata(data, batch_key="modality",
                                        modalities={"rna_layer": "rna", "atac_layer": "atac"})
        model = scvi.model.MULTIVI(data, **model_kwargs)
    else:
        # Older scvi-tools (before MuData support; from 1.4 on, setup_anndata only warns and does
        # nothing): one AnnData with the genes then the regions as features, as
        # scvi.data.organize_multiome_anndatas builds it. Not exercised by the installed 1.4.2.
        data = ad.AnnData(X=sp.hstack([X_rna, X_atac], format="csr"), obs=obs,
                          var=pd.DataFrame(index=gene_names + region_names))
        scvi.model.MULTIVI.setup_anndata(data, batch_key="modality")
        model = scvi.model.MULTIVI(data, n_genes=X_rna.shape[1], n_regions=n_regions, **model_kwargs)

    import torch

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small network: one thread is faster, and much faster on a busy machine
    try:
        model.train(max_epochs=max_epochs, accelerator="cpu", devices=1, train_size=1.0, early_stopping=False,
                    n_epochs_kl_warmup=max(1, max_epochs // 3), enable_progress_bar=False,
                    lr=MULTIVI_LR if lr is None else lr)
        # scvi-tools >= 1.0 names it get_normalized_accessibility (before: get_accessibility_estimates).
        predict = getattr(model, "get_normalized_accessibility", None) or model.get_accessibility_estimates
        kwargs = {"return_numpy": True} if "return_numpy" in inspect.signature(predict).parameters else {}
        acc = predict(data, indices=np.arange(n_tr, len(idx)), transform_batch=PAIRED, **kwargs)
    finally:
        torch.set_num_threads(n_threads)
    acc = np.asarray(acc.toarray() if sp.issparse(acc) else getattr(acc, "values", acc), dtype=np.float64)
    if acc.shape != (len(test), n_regions):
        raise RuntimeError(f"MultiVI returned shape {acc.shape}, expected {(len(test), n_regions)}")
    bad = ~np.isfinite(acc).all(1)
    if bad.any():  # e.g. a test cell without any RNA count: nothing to infer its state from
        logger.warning("MultiVI: %d test cells without a finite prediction get the training mean", int(bad.sum()))
        acc[bad] = np.nanmean(acc[~bad], 0) if (~bad).any() else 0.0
    return acc


def scvi_latent(adata, hv: np.ndarray, batches: np.ndarray, *, seed: int, max_epochs: int) -> np.ndarray | None:
    """scVI (scvi-tools ``SCVI``, 10-d latent) trained on the counts of genes ``hv`` with ``batches``
    as covariate; the latent of every cell, or None (with a warning) when X is not counts."""
    import anndata as ad

    from cellweave.io import detect_x_kind

    X = sp.csr_matrix(adata.X[:, hv], dtype=np.float32)
    if detect_x_kind(X) != "counts":
        logger.warning("scVI needs counts; skipped (X is not counts)")
        return None
    import scvi

    scvi.settings.seed = seed
    a = ad.AnnData(X=X)
    a.obs["batch"] = batches
    scvi.model.SCVI.setup_anndata(a, batch_key="batch")
    m = scvi.model.SCVI(a, n_latent=10)
    m.train(max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False, logger=False)
    return np.asarray(m.get_latent_representation(), dtype=np.float32)
