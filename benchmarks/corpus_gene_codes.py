"""Issue 12 diagnostic: gene codes learned from the pretraining corpus's co-expression, in place of random codes.

The shipped model keeps its input gene table at fixed random codes (``fixed_feature_tables``), so
the bag half of its embedding (a value-weighted mean of the codes of a cell's tokens) is a random
projection of the cell's profile that pretraining never changes. This asks whether a gene table
*learned from the corpus* does better on data it never saw: each gene's code is its loading on the
top ``d_model`` principal components of the pretraining corpus, the co-expression embedding of
Gene2vec (Du et al., BMC Genomics 2019) and of latent semantic analysis, computed in closed form.
What differs from Gene2vec: loadings of a joint SVD of all corpus datasets (cells x genes, each
dataset's ``--n-top`` most variable genes z-scored within the dataset, unmeasured genes 0; at most
``--max-cells`` cells per dataset; datasets with RNA in fewer than 50 cells are left out), not
skip-gram on co-expressed gene pairs. Genes the corpus never measured keep their random codes.

The corpus is the datasets ``make pretrained`` trains on (the registry's pretraining datasets outside
the development panel), so every panel dataset is unseen. On every panel dataset, kNN macro-F1
(k=15, stratified 5-fold, seed 0) of the shipped model's embedding, CLS half and bag half, and of the
bag half of the same model with its gene table replaced by:

- ``corpus codes``: the corpus loadings, rescaled to the random codes' mean norm;
- ``corpus + random codes``: their sum, each at that norm (the random part keeps the projection's
  distances, the corpus part adds its directions).

Only the bag half is scored for a replaced table: the transformer was trained on the random codes.
Prints one line per dataset and the means, writes ``--out`` (JSON). 676 s beside a pretraining run on
the two cores::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/corpus_gene_codes.py --out corpus_gene_codes.json
"""

from __future__ import annotations

import time

import numpy as np


def corpus_loadings(model, names, *, n_top: int, max_cells: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(loadings (n_vocab, d), measured (n_vocab,) bool)``: each vocabulary gene's loading on the
    top ``d`` components of the z-scored, stacked RNA of the datasets ``names`` (see the module)."""
    import cellweave
    from cellweave.data import prepare_cells, variable_columns
    from sklearn.utils.extmath import randomized_svd

    n_vocab, d = len(model.vocab), model.config.d_model
    rng = np.random.default_rng(seed)
    parts = []
    for name in names:
        corpus = prepare_cells(cellweave.datasets.load(name), model.vocab, dataset=name, value_encoding="log1p")
        for block in corpus.blocks:
            if block.modality != "rna":
                continue
            present = np.flatnonzero(block.present)
            if present.size < 50:
                continue
            cols = variable_columns(block, n_top)
            cols = np.arange(block.token_ids.size) if cols is None else cols
            cells = np.sort(rng.choice(present, min(max_cells, present.size), replace=False))
            X = block.values[cells][:, cols].toarray().astype(np.float64)
            sd = X.std(0)
            keep = sd > 0
            Z = np.clip((X[:, keep] - X[:, keep].mean(0)) / sd[keep], -10, 10)
            full = np.zeros((Z.shape[0], n_vocab), np.float32)
            full[:, block.token_ids[cols][keep]] = Z
            parts.append(full)
            print(f"{name}: {Z.shape[0]} cells, {int(keep.sum())} genes", flush=True)
    A = np.vstack(parts)
    measured = (A != 0).any(0)
    _, s, VT = randomized_svd(A[:, measured], d, random_state=seed, n_iter=4)
    loadings = np.zeros((n_vocab, d), np.float32)
    loadings[measured] = (VT.T * s / np.sqrt(A.shape[0])).astype(np.float32)
    return loadings, measured


def with_table(model, table: np.ndarray):
    """A copy of ``model`` whose input feature table is ``table`` (fixed, as the shipped one)."""
    import copy

    import torch

    out = copy.deepcopy(model)
    out.module.feature_embedding.weight.data = torch.from_numpy(table.astype(np.float32))
    return out


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="corpus_gene_codes.json")
    p.add_argument("--n-top", type=int, default=4000, help="variable genes per corpus dataset")
    p.add_argument("--max-cells", type=int, default=4000, help="cells per corpus dataset")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    import cellweave
    from _diagnostics import halves, knn_f1, panel_selection, write_means

    from cellweave.models import CellWeave

    model = CellWeave.load(args.model or "cellweave-tiny")
    table = cellweave.datasets.list()
    panel_names = {d.name for d in panel_selection()}
    names = sorted(set(table.loc[table["pretrain"], "name"]) - panel_names)
    t0 = time.perf_counter()
    loadings, measured = corpus_loadings(model, names, n_top=args.n_top, max_cells=args.max_cells)
    random = model.module.feature_embedding.weight.detach().numpy().copy()
    norm = float(np.linalg.norm(random, axis=1).mean())
    corpus = random.copy()
    unit = loadings[measured] / np.linalg.norm(loadings[measured], axis=1).mean()
    corpus[measured] = unit * norm
    mixed = random.copy()
    mixed[measured] = random[measured] + unit * norm
    print(f"corpus codes for {int(measured.sum())} of {len(measured)} vocabulary genes "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    variants = {"corpus codes": with_table(model, corpus), "corpus + random codes": with_table(model, mixed)}
    per_dataset = {}
    for d in panel_selection(args.datasets):
        emb = model.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0]
        cls, bag = halves(emb, model)
        row = {"shipped": knn_f1(emb, d.labels), "shipped, CLS half": knn_f1(cls, d.labels),
               "shipped, bag half (random codes)": knn_f1(bag, d.labels)}
        for label, m in variants.items():
            other = m.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0]
            row[f"bag half, {label}"] = knn_f1(halves(other, m)[1], d.labels)
        per_dataset[d.name] = row
        print(d.name, " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    write_means(per_dataset, args.out, command="benchmarks/corpus_gene_codes.py", model=args.model or "cellweave-tiny",
                seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    main()
