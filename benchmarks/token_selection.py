"""Issue 12 diagnostic: which genes should a cell's tokens be?

The model reads each cell's top ``k`` (256) genes by value. On the panel datasets named, kNN
macro-F1 (k=15, 5-fold, seed 0) of PCA-50 of log1p counts per 10k (the ``log1p`` value
encoding) restricted, per cell, to the ``k`` genes chosen by:

- ``value``: the highest values (today's tokenizer);
- ``value / gene nonzero median``: Geneformer's normalization (Theodoris et al. 2023, which
  divides by each gene's nonzero median over its corpus; here the dataset's own cells);
- ``value - gene mean``: how far above its mean over the dataset's cells a gene is in this cell;
- ``expm1 ratio to nonzero median``: Geneformer's ratio on the count scale;

beside every measured gene and PCA-50 of log-normalized HVGs (the panel's baseline). The gene
statistics come from the dataset's own cells (transductive, as PCA's centring is)::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/token_selection.py --out sel.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

DEFAULT_DATASETS = ("scrna_mouse_ca1_zeisel2015_descend", "scrna_mouse_pancreas_endocrinogenesis_veloviz",
                    "scrna_pancreas_baron2016_human_mouse_cider", "scrna_pbmc4k_10x_soupx")


def top_k(x: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """``x`` with, per row, only the ``k`` measured entries of highest ``score`` kept."""
    k = min(k, x.shape[1] - 1)
    idx = np.argpartition(-np.where(x > 0, score, -np.inf), k, axis=1)[:, :k]
    out = np.zeros_like(x)
    rows = np.arange(len(x))[:, None]
    out[rows, idx] = x[rows, idx]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--out", default="token_selection.json")
    args = p.parse_args()

    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    from _diagnostics import knn_f1, panel_selection

    from cellweave.bench import pca_hvg_embedding
    from cellweave.data import prepare_cells
    from cellweave.models import CellWeave

    vocab = CellWeave.load(None).vocab
    results: dict[str, dict[str, float]] = {}
    for d in panel_selection(args.datasets):

        def f1(z: np.ndarray) -> float:
            return knn_f1(z, d.labels)

        def pca(x: np.ndarray) -> np.ndarray:
            return PCA(50, random_state=0).fit_transform(x)

        corpus = prepare_cells(d.model_input, vocab, value_encoding="log1p")
        x = sp.csr_matrix(next(b for b in corpus.blocks if b.modality == "rna").values, dtype=np.float32).toarray()
        median = np.nan_to_num(np.nanmedian(np.where(x > 0, x, np.nan), axis=0), nan=1.0)
        res = {
            "PCA (HVG)": f1(pca_hvg_embedding(d.adata, seed=0)),
            "every measured gene": f1(pca(x)),
            "value": f1(pca(top_k(x, x, args.k))),
            "value / gene nonzero median": f1(pca(top_k(x, x / median, args.k))),
            "value - gene mean": f1(pca(top_k(x, x - x.mean(0), args.k))),
            "expm1 ratio to nonzero median": f1(pca(top_k(x, np.expm1(x) / np.expm1(median), args.k))),
        }
        print(d.name, res, flush=True)
        results[d.name] = res
    with open(args.out, "w") as fh:
        json.dump({"command": "benchmarks/token_selection.py", "k": args.k,
                   "metric": "kNN macro-F1 (k=15, 5-fold, seed 0) of PCA-50 of the selected log1p values",
                   "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
