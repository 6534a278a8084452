"""Issue 12 diagnostic: do datasets of one tissue overlap in the embedding (the demo's "islands")?

The three registered human PBMC datasets with RNA counts (10x PBMC 4k, 10x PBMC 1k, the scvi-tools
CITE-seq PBMC test set), on their shared genes, embedded together: zero-shot, and adapted with
``adapt --method head`` with the dataset as the count decoder's covariate (the readout on random
weights of the architecture beside it). Two scores per embedding: dataset mixing, the mean share of
each cell's 15 nearest neighbours that come from another dataset, divided by the share expected
if the datasets were fully mixed (1 = mixed, 0 = islands); and the PBMC 4k cell types (the only
labelled set) kept apart, kNN macro-F1 (k=15, 5-fold) on PBMC 4k's cells in the joint embedding.
Data and scores are the panel's (``cellweave.bench.tissue_groups`` and ``tissue_scores``: PBMC 4k's
unannotated cells and types of fewer than 10 cells count for the mixing only).
Beside them: PCA (50) of the log-normalized HVGs. The panel's protocol 5 (``cellweave benchmark --task
panel``) scores the same group with Harmony and scVI beside it. Writes OUT (JSON)::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/tissue_integration.py --out OUT
"""

from __future__ import annotations

import argparse
import time


K = 15


def main() -> None:
    import numpy as np
    import torch

    from cellweave.bench import pca_hvg_embedding, tissue_groups, tissue_scores
    from cellweave.bench.tasks.panel import TISSUE_BATCH, TISSUE_GROUPS
    from cellweave.models import CellWeave
    from cellweave.train import adapt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="tissue_integration.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    t0 = time.perf_counter()
    groups = tissue_groups()  # the panel's protocol 5 data: shared genes, rare and unannotated types as ""
    if not groups:
        raise SystemExit("The PBMC datasets are not all in the mirror: set CELLWEAVE_DATA_DIR to ../shared/data.")
    d = groups[0]
    data, labels = d.adata, d.labels
    dataset = data.obs[TISSUE_BATCH].astype(str).to_numpy()
    model = CellWeave.load()
    embs = {"cellweave (zero-shot)": model.embed(data, seed=0, progress=False)[0],
            "PCA (HVG)": pca_hvg_embedding(data, seed=0)}
    for start, name in (("pretrained", "cellweave (adapted, dataset as covariate)"),
                        ("random", "random weights + the same readout")):
        adapted = adapt(data, model=model, batch_key=TISSUE_BATCH, start=start, seed=0, progress=False)
        embs[name] = adapted.embed(data, seed=0, progress=False)[0]
    rows = {}
    for name, emb in embs.items():
        scores = tissue_scores(emb, dataset, labels, k=K, seed=0)
        rows[name] = {"dataset mixing": round(float(scores["dataset mixing"]), 3),
                      "PBMC 4k kNN macro-F1": round(float(scores["labelled kNN macro-F1"]), 3)}
        print(f"{name:45s} {rows[name]}", flush=True)
    names = list(TISSUE_GROUPS[d.name])
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {"command": "benchmarks/tissue_integration.py", "datasets": names,
                                 "cells": {n: int((dataset == n).sum()) for n in names}, "genes": int(data.n_vars),
                                 "labelled cells": int((np.asarray(labels) != "").sum()),
                                 "rows": rows, "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
