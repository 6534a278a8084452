"""Benchmark task ``integrate``: batch integration scored with the scIB metrics (scib-metrics)."""

from __future__ import annotations

import logging

import numpy as np

from cellweave.bench._results import CELLWEAVE, Record, make_records

from cellweave.data import hvg_features

from ._cells import load_cell_tasks, scib_scores
from ._scvi_baselines import scvi_latent

logger = logging.getLogger(__name__)

TASK = "integrate"
DESCRIPTION = (
    "Batch integration on all cells of each dataset with batches and labels, scored by scib-metrics' "
    "Benchmarker (unscaled scores; labels used only for scoring). Methods: 'HVG+PCA' = 50 PCs of log-normalized "
    "top-2000 HVGs (unintegrated, also the pre-integration reference for PCR comparison); 'Harmony' = harmonypy "
    "on those PCs; 'scVI' = scvi-tools SCVI (10-d latent, counts of the HVGs, batch as covariate); 'cellweave' = "
    "the frozen embedding; 'cellweave (harmony)' = tl.integrate default (Harmony on PCs of the standardized "
    "embedding); 'cellweave (adversarial)' = tl.integrate method='adversarial' (batch-conditional autoencoder "
    "with a gradient-reversal discriminator on the embedding). scIB total = 0.6 bio conservation + 0.4 batch "
    "correction."
)
SCVI_EPOCHS = 200
SCVI_EPOCHS_QUICK = 20


def run(ctx, report) -> list[Record]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from cellweave.tl import harmony, integrate_embedding

    records: list[Record] = []
    umaps = []
    for d in load_cell_tasks(ctx, need_batch=True):
        if not d.batch_key:
            continue
        batches = d.adata.obs[d.batch_key].astype(str).to_numpy()
        hv = hvg_features(d.lognorm)
        z = StandardScaler().fit_transform(d.lognorm[:, hv].toarray())
        for seed in ctx.seeds:
            emb = ctx.embedding(d.name, d.adata, seed=seed)
            pcs = PCA(n_components=min(50, z.shape[1] - 1), random_state=seed).fit_transform(z).astype(np.float32)
            reps = {"HVG+PCA": pcs, "Harmony": harmony(pcs, batches, seed=seed)}
            latent = scvi_latent(d.adata, hv, batches, seed=seed, max_epochs=SCVI_EPOCHS_QUICK if ctx.quick else SCVI_EPOCHS)
            if latent is not None:
                reps["scVI"] = latent
            reps[CELLWEAVE] = emb
            reps["cellweave (harmony)"] = integrate_embedding(emb, batches, method="harmony", seed=seed)
            if not ctx.quick:
                reps["cellweave (adversarial)"] = integrate_embedding(emb, batches, method="adversarial",
                                                                      max_epochs=100, seed=seed)
            # Quick mode (the demo) leaves out kBET, the slowest metric.
            for method, metrics in scib_scores(batches, d.labels, reps, kbet=not ctx.quick).items():
                records += make_records(TASK, d.short, f"all cells, batch={d.batch_key}", seed, method, metrics)
            if seed == ctx.seeds[0]:
                # Quick mode (the demo) leaves out only the unintegrated PCs and the adversarial
                # variant; Harmony, the baseline to beat, is always shown.
                shown = ("Harmony", "scVI", "cellweave", "cellweave (harmony)")
                umaps.append((d, {k: v for k, v in reps.items() if not ctx.quick or k in shown}))
            logger.info("integrate: %s seed %d done", d.short, seed)
    _plots(report, umaps, seed=ctx.seeds[0])
    return records


def _plots(report, umaps, *, seed: int) -> None:
    import matplotlib.pyplot as plt

    from cellweave.bench import umap_coordinates
    from cellweave.pl import embedding_scatter

    for d, reps in umaps:
        names = list(reps)
        fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 7))
        batches = d.adata.obs[d.batch_key].astype(str).to_numpy()
        for j, name in enumerate(names):
            xy = umap_coordinates(np.asarray(reps[name], dtype=np.float32), seed=seed)
            embedding_scatter(xy, d.labels, title=f"{name}\n{d.label_key}", ax=axes[0, j], max_legend=25 if j == len(names) - 1 else 0)
            embedding_scatter(xy, batches, title=f"{name}\n{d.batch_key}", ax=axes[1, j], max_legend=25 if j == len(names) - 1 else 0)
        fig.tight_layout()
        report.heading(f"{d.short}: UMAPs side by side (top: {d.label_key}, bottom: {d.batch_key}; first seed)", level=3)
        report.figure(fig)
