"""How far does a corpus-level linear projection carry to a dataset it never saw?

The zero-shot protocol of the panel compares cellweave's embedding of a dataset it never saw with
PCA fitted on that dataset itself. This diagnostic asks what a *linear* pretrained encoder could
reach in the same protocol: for each panel dataset D, a truncated SVD (k components) is fitted on
the log1p-normalized cells (over the shipped model's vocabulary) of every other dataset of the
pretraining corpus and the panel (at most ``--max-cells`` per dataset), and D's cells are projected on it.
This is latent-semantic-analysis style gene embeddings learned from the corpus (an SVD of the cells
x genes matrix), i.e. the best linear "bag of gene embeddings" pooling (GenePT-w, Chen & Zou 2024)
can do with embeddings learned from co-expression. Beside it, on D's cells (kNN macro-F1, k=15, 5-fold, seed 0):

- ``corpus SVD k`` (and its first 50 components; and standardized per dataset);
- ``random projection k``: a Gaussian matrix (what an untrained "bag" pooling computes);
- ``own SVD 50``: truncated SVD fitted on D itself (transductive, as the panel's PCA baseline).

Prints a table and writes ``--out`` (JSON). From the repository root with the data mirror::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/linear_transfer.py --out linear_transfer.json
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import scipy.sparse as sp


def vocab_matrix(corpus, n_vocab: int) -> sp.csr_matrix:
    """Cells x vocabulary matrix of a corpus's values (every modality in its own vocabulary columns)."""
    out = sp.csr_matrix((len(corpus), n_vocab), dtype=np.float32)
    for b in corpus.blocks:
        ids = np.asarray(b.token_ids)
        P = sp.csr_matrix((np.ones(len(ids), np.float32), (np.arange(len(ids)), ids)), shape=(len(ids), n_vocab))
        out = out + sp.csr_matrix(b.values) @ P
    return out.tocsr()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=128, help="components of the corpus SVD and the random projection")
    p.add_argument("--max-cells", type=int, default=2000, help="cells per dataset in the corpus SVD")
    p.add_argument("--out", default="linear_transfer.json")
    args = p.parse_args(argv)
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    logging.basicConfig(level=logging.WARNING)

    from sklearn.decomposition import TruncatedSVD
    from sklearn.utils.extmath import randomized_svd

    import cellweave
    from cellweave.bench import knn_accuracy
    from cellweave.bench.tasks.panel import panel_datasets
    from cellweave.data import prepare_cells
    from cellweave.models import CellWeave

    vocab = CellWeave.load().vocab
    n_vocab = len(vocab)
    rng = np.random.default_rng(0)
    panel = {d.name: d for d in panel_datasets()}
    table = cellweave.datasets.list()
    corpus_names = sorted(set(table.loc[table["pretrain"], "name"]) | set(panel))
    mats: dict[str, sp.csr_matrix] = {}
    for name in corpus_names:
        data = panel[name].model_input if name in panel else cellweave.datasets.load(name)
        X = vocab_matrix(prepare_cells(data, vocab, dataset=name, value_encoding="log1p"), n_vocab)
        mats[name] = X
    sub = {n: X[np.sort(rng.choice(X.shape[0], min(args.max_cells, X.shape[0]), replace=False))]
           for n, X in mats.items()}
    results: dict[str, dict[str, float]] = {}
    R = rng.normal(size=(n_vocab, args.k)).astype(np.float32) / np.sqrt(args.k)
    for name, d in panel.items():
        A = sp.vstack([X for n, X in sub.items() if n != name]).tocsr()
        _, _, VT = randomized_svd(A, args.k, random_state=0, n_iter=4)
        X = mats[name]
        e = np.asarray(X @ VT.T)
        f1 = lambda z: float(knn_accuracy(z, d.labels, seed=0)["macro_f1"])  # noqa: E731
        results[name] = {
            f"corpus SVD {args.k}": f1(e),
            "corpus SVD 50": f1(e[:, :50]),
            f"corpus SVD {args.k}, standardized": f1((e - e.mean(0)) / (e.std(0) + 1e-6)),
            f"random projection {args.k}": f1(np.asarray(X @ R)),
            "own SVD 50 (transductive)": f1(TruncatedSVD(50, random_state=0).fit_transform(X)),
        }
        print(name, {k: round(v, 3) for k, v in results[name].items()}, flush=True)
    methods = list(next(iter(results.values())))
    mean = {m: float(np.mean([r[m] for r in results.values()])) for m in methods}
    print(f"\n{'method':40s} mean over {len(results)} panel datasets")
    for m in methods:
        print(f"{m:40s} {mean[m]:.3f}")
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {"k": args.k, "max_cells": args.max_cells, "corpus": corpus_names,
                                 "per_dataset": results, "mean": mean})


if __name__ == "__main__":
    main()
