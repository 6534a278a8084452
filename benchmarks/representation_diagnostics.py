"""Where the cell embedding loses information: input ceilings, untrained control, pretrained vs scratch.

For each panel dataset named (default: four small ones), kNN macro-F1 (k=15, 5-fold, seed 0) of:

1. **input ceilings**: 50-d truncated SVD of the model's own tokenization (each cell's top genes,
   as many as its RNA context, valued as its config says), and of log1p-normalized values restricted to each cell's top 256 / 512
   genes or all genes: what any encoder of that input could at most keep, linearly;
2. **embeddings**: the shipped model or ``--model`` (pooled as configured, and the CLS state alone) beside the same
   architecture with random weights and no training;
3. **adaptation** (unless ``--no-adapt``): ``cellweave.train.adapt`` for ``--steps`` steps from the
   shipped weights and from random weights (the same budget), each then embedded.
   Rows named "model" are the shipped model or ``--model``.

Prints one table and writes ``--out`` (JSON). Run from the repository root with the data mirror::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/representation_diagnostics.py --out diag.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

DEFAULT_DATASETS = ("scrna_mouse_ca1_zeisel2015_descend", "scrna_mouse_pancreas_endocrinogenesis_veloviz",
                    "scrna_pancreas_baron2016_human_mouse_cider", "scrna_pbmc4k_10x_soupx")


def _top_k(X: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's ``k`` largest values (ties at the cut-off kept), the rest set to zero."""
    X = X.tocsr().copy()
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        if e - s > k:
            v = X.data[s:e]
            v[v < np.partition(v, -k)[-k]] = 0
    X.eliminate_zeros()
    return X


def _tokenized(model, corpus) -> sp.csr_matrix:
    """Cells x vocabulary matrix of exactly the tokens and values the model reads at embedding time."""
    from cellweave.data import TokenDataset

    ds = TokenDataset([corpus], model.tokenizer, mode="embed", seed=0)
    rows, cols, vals = [], [], []
    for i in range(len(ds)):
        item = ds[i]
        rows.append(np.full(item["token_ids"].size, i))
        cols.append(item["token_ids"])
        vals.append(item["values"])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(ds), len(model.vocab)))


def diagnose(name: str, *, steps: int, adapt_too: bool, model_path: str | None = None) -> dict[str, float]:
    import torch
    from sklearn.decomposition import TruncatedSVD

    from cellweave import CellWeave
    from cellweave.bench import knn_accuracy
    from cellweave.bench.tasks.panel import panel_datasets
    from cellweave.nn import CellWeaveModule
    from cellweave.train import adapt

    (d,) = [d for d in panel_datasets() if d.name == name]

    def f1(x: np.ndarray) -> float:
        return round(knn_accuracy(x, d.labels, seed=0)["macro_f1"], 3)

    def svd(x) -> np.ndarray:
        return TruncatedSVD(50, random_state=0).fit_transform(x)

    shipped = CellWeave.load(model_path)
    corpus = shipped.prepare(d.model_input, dataset=name)
    out: dict[str, float] = {"cells": d.adata.n_obs, "types": len(set(d.labels))}
    cfg = shipped.config
    out[f"input: model tokens (top {cfg.context_length['rna']}, {cfg.value_encoding})"] = f1(svd(_tokenized(shipped, corpus)))
    for k in (256, 512):
        out[f"input: log1p top {k}"] = f1(svd(_top_k(d.lognorm, k)))
    out["input: log1p all genes"] = f1(svd(d.lognorm))
    torch.manual_seed(0)
    untrained = CellWeave(shipped.config, shipped.vocab, module=CellWeaveModule(shipped.config).eval())
    for label, model in (("model", shipped), ("untrained", untrained)):
        out[f"{label}: pooled"] = f1(model.embed_corpus(corpus, progress=False))
        out[f"{label}: CLS"] = f1(model.embed_corpus(corpus, progress=False, pooling="cls"))
    if adapt_too:
        for label, scratch in (("adapted from the model", False), ("adapted from random", True)):
            t0 = time.perf_counter()
            model = adapt(d.model_input, model=shipped, batch_key=d.batch_key or d.shift_key, from_scratch=scratch,
                          max_steps=steps, seed=0, progress=False)
            out[f"{label}: pooled"] = f1(model.embed(d.model_input, progress=False, dataset=name)[0])
            out[f"{label}: seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    p.add_argument("--steps", type=int, default=60, help="adaptation steps (both starts)")
    p.add_argument("--no-adapt", action="store_true", help="skip the adaptation rows (minutes per dataset)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--out", default="representation_diagnostics.json")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    results: dict[str, dict[str, float]] = {}
    from cellweave._io_utils import atomic_write_json

    for name in args.datasets:  # written after every dataset, so a long run stopped early keeps what it measured
        results[name] = diagnose(name, steps=args.steps, adapt_too=not args.no_adapt, model_path=args.model)
        atomic_write_json(args.out, {"model": args.model or "shipped", "steps": args.steps, "results": results})
    print(pd.DataFrame(results).to_string())


if __name__ == "__main__":
    main()
