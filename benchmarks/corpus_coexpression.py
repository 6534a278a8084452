"""Issue 12 probe, model-free: does a pretraining corpus carry gene co-expression that helps new data?

The positive control (``benchmarks/positive_control.py``) found that pretraining transfers only through
learned gene tables, and only when the corpus's gene co-expression matches the target's. This script
asks the same of a corpus without any model: each target cell's standardized HVG values are smoothed
over each gene's ``k`` most correlated genes in the corpus (netSmooth's idea, Ronen & Akalin 2018,
which smooths over a prior gene network; here the network is the corpus's pooled correlation, each
corpus dataset standardized over its own cells, unmeasured genes counting as the mean), then PCA-50,
then kNN macro-F1 (k=15, 5-fold, the panel's). ``alpha`` is the share of a gene's value replaced by its
neighbours' weighted mean (1: the neighbours alone). A corpus whose co-expression matches the target
lifts the smoothed PCA above the unsmoothed one; one that does not lowers it.

Targets: the development panel's RNA datasets (genes matched by upper-case symbol, so a human corpus
reads a mouse dataset's orthologues of the same name), with the corpus ``make pretrained`` uses
(the registry's pretraining datasets outside the panel), or with ``--synthetic D`` the held-out
datasets of a ``positive_control.py make`` folder with its corpus. ``--fraction f`` thins the targets
first (each count kept with probability f, as ``benchmarks/low_depth.py``), asking whether a corpus helps
where a target's own cells are too shallow to estimate their co-expression; ``--target-cells N`` keeps N
cells of each target, asking the same of a small dataset. ``--add-corpus NAME ...`` adds mirror datasets
(panel ones too) to the corpus (``--only-added``: they are the whole corpus) and ``--datasets NAME ...``
picks the targets; a target may not be in the corpus, so a split of the panel by tissue asks whether a
corpus of the target's own tissue helps.
Prints one line per target and the means, writes ``--out``::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/corpus_coexpression.py --out coexpression.json
    .venv/bin/python benchmarks/corpus_coexpression.py --synthetic build/exp/pc/data --out synthetic.json

About 5 minutes for the panel on one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

#: Corpus cells kept per dataset (random, seed 0).
MAX_CELLS = 1500


def standardized(lognorm) -> np.ndarray:
    """Log-normalized cells (:func:`cellweave.data.log_normalize`), each gene standardized over the cells
    (constant genes stay 0), dense float32."""
    X = lognorm.toarray() if sp.issparse(lognorm) else np.asarray(lognorm, dtype=np.float32)
    sd = X.std(0)
    Z = np.zeros_like(X)
    ok = sd > 0
    Z[:, ok] = (X[:, ok] - X[:, ok].mean(0)) / sd[ok]
    return Z


def corpus_blocks(adatas, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(upper-case symbols, standardized cells)`` of each corpus AnnData holding counts."""
    from cellweave.data import log_normalize
    from cellweave.io import detect_x_kind

    rng = np.random.default_rng(seed)
    blocks = []
    for a in adatas:
        X = a.X
        if a.n_obs > MAX_CELLS:
            X = X[np.sort(rng.choice(a.n_obs, MAX_CELLS, replace=False))]
        if detect_x_kind(X) != "counts":
            continue
        blocks.append((np.array([s.upper() for s in a.var_names]), standardized(log_normalize(X))))
    return blocks


def corpus_correlation(blocks, genes: list[str]) -> np.ndarray:
    """Pooled correlation of ``genes`` over the corpus cells (zero diagonal; zero rows for genes no
    corpus dataset measures)."""
    index = {g: i for i, g in enumerate(genes)}
    rows = []
    for symbols, Z in blocks:
        pairs = [(j, index[s]) for j, s in enumerate(symbols) if s in index]
        if not pairs:
            continue
        src, dst = map(list, zip(*pairs))
        M = np.zeros((len(Z), len(genes)), np.float32)
        M[:, dst] = Z[:, src]
        rows.append(M)
    M = np.vstack(rows)
    C = M.T @ M / len(M)
    np.fill_diagonal(C, 0.0)
    return C


def smoothing(C: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """Row-stochastic smoothing matrix: ``alpha`` of each gene's value from its ``k`` most (positively)
    correlated genes, weighted by correlation; a gene without corpus neighbours keeps its value."""
    W = np.zeros_like(C)
    top = np.argsort(-C, axis=1)[:, :k]
    rows = np.arange(len(C))[:, None]
    W[rows, top] = np.clip(C[rows, top], 0.0, None)
    total = W.sum(1, keepdims=True)
    has = total[:, 0] > 0
    W[has] /= total[has]
    return alpha * W + np.diag(np.where(has, 1.0 - alpha, 1.0))


def score_target(adata, lognorm, labels, hv, blocks, ks, alphas) -> dict[str, float]:
    """The scores of one target: the panel's PCA baseline, PCA-50 of its standardized HVGs ``hv`` (columns of
    ``lognorm``, the target's log-normalized cells), and the same smoothed for each ``k`` and ``alpha``."""
    from _diagnostics import knn_f1
    from sklearn.decomposition import PCA

    from cellweave.bench import pca_hvg_embedding

    genes = [s.upper() for s in np.asarray(adata.var_names)[hv]]
    X = standardized(lognorm[:, hv])  # normalized by each cell's whole library, as the panel does
    C = corpus_correlation(blocks, genes)
    row = {"PCA (HVG)": knn_f1(pca_hvg_embedding(adata, seed=0), labels),
           "PCA, same genes unsmoothed": knn_f1(PCA(50, random_state=0).fit_transform(X), labels)}
    for k in ks:
        for alpha in alphas:
            S = X @ smoothing(C, k, alpha).T
            row[f"smoothed k={k} alpha={alpha}"] = knn_f1(PCA(50, random_state=0).fit_transform(S), labels)
    row["share of genes the corpus measures"] = round(float((np.abs(C).sum(1) > 0).mean()), 2)
    return row


def subsampled_target(target, n_cells: int, *, synthetic: bool):
    """``target`` (name, AnnData, log-normalized cells, labels, HVG columns) reduced to a random ``n_cells``
    of its cells (seed 0; all when it has no more), a panel dataset's HVGs chosen again on them."""
    from cellweave.data import hvg_features

    name, adata, lognorm, labels, hv = target
    if adata.n_obs <= n_cells:
        return target
    keep = np.sort(np.random.default_rng(0).choice(adata.n_obs, n_cells, replace=False))
    lognorm = lognorm[keep]
    return name, adata[keep].copy(), lognorm, labels[keep], hv if synthetic else hvg_features(lognorm)


def thinned_target(target, fraction: float, *, synthetic: bool):
    """``target`` (name, AnnData, log-normalized cells, labels, HVG columns) with each count kept with
    probability ``fraction`` (:func:`low_depth.thinned`, seed 0), normalized again and, for a panel
    dataset, its HVGs chosen again on the thinned cells; ``None`` when its matrix holds no counts."""
    from low_depth import thinned

    from cellweave.data import hvg_features, log_normalize
    from cellweave.io import detect_x_kind

    name, adata, _, labels, hv = target
    if detect_x_kind(adata.X) != "counts":
        return None
    adata = thinned(adata, fraction, seed=0)
    lognorm = log_normalize(adata)
    return name, adata, lognorm, labels, hv if synthetic else hvg_features(lognorm)


def check_folds(add_corpus: list[str], targets: list[str] | None, *, synthetic: bool, only_added: bool = False) -> None:
    """Refuse a target that is also in the corpus, an empty ``--only-added`` corpus, or ``--add-corpus`` /
    ``--datasets`` with ``--synthetic``, before any data is loaded."""
    if synthetic and (add_corpus or targets or only_added):
        raise SystemExit("--add-corpus, --only-added and --datasets pick mirror datasets; leave them out with "
                         "--synthetic.")
    if only_added and not add_corpus:
        raise SystemExit("--only-added leaves the corpus empty without --add-corpus: name the corpus datasets.")
    both = sorted(set(add_corpus) & set(targets or []))
    if both:
        raise SystemExit(f"{', '.join(both)} would be both a target and in the corpus: take it out of --add-corpus "
                         "or of --datasets (a target must be new to the corpus).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", default=None, metavar="D", help="a positive_control.py make folder")
    p.add_argument("--synthetic-corpus", default=None, metavar="D2",
                   help="with --synthetic: the corpus of this `make` folder instead (held-out sets made with "
                        "`make --heldout-only` and the same seed share its world)")
    p.add_argument("--k", type=int, nargs="+", default=[10])
    p.add_argument("--alpha", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--fraction", type=float, default=1.0,
                   help="keep each target count with this probability first (binomial thinning, seed 0, as "
                        "benchmarks/low_depth.py); targets without integer counts are left out below 1")
    p.add_argument("--target-cells", type=int, default=0, metavar="N",
                   help="keep a random N cells of each larger target (seed 0): a smaller dataset; 0 = all")
    p.add_argument("--add-corpus", nargs="+", default=[], metavar="NAME",
                   help="mirror datasets added to the corpus (panel datasets too); not with --synthetic")
    p.add_argument("--only-added", action="store_true",
                   help="the corpus is --add-corpus alone, without make pretrained's datasets")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="panel targets to score (default: all); none of them may be in --add-corpus")
    p.add_argument("--out", default="corpus_coexpression.json")
    args = p.parse_args()
    check_folds(args.add_corpus, args.datasets, synthetic=bool(args.synthetic), only_added=args.only_added)
    if not 0.0 < args.fraction <= 1.0:
        raise SystemExit(f"--fraction {args.fraction}: give a share of the counts in (0, 1].")
    if args.target_cells < 0:
        raise SystemExit(f"--target-cells {args.target_cells}: give a number of cells, or 0 for all.")
    from cellweave._system import keep_torch_threads

    keep_torch_threads()
    import anndata as ad

    from _diagnostics import mean_over

    from cellweave.data import hvg_features, log_normalize

    t0 = time.perf_counter()
    targets = []
    if args.synthetic:
        corpus_dir = Path(args.synthetic_corpus or args.synthetic, "corpus")
        corpus = [ad.read_h5ad(f) for f in sorted(corpus_dir.glob("*.h5ad"))]
        if not corpus:
            raise SystemExit(f"no corpus datasets in {corpus_dir}: give --synthetic-corpus, a `make` folder with one.")
        for f in sorted(Path(args.synthetic, "heldout").glob("*.h5ad")):
            a = ad.read_h5ad(f)
            targets.append((f.stem, a, log_normalize(a), a.obs["cell_type"].astype(str).to_numpy(),
                            np.arange(a.n_vars)))
    else:
        from _diagnostics import panel_selection

        from cellweave import datasets

        table = datasets.list()
        unknown = sorted(set(args.add_corpus) - set(table["name"]))
        if unknown:
            raise SystemExit(f"--add-corpus {', '.join(unknown)}: not in the registry; `cellweave datasets list` "
                             "names the datasets.")
        in_panel = np.array(["panel" in t for t in table["tasks"]])
        missing = sorted(set(args.datasets or []) - set(table["name"][in_panel]))
        if missing:
            raise SystemExit(f"--datasets {', '.join(missing)}: not panel datasets; `cellweave datasets list` shows "
                             "those whose tasks include panel.")
        # make pretrained's corpus: the registry's pretraining datasets outside the panel
        table = table[table["pretrain"] & ~in_panel]
        corpus = []
        names = ([] if args.only_added else list(table["name"])) + list(args.add_corpus)
        for name in dict.fromkeys(names):  # a dataset named twice counts once
            data = datasets.load(name)
            rna = data.mod.get("rna") if hasattr(data, "mod") else data
            if rna is not None and rna.uns.get("x_kind", "counts") == "counts":
                corpus.append(rna)
        for d in panel_selection(args.datasets):
            if d.lognorm is None or d.adata.n_vars < 100 or d.name.startswith("prot_"):
                continue  # protein panels and targeted panels of under 100 genes have no HVG set to smooth
            targets.append((d.name, d.adata, d.lognorm, d.labels, hvg_features(d.lognorm)))
    if args.target_cells:
        targets = [subsampled_target(t, args.target_cells, synthetic=bool(args.synthetic)) for t in targets]
    if args.fraction < 1.0:
        targets = [thinned_target(t, args.fraction, synthetic=bool(args.synthetic)) for t in targets]
        targets = [t for t in targets if t is not None]
    blocks = corpus_blocks(corpus)
    per_dataset = {}
    for name, adata, lognorm, labels, hv in targets:
        per_dataset[name] = score_target(adata, lognorm, labels, hv, blocks, args.k, args.alpha)
        print(name, " ".join(f"{k}={v:.3f}" for k, v in per_dataset[name].items()), flush=True)
    means = mean_over(list(per_dataset.values()))
    print("mean", " ".join(f"{k}={v:.3f}" for k, v in means.items()))
    command = " ".join(["benchmarks/corpus_coexpression.py", *sys.argv[1:]])
    result = {"command": command,
              "corpus_datasets": len(blocks), "corpus_cells": int(sum(len(z) for _, z in blocks)),
              "seconds": round(time.perf_counter() - t0, 1), "mean": means, "per_dataset": per_dataset}
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
