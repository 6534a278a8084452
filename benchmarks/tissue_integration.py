"""Issue 12 diagnostic: do datasets of one tissue overlap in the embedding (the demo's "islands")?

The three registered human PBMC datasets with RNA counts (10x PBMC 4k, 10x PBMC 1k, the scvi-tools
CITE-seq PBMC test set), on their shared genes, embedded together: zero-shot, and adapted with
``adapt --method head`` with the dataset as the count decoder's covariate (the readout on random
weights of the architecture beside it). Two scores per embedding: dataset mixing, the mean share of
each cell's 15 nearest neighbours that come from another dataset, divided by the share expected
if the datasets were fully mixed (1 = mixed, 0 = islands); and the PBMC 4k cell types (the only
labelled set) kept apart, kNN macro-F1 (k=15, 5-fold) on PBMC 4k's cells in the joint embedding.
Beside them: PCA (50) of the log-normalized HVGs. The panel's protocol 5 (``cellweave benchmark --task
panel``) scores the same group with Harmony and scVI beside it. Writes OUT (JSON)::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/tissue_integration.py --out OUT
"""

from __future__ import annotations

import argparse
import json
import time


DATASETS = ("scrna_pbmc4k_10x_soupx", "scrna_pbmc_1k_pisces", "citeseq_pbmc_10x_scvi_tests")
LABELLED = "scrna_pbmc4k_10x_soupx"
K = 15


def main() -> None:
    import anndata as ad
    import torch

    from cellweave import datasets
    from cellweave.bench import dataset_mixing, knn_accuracy, pca_hvg_embedding
    from cellweave.models import CellWeave
    from cellweave.train import adapt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="tissue_integration.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    parts = {}
    for name in DATASETS:
        a = datasets.load(name, modality="rna") if len(datasets.REGISTRY[name].modalities) > 1 else datasets.load(name)
        a.var_names = a.var_names.astype(str)
        a.var_names_make_unique()
        parts[name] = a
    data = ad.concat(parts, join="inner", label="dataset", index_unique="-")
    dataset = data.obs["dataset"].astype(str).to_numpy()
    labelled = dataset == LABELLED
    labels = parts[LABELLED].obs[datasets.REGISTRY[LABELLED].label_key].astype(str).to_numpy()
    model = CellWeave.load()
    embs = {"cellweave (zero-shot)": model.embed(data, seed=0, progress=False)[0],
            "PCA (HVG)": pca_hvg_embedding(data, seed=0)}
    for start, name in (("pretrained", "cellweave (adapted, dataset as covariate)"),
                        ("random", "random weights + the same readout")):
        adapted = adapt(data, model=model, batch_key="dataset", start=start, seed=0, progress=False)
        embs[name] = adapted.embed(data, seed=0, progress=False)[0]
    rows = {}
    for name, emb in embs.items():
        rows[name] = {"dataset mixing": round(dataset_mixing(emb, dataset, k=K), 3),
                      "PBMC 4k kNN macro-F1": round(float(knn_accuracy(emb[labelled], labels, k=K, seed=0)["macro_f1"]), 3)}
        print(f"{name:45s} {rows[name]}", flush=True)
    with open(args.out, "w") as fh:
        json.dump({"command": "benchmarks/tissue_integration.py", "datasets": list(DATASETS),
                   "cells": {n: int((dataset == n).sum()) for n in DATASETS}, "genes": int(data.n_vars),
                   "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}, fh, indent=1)


if __name__ == "__main__":
    main()
