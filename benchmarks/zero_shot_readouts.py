"""Issue 12 diagnostic: can a different readout of the frozen model beat its embedding zero-shot?

On every development-panel dataset, kNN macro-F1 (k=15, stratified 5-fold, seed 0) of:

0. the model's cell state alone (``pooling="cls"``: with ``profile_skip`` it holds the linear path);
1. **post-hoc transforms of the shipped embedding**, fitted on the dataset's own cells without
   labels: z-scoring each dimension; "all-but-the-top" (centre, remove the top 2 or 5 principal
   directions; Mu & Viswanath 2018, ICLR); PCA whitening, all dimensions or the top 32 (BERT-whitening,
   Su et al. 2021). They test whether a few dominant directions (depth, dataset) hide the cell type
   in an otherwise informative embedding (anisotropy);
2. **bags of the model's learned gene embeddings over all of a cell's genes**, weighted by
   log1p-normalized expression (GenePT-w, Chen & Zou 2024, uses text-derived gene embeddings;
   here the model's input feature embeddings), raw, gene-centred and gene-standardized; beside
   them a random Gaussian projection of the gene-standardized values of the same width, the
   control that says whether the learned gene embeddings carry anything a random map does not;
3. PCA (50) of log-normalized top-2,000 HVGs, the panel's baseline, on the same cells.

Prints one table and writes ``--out`` (JSON). About 6 minutes on one core::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/zero_shot_readouts.py --out readouts.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp


def _centred_svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return x, s, vt


def all_but_the_top(x: np.ndarray, d: int) -> np.ndarray:
    """Centre and remove the top ``d`` principal directions (Mu & Viswanath 2018)."""
    x, _, vt = _centred_svd(x)
    return x - (x @ vt[:d].T) @ vt[:d]


def whiten(x: np.ndarray, k: int | None = None) -> np.ndarray:
    """PCA whitening onto the top ``k`` components (all by default; Su et al. 2021)."""
    x, s, vt = _centred_svd(x)
    k = k or x.shape[1]
    return (x @ vt[:k].T) / (s[:k] / np.sqrt(len(x)) + 1e-6)


def readouts(model, d) -> dict[str, np.ndarray]:
    """Every representation scored for one panel dataset ``d``."""
    from cellweave.bench import pca_hvg_embedding
    from cellweave.data import prepare_cells

    emb = model.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0]
    reps = {
        "embedding (shipped)": emb,
        "cell state (cls pooling)": model.embed_corpus(model.prepare(d.model_input, dataset=d.name), seed=0,
                                                       progress=False, pooling="cls"),
        "z-scored": (emb - emb.mean(0)) / (emb.std(0) + 1e-6),
        "all-but-the-top 2": all_but_the_top(emb, 2),
        "all-but-the-top 5": all_but_the_top(emb, 5),
        "whitened": whiten(emb),
        "whitened, top 32": whiten(emb, 32),
    }
    corpus = prepare_cells(d.model_input, model.vocab, dataset=d.name, value_encoding="log1p")
    block = corpus.blocks[0]
    X = sp.csr_matrix(block.values, dtype=np.float32)
    E = model.module.feature_embedding.weight.detach().numpy()[block.token_ids]
    mu = np.asarray(X.mean(0)).ravel()
    sd = np.sqrt(np.maximum(np.asarray(X.multiply(X).mean(0)).ravel() - mu**2, 0)) + 1e-3
    z = (X.toarray() - mu) / sd
    reps["gene-embedding bag, log1p"] = np.asarray(X @ E) / np.maximum(np.asarray(X.sum(1)), 1e-6)
    reps["gene-embedding bag, gene-centred"] = np.asarray(X @ E) - mu @ E
    reps["gene-embedding bag, gene-standardized"] = z @ E
    reps["random projection, gene-standardized"] = z @ np.random.default_rng(0).standard_normal(E.shape)
    reps["PCA (HVG)"] = pca_hvg_embedding(d.adata, seed=0)
    return reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or shipped name (default: the shipped model)")
    p.add_argument("--out", default="zero_shot_readouts.json")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    import pandas as pd

    from _diagnostics import knn_f1, panel_selection

    from cellweave.models import CellWeave

    model = CellWeave.load(args.model)
    results: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for d in panel_selection():
        results[d.name] = {k: knn_f1(v, d.labels) for k, v in readouts(model, d).items()}
        print(f"[{time.perf_counter() - t0:5.0f} s] {d.name}", flush=True)
    table = pd.DataFrame(results).T
    table.loc["mean"] = table.mean().round(3)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.T.to_string())
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {
        "command": "benchmarks/zero_shot_readouts.py" + (f" --model {args.model}" if args.model else ""),
        "model": model.name, "metric": "kNN macro-F1 (k=15, 5-fold, seed 0)", "results": results,
        "mean": table.loc["mean"].to_dict(), "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
