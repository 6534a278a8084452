"""``cellweave demo``: embed every available registered dataset with the shipped (or a fresh) model and report.

Available means in the data mirror (``$CELLWEAVE_DATA_DIR``) or the cache; the datasets tagged
``demo`` in the registry are downloaded and converted from their pinned sources when neither has
them, so the demo runs anywhere with a network for the first run.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellweave import datasets as cw_datasets
from cellweave import pl
from cellweave._exceptions import CellWeaveInputError
from cellweave._system import peak_rss_mb
from cellweave._io_utils import atomic_write_json, sha256_file
from cellweave.bench import (
    BenchmarkContext,
    HtmlReport,
    available_tasks,
    knn_accuracy,
    pca_hvg_embedding,
    run_tasks,
    summarize,
    tissue_groups,
    tissue_scores,
    umap_coordinates,
    write_results,
)
from cellweave.models import DEFAULT_GENE_MODEL, CellWeave

logger = logging.getLogger(__name__)

#: Demo defaults for ``--from-scratch`` on a 2-core CPU (about 7 minutes of training).
SCRATCH_EPOCHS = 3
SCRATCH_MAX_CELLS = 3000
#: Cells per dataset shown in the joint UMAP (the 20k-cell screen would crowd out the rest).
UMAP_MAX_CELLS = 2500
#: Cells embedded per dataset (a seeded random subset above it: the perturbation screen, the 422k-cell protein set).
DEMO_MAX_CELLS = 8_000
#: Neighbours of the tissue section's mixing score and kNN macro-F1 (the panel's protocol 5).
TISSUE_NEIGHBORS = 15


def demo_datasets() -> pd.DataFrame:
    """Registry rows the demo uses: every dataset available locally, plus those tagged ``demo``
    (fetched when missing)."""
    table = cw_datasets.list()
    return table[table["path"].notna() | table["tasks"].map(lambda t: "demo" in t)]



def _labels_of(data: Any, label_key: str | None) -> np.ndarray | None:
    if not label_key or label_key not in data.obs:
        return None
    return data.obs[label_key].astype(str).to_numpy()


def _rna_view(data: Any):
    """The RNA AnnData of a dataset for the PCA baseline (the only modality of a protein-only set)."""
    from cellweave.io import rna_modality

    try:
        return rna_modality(data, purpose="the PCA baseline")
    except CellWeaveInputError:  # a protein-only set: its one modality
        return next(iter(data.mod.values()))


def _subsample(data: Any, max_cells: int, seed: int) -> Any:
    if data.n_obs <= max_cells:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(data.n_obs, max_cells, replace=False))
    logger.info("Embedding a random %d of %d cells", max_cells, data.n_obs)
    return data[keep].copy()


def tissue_overlap(
    data: Any,
    labels: np.ndarray,
    *,
    model: CellWeave,
    batch_key: str = "dataset",
    adapt: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Do datasets of one tissue overlap by cell type? The demo's answer for one group of datasets.

    ``data`` holds the datasets' RNA counts on their shared genes, the dataset in ``obs[batch_key]``;
    ``labels`` their cell types (``""`` for cells without one: counted in the mixing, not in the F1).
    Each representation gets the share of each cell's 15 neighbours from another dataset over its
    expectation (:func:`cellweave.bench.dataset_mixing`, 1 = mixed, 0 = islands) and the labelled
    cells' kNN macro-F1, the two scores of the panel's protocol 5 (``benchmark --task panel``).
    Representations: PCA of the HVGs and Harmony on it (baselines), the model zero-shot, with and
    without Harmony, and with ``adapt`` the model adapted to these cells without labels
    (:func:`cellweave.train.adapt`, its default count-likelihood readout with the dataset as the
    decoder's covariate), with and without Harmony.

    Returns the table (one row per representation, with the adaptation's seconds) and the embeddings.
    """
    from cellweave.tl import harmony, integrate_embedding

    labels = np.asarray(labels, dtype=object)
    if labels.shape != (data.n_obs,):
        raise CellWeaveInputError(f"tissue_overlap: {labels.shape[0]} labels for {data.n_obs} cells; give one per "
                                  "cell (\"\" for cells without a type).")
    if batch_key not in data.obs:
        raise CellWeaveInputError(f"tissue_overlap: obs has no {batch_key!r} column; name the column that holds each "
                                  "cell's dataset with batch_key=.")
    batches = data.obs[batch_key].astype(str).to_numpy()
    pcs = pca_hvg_embedding(data, seed=seed)
    reps = {"PCA (HVG)": pcs, "Harmony on PCA": harmony(pcs, batches, seed=seed)}
    zero_shot, _ = model.embed(data, seed=seed, progress=progress)
    reps["cellweave zero-shot"] = zero_shot
    reps["cellweave zero-shot + Harmony"] = integrate_embedding(zero_shot, batches, method="harmony", seed=seed)
    seconds = {}
    if adapt:
        from cellweave.train import adapt as adapt_model

        t = time.perf_counter()
        adapted = adapt_model(data, model=model, batch_key=batch_key, seed=seed, progress=progress)
        emb, _ = adapted.embed(data, seed=seed, progress=progress)
        seconds["cellweave adapted"] = time.perf_counter() - t
        reps["cellweave adapted"] = emb
        reps["cellweave adapted + Harmony"] = integrate_embedding(emb, batches, method="harmony", seed=seed)
    rows = []
    for name, rep in reps.items():
        scores = tissue_scores(rep, batches, labels, k=TISSUE_NEIGHBORS, seed=seed)
        rows.append({"representation": name, "dataset mixing": scores["dataset mixing"],
                     "labelled kNN macro-F1": scores["labelled kNN macro-F1"],
                     "seconds to adapt": seconds.get(name, float("nan"))})
    return pd.DataFrame(rows), reps


def _tissue_section(report: HtmlReport, model: CellWeave, *, adapt: bool, seed: int, progress: bool) -> list[dict]:
    """The report's answer to "do datasets of one tissue overlap by cell type?" for each available tissue group."""
    import anndata as ad

    report.heading("Datasets of one tissue: do they overlap by cell type?")
    groups = tissue_groups()
    if not groups:
        report.text("No tissue group has all its datasets in the mirror or the cache.", css_class="note")
        return []
    out = []
    for g in groups:
        table, reps = tissue_overlap(g.adata, g.labels, model=model, batch_key=g.batch_key, adapt=adapt, seed=seed,
                                     progress=progress)
        datasets = g.adata.obs[g.batch_key].astype(str).to_numpy()
        report.text(
            f"{g.name}: {g.adata.n_obs:,} cells on their {g.adata.n_vars:,} shared genes, embedded together; "
            f"{int((g.labels != '').sum()):,} cells with a cell type. Dataset mixing: the share of each cell's "
            f"{TISSUE_NEIGHBORS} nearest neighbours from another dataset over its expectation (1 = mixed, 0 = "
            "islands); kNN macro-F1 of the labelled cells (5-fold). Adapted = `cellweave adapt` on these cells "
            "without labels, the dataset as the count decoder's covariate; Harmony with the dataset as the batch. "
            "The same group is the panel's protocol 5 (`cellweave benchmark --task panel`).", css_class="note")
        report.table(table)
        shown = [n for n in ("cellweave zero-shot", "cellweave adapted + Harmony") if n in reps]
        for name in shown:
            a = ad.AnnData(obs=pd.DataFrame({"dataset": datasets,
                                             "cell_type": np.where(g.labels == "", "unlabelled", g.labels)},
                                            index=g.adata.obs_names))
            a.obsm["X_umap"] = umap_coordinates(reps[name], seed=seed)
            report.figure(pl.umap(a, color=["dataset", "cell_type"],
                                  title=[f"{name}: dataset", f"{name}: cell type"]))
        out.append({"group": g.name, "cells": int(g.adata.n_obs),
                    "table": table.replace({np.nan: None}).to_dict(orient="records")})
    return out


def pretrain_on_bundled(
    out: str | os.PathLike,
    *,
    max_epochs: int = SCRATCH_EPOCHS,
    max_cells_per_dataset: int | None = SCRATCH_MAX_CELLS,
    seed: int = 0,
    name: str = "cellweave-tiny",
    command: str | None = None,
    progress: bool = True,
) -> CellWeave:
    """Pretrain the ``tiny`` preset on every available registered dataset of the pretraining corpus."""
    from cellweave.train import pretrain

    table = demo_datasets()
    names = table.loc[table["pretrain"], "name"].tolist()
    data = {n: cw_datasets.load(n) for n in names}
    hashes = {n: sha256_file(cw_datasets.path(n)) for n in names}
    return pretrain(
        data, out=out, preset="tiny", max_epochs=max_epochs, max_cells_per_dataset=max_cells_per_dataset,
        seed=seed, name=name, command=command, data_hashes=hashes, progress=progress,
    )


def run_demo(
    out: str | os.PathLike = "demo_out",
    *,
    model: str | None = None,
    from_scratch: bool = False,
    max_epochs: int | None = None,
    max_cells_per_dataset: int | None = None,
    seed: int = 0,
    progress: bool = True,
    benchmark: bool = True,
    adapt: bool = True,
) -> dict[str, Any]:
    """Run the demo and write ``out/report.html``, ``out/metrics.json`` and ``out/embeddings.h5ad``.

    With ``adapt`` the section on datasets of one tissue also adapts the model to them (7-13
    minutes on 2 shared cores for the 3,570 PBMC cells); ``benchmark=False`` skips the quick
    benchmark sections. Returns the metrics written to ``metrics.json``.
    """
    import anndata as ad

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    t = time.perf_counter()
    if from_scratch:
        cw_model = pretrain_on_bundled(
            out / "model",
            max_epochs=max_epochs or SCRATCH_EPOCHS,
            max_cells_per_dataset=max_cells_per_dataset or SCRATCH_MAX_CELLS,
            seed=seed,
            name="cellweave-tiny-demo",
            command="cellweave demo --from-scratch",
            progress=progress,
        )
        timings["pretrain"] = time.perf_counter() - t
    else:
        cw_model = CellWeave.load(model)
        timings["load model"] = time.perf_counter() - t
    logger.info("Model: %r", cw_model)

    table = demo_datasets()
    missing = sorted(set(cw_datasets.REGISTRY) - set(table["name"]))
    if missing:
        logger.warning("%d registered datasets are not available locally and are left out: %s. Set "
                       "CELLWEAVE_DATA_DIR to a data mirror to include them.", len(missing), ", ".join(missing))
    embeddings, coverage_rows, knn_rows = [], [], []
    skipped = [{"dataset": n, "reason": "not in the mirror or the cache"} for n in missing]
    t_embed = 0.0
    n_embedded = 0
    for row in table.itertuples():
        data = _subsample(cw_datasets.load(row.name), DEMO_MAX_CELLS, seed)
        t = time.perf_counter()
        try:
            emb, cov = cw_model.embed(data, seed=seed, progress=progress, dataset=row.name)
        except CellWeaveInputError as err:
            skipped.append({"dataset": row.name, "reason": str(err)})
            logger.warning("Skipped %s: %s", row.name, err)
            continue
        t_embed += time.perf_counter() - t
        n_embedded += emb.shape[0]
        for c in cov:
            coverage_rows.append({
                "dataset": row.name, "modality": c["modality"], "input": c.get("x_kind"),
                "organism": c.get("organism"), "features": c["n_features"], "mapped to an ID": c["n_mapped"],
                "in vocabulary": c["n_in_vocab"], "coverage": c["fraction_in_vocab"],
                "generated codes": c.get("n_generated", 0),
            })
        labels = _labels_of(data, row.label_key)
        if labels is not None and row.label_key != "perturbation":
            res = {"dataset": row.name, "label": row.label_key, "cells": len(labels), "types": len(set(labels))}
            cw = knn_accuracy(emb, labels, seed=seed)
            res.update({"cellweave accuracy": cw["accuracy"], "cellweave ±": cw["accuracy_std"],
                        "cellweave macro-F1": cw["macro_f1"]})
            # Ablation: the two halves of the default "cls+bag" embedding on their own, on the
            # demo's own datasets (two more embeddings each; the full panel is `benchmark --task panel`).
            pooling = cw_model.config.pooling
            for part in ("cls", "bag") if "demo" in row.tasks else ():
                cw_model.config.pooling = part
                try:
                    part_emb, _ = cw_model.embed(data, seed=seed, progress=False, dataset=row.name)
                finally:
                    cw_model.config.pooling = pooling
                res[f"{part} only accuracy"] = knn_accuracy(part_emb, labels, seed=seed)["accuracy"]
            rna = _rna_view(data)
            pca = pca_hvg_embedding(rna, seed=seed)
            base = knn_accuracy(pca, labels, seed=seed)
            res.update({"PCA-HVG accuracy": base["accuracy"], "PCA-HVG ±": base["accuracy_std"],
                        "PCA-HVG macro-F1": base["macro_f1"]})
            knn_rows.append(res)
        keep = np.arange(emb.shape[0])
        if emb.shape[0] > UMAP_MAX_CELLS:
            keep = np.sort(np.random.default_rng(seed).choice(emb.shape[0], UMAP_MAX_CELLS, replace=False))
        # Colour by cell-type-like labels only (perturbation targets are not cell types); labels
        # other than cell_type say what they are ("zone=3").
        if labels is None or row.label_key == "perturbation":
            shown = np.full(keep.size, "unlabelled", dtype=object)
        elif row.label_key == "cell_type":
            shown = labels[keep]
        else:
            shown = np.array([f"{row.label_key}={v}" for v in labels[keep]], dtype=object)
        obs = pd.DataFrame({"dataset": row.name, "cell_type": shown},
                           index=[f"{row.name}:{o}" for o in np.asarray(data.obs_names)[keep]])
        embeddings.append(ad.AnnData(X=emb[keep], obs=obs))
    timings["embed all datasets"] = t_embed

    t = time.perf_counter()
    joint = ad.concat(embeddings)
    joint.obsm["X_cellweave"] = joint.X
    joint.obsm["X_umap"] = umap_coordinates(joint.obsm["X_cellweave"], seed=seed)
    timings["UMAP"] = time.perf_counter() - t
    joint.obs["cell_type"] = joint.obs["cell_type"].astype(str)
    joint.obs["dataset"] = joint.obs["dataset"].astype(str)

    coverage_df = pd.DataFrame(coverage_rows)
    knn_df = pd.DataFrame(knn_rows)
    total = time.perf_counter() - t_start
    metrics = {
        "model": cw_model.name,
        "model_sha256": cw_model.model_hash,
        "from_scratch": from_scratch,
        "seed": seed,
        "wall_seconds": round(total, 1),
        "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cells_embedded": n_embedded,
        "embedding_cells_per_second": round(n_embedded / max(t_embed, 1e-9), 1),
        "coverage": coverage_rows,
        "knn_label_transfer": knn_rows,
        "skipped": skipped,
        "pretraining": cw_model.card.get("metrics", {}),
    }

    report = HtmlReport("cellweave demo")
    report.text(
        f"Model {cw_model.name} ({'pretrained here from scratch' if from_scratch else 'shipped default'}); "
        f"{cw_model!r}. Model SHA-256 {cw_model.model_hash[:16]}…"
    )
    report.heading("Cell embeddings (UMAP of X_cellweave, every available registered dataset)")
    report.text(f"{joint.n_obs:,} cells shown (at most {UMAP_MAX_CELLS:,} per dataset).", css_class="note")
    report.figure(pl.umap(joint, color="dataset", title="coloured by dataset", max_legend=60))
    # One panel and one legend per labelled dataset: the datasets' labels are unrelated vocabularies
    # (cell types, zones), and a shared legend would give them shared or grey colours.
    labelled = (joint.obs["cell_type"] != "unlabelled").to_numpy()
    if labelled.any():
        report.text("Each labelled dataset's cells in the same UMAP, coloured by its own labels (one legend per "
                    "dataset; perturbation targets are not cell types and are left out).", css_class="note")
        report.figure(pl.umap(joint[labelled], color="cell_type", split_by="dataset"))

    t = time.perf_counter()
    metrics["tissue_overlap"] = _tissue_section(report, cw_model, adapt=adapt, seed=seed, progress=progress)
    timings["datasets of one tissue"] = time.perf_counter() - t
    metrics["timings_seconds"]["datasets of one tissue"] = round(timings["datasets of one tissue"], 1)
    metrics["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)

    report.heading("Cell-type label transfer: kNN (k=15, 5-fold by cells)")
    report.text(
        "cellweave = X_cellweave from the model, zero-shot (pooling: CLS state and value-weighted mean of input "
        "feature embeddings, side by side; 'cls only' and 'bag only' are its two halves alone, on the demo's "
        "own datasets). Baseline = PCA "
        "(50 components) on log-normalized highly variable genes of the same cells. Mean over folds; ± = "
        "standard deviation.",
        css_class="note",
    )
    if not knn_df.empty:
        report.table(knn_df)

    report.heading("Pretraining")
    m = cw_model.card.get("metrics", {})
    if m:
        rows = [
            ("model, before training (epoch 0)", m.get("val_masked_mse_epoch0")),
            ("model, after training", m.get("val_masked_mse")),
            ("per-feature mean over training cells", m.get("val_feature_mean_mse")),
            ("per-feature mean over training tokens", m.get("val_token_mean_mse")),
        ]
        report.text("Masked-value MSE on held-out validation cells (log1p counts per 10k):", css_class="note")
        report.table(pd.DataFrame(rows, columns=["predictor", "validation MSE"]))
    if cw_model.history:
        report.figure(pl.training(cw_model))
    card = cw_model.card
    report.text(f"Command: {card.get('command', 'n/a')}; seed {card.get('seed', 'n/a')}; "
                f"{card.get('epochs', '?')} epochs, {card.get('train_seconds', '?')} s.", css_class="note")

    report.heading("Vocabulary coverage per dataset")
    report.table(coverage_df)
    if cw_model.generates_codes:
        report.text("Generated codes: features outside the model's vocabulary that still entered its input, "
                    "each with a fixed random code seeded by its gene key (the model's own gene codes are fixed "
                    "random codes too; CellWeave.generates_codes).", css_class="note")
    if skipped:
        report.heading("Datasets not embedded")
        report.table(pd.DataFrame(skipped))

    # Every benchmark task in quick mode (one seed, fewer folds/datasets): the same code and
    # record shape as `cellweave benchmark`, which runs the full protocol over 3 seeds.
    tasks = available_tasks() if benchmark else []
    if tasks:
        # Without a model given, the gene-level tasks use the shipped gene model, as the tl functions do.
        gene_model = CellWeave.load(DEFAULT_GENE_MODEL) if model is None and not from_scratch else cw_model
        ctx = BenchmarkContext(model=cw_model, gene_model=gene_model, seeds=(seed,), quick=True, out=out,
                               progress=progress)
        bench_records, bench_seconds = run_tasks(ctx, tasks, report)
        write_results(bench_records, out / "results.json")
        metrics["benchmark_quick"] = summarize(bench_records).replace({np.nan: None}).to_dict(orient="records")
        for name, sec in bench_seconds.items():
            metrics["timings_seconds"][f"benchmark: {name}"] = round(sec, 1)
        total = time.perf_counter() - t_start
        metrics["wall_seconds"] = round(total, 1)
        metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)

    report.heading("Time and memory")
    time_rows = [(k, v) for k, v in metrics["timings_seconds"].items()] + [
        ("total wall time (s)", metrics["wall_seconds"]),
        ("peak resident memory (MB)", metrics["peak_rss_mb"]),
        ("embedding throughput (cells/s)", metrics["embedding_cells_per_second"]),
    ]
    report.table(pd.DataFrame(time_rows, columns=["step", "value"]), float_format="{:.1f}")
    report.text(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores.", css_class="note")

    report.write(out / "report.html")
    atomic_write_json(out / "metrics.json", metrics)
    from cellweave.io import write

    write(joint, out / "embeddings.h5ad")
    logger.info("Demo finished in %.0f s; report at %s", metrics["wall_seconds"], out / "report.html")
    return metrics
