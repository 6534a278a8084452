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
statistics come from the dataset's own cells (transductive, as PCA's centring is).
``--corpus-means`` adds ``value - corpus mean``: the gene means taken instead over the shipped
model's pretraining datasets (``cellweave.data.feature_means``, up to 4,000 cells each), the
statistic a model could save and carry to new data::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/token_selection.py --out sel.json
"""

from __future__ import annotations

import argparse

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


def corpus_means(model, max_cells: int = 4000) -> np.ndarray:
    """Per vocabulary id, the mean log1p RNA value over ``model``'s pretraining datasets (the
    mean of the per-dataset means, weighted by the cells sampled; 0 where none measures it)."""
    from cellweave import datasets as registry
    from cellweave.data import feature_means, prepare_cells

    total, cells = np.zeros(len(model.vocab)), np.zeros(len(model.vocab))
    for entry in model.card["data"]:
        corpus = prepare_cells(registry.load(entry["name"]), model.vocab, dataset=entry["name"], value_encoding="log1p")
        for block in (b for b in corpus.blocks if b.modality == "rna"):
            n = min(int(np.count_nonzero(block.present)), max_cells)
            np.add.at(total, block.token_ids, n * feature_means(block, max_cells=max_cells))
            np.add.at(cells, block.token_ids, n)
    return np.where(cells > 0, total / np.maximum(cells, 1), 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--corpus-means", action="store_true",
                   help="also rank by value minus each gene's mean over the shipped model's pretraining datasets")
    p.add_argument("--out", default="token_selection.json")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    from _diagnostics import knn_f1, panel_selection

    from cellweave.bench import pca_hvg_embedding
    from cellweave.data import prepare_cells
    from cellweave.models import CellWeave

    shipped = CellWeave.load(None)
    vocab = shipped.vocab
    corpus_mean = corpus_means(shipped) if args.corpus_means else None
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
        if corpus_mean is not None:
            rna = next(b for b in corpus.blocks if b.modality == "rna")
            res["value - corpus mean"] = f1(pca(top_k(x, x - corpus_mean[rna.token_ids][None, :], args.k)))
        print(d.name, res, flush=True)
        results[d.name] = res
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {"command": "benchmarks/token_selection.py", "k": args.k,
                                 "metric": "kNN macro-F1 (k=15, 5-fold, seed 0) of PCA-50 of the selected log1p values",
                                 "results": results})


if __name__ == "__main__":
    main()
