"""Issue 12 diagnostic: tokens from each dataset's highly variable genes (``CellWeaveConfig.hvg_tokens``).

A random projection of a cell's log-normalized profile keeps much more of its type when the profile
is restricted to the dataset's 2,000 HVGs than when it holds every gene (the HVGs are what the PCA
baseline projects). This asks whether the model's embedding gains the same way when its tokens come
from those genes. On every development-panel dataset, kNN macro-F1 (k=15, stratified 5-fold, seed
0) of:

- ``PCA (HVG)``: the panel's baseline (PCA-50 of the standardized 2,000 HVGs);
- ``random projection, all genes`` / ``random projection, HVGs``: a fixed Gaussian projection (256
  dimensions, seed 0) of log1p(counts per 10k) of every gene / of the 2,000 HVGs, unscaled;
- ``pretrained`` and ``untrained`` (random weights of its architecture, seed 0), each with tokens
  from all genes (``hvg_tokens=0``) and from the ``--hvg`` most variable genes of the cells embedded
  together; the weights are the same, only the tokenizer's rule differs.

Prints one line per dataset and the means, and writes ``--out`` (JSON). About 25 minutes on one core::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/hvg_tokens.py --model M --out hvg_tokens.json
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np


def random_projection(x: np.ndarray, dim: int = 256, seed: int = 0) -> np.ndarray:
    """``x`` times a Gaussian matrix with entries of variance ``1/dim`` (Johnson-Lindenstrauss)."""
    g = np.random.default_rng(seed).standard_normal((x.shape[1], dim)).astype(np.float32) / np.sqrt(dim)
    return np.asarray(x @ g)


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="hvg_tokens.json")
    p.add_argument("--hvg", type=int, default=2000, help="hvg_tokens of the HVG rows (default: 2000)")
    p.add_argument("--skip-untrained", action="store_true",
                   help="leave out the random-weight rows (the same for every model of one config, seed 0)")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from _diagnostics import knn_f1, panel_selection, random_weights, write_means

    from cellweave.bench import pca_hvg_embedding
    from cellweave.data import hvg_features
    from cellweave.models import CellWeave

    base = CellWeave.load(args.model)
    models = {"pretrained": base}
    if not args.skip_untrained:
        models["untrained"] = random_weights(base)
    t0 = time.perf_counter()
    per_dataset = {}
    for d in panel_selection(args.datasets):
        dense = d.lognorm.toarray()
        row = {"PCA (HVG)": knn_f1(pca_hvg_embedding(d.adata, seed=0), d.labels),
               "random projection, all genes": knn_f1(random_projection(dense), d.labels),
               "random projection, HVGs": knn_f1(random_projection(dense[:, hvg_features(d.lognorm)]), d.labels)}
        for name, model in models.items():
            for label, n in (("all genes", 0), (f"{args.hvg} HVGs", args.hvg)):
                model.config = dataclasses.replace(model.config, hvg_tokens=n)  # the tokenizer's rule only
                row[f"{name}, tokens from {label}"] = knn_f1(
                    model.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0], d.labels)
        per_dataset[d.name] = row
        print(d.name, " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    command = ("benchmarks/hvg_tokens.py" + (f" --model {args.model}" if args.model else "")
               + (f" --hvg {args.hvg}" if args.hvg != 2000 else "") + (" --skip-untrained" if args.skip_untrained else ""))
    write_means(per_dataset, args.out, command=command, model=base.name, seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    main()
