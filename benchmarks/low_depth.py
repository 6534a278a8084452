"""Issue 12 diagnostic: does pretraining help where a cell's counts are few?

A prior learned from other cells should matter most when a cell's own profile is thin: on an unseen
low-depth dataset the issue's mouse immune cells scored kNN macro-F1 0.75 zero-shot against PCA's
0.71. Here every development-panel dataset whose matrix holds integer counts (RNA, or the protein
counts of a protein-only dataset, embedded as the panel embeds it; runs before the thirty-fourth
session left protein out) is thinned: each count is kept with probability ``f`` (binomial thinning,
the molecular sampling of Batson & Royer 2019's molecular cross-validation), so a cell keeps about a
fraction ``f`` of its molecules and its type labels stay true. At each ``f`` the thinned cells are
embedded zero-shot by each model, by random weights of the first one's architecture (the control every pretraining recipe has to beat) and by
the panel's baseline, PCA-50 of the log-normalized 2,000 HVGs; each is scored by kNN macro-F1 (k=15,
5-fold, seed 0), as the panel scores them, and a ``cls+bag`` embedding's CLS and bag halves too
(``benchmarks/embedding_halves.py`` says what each half is).

Prints one line per dataset and fraction and the means, and writes ``--out`` (JSON). About 3
minutes per model and fraction on two idle cores::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/low_depth.py --fractions 1 0.2 0.05 \\
        --models cellweave-tiny build/exp/M --out low_depth.json
"""

from __future__ import annotations

import sys
import time


def thinned(adata, fraction: float, seed: int):
    """A copy of ``adata`` whose integer counts are each kept with probability ``fraction``."""
    import numpy as np
    import scipy.sparse as sp

    out = adata.copy()
    if fraction >= 1.0:
        return out
    x = sp.csr_matrix(out.X, dtype=np.float32, copy=True)
    x.data = np.random.default_rng(seed).binomial(x.data.astype(np.int64), fraction).astype(np.float32)
    x.eliminate_zeros()
    out.X = x
    return out


def main() -> None:
    import numpy as np

    from _diagnostics import knn_f1, panel_arguments, panel_selection, random_weights, scores_with_halves

    p = panel_arguments(__doc__, out="low_depth.json")
    p.add_argument("--models", nargs="+", default=None, help="model folders or shipped names (default: the shipped "
                   "model, or --model)")
    p.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.2, 0.05],
                   help="share of each cell's counts kept (default: 1 0.2 0.05)")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    if any(not 0.0 < f <= 1.0 for f in args.fractions):
        raise SystemExit(f"--fractions must lie in (0, 1], not {args.fractions}.")

    from cellweave.bench import pca_hvg_embedding
    from cellweave.bench.tasks.panel import protein_model_input
    from cellweave.models import CellWeave

    names = args.models or [args.model or "cellweave-tiny"]
    models = {name: CellWeave.load(name) for name in names}
    models["random weights"] = random_weights(models[names[0]])
    t0 = time.perf_counter()
    per_dataset: dict[str, dict[str, float]] = {}
    depth: dict[str, dict[str, float]] = {}
    for d in panel_selection(args.datasets):
        x = d.adata.X
        data = x.data if hasattr(x, "data") else np.asarray(x).ravel()
        if not np.allclose(data, np.round(data)):
            print(f"{d.name}: not integer counts, left out", flush=True)
            continue
        for f in args.fractions:
            a = thinned(d.adata, f, seed=0)
            model_input = a if d.model_input is d.adata else protein_model_input(a)
            row = {}
            for label, m in models.items():
                row.update(scores_with_halves(label, m, model_input, d.labels, d.name))
            row["PCA-50 of HVGs"] = knn_f1(pca_hvg_embedding(a, seed=0), d.labels)
            key = f"{d.name} @ {f:g}"
            per_dataset[key] = row
            depth[key] = float(np.median(np.asarray(a.X.sum(1)).ravel()))
            print(f"{key:60s} median counts {depth[key]:8.0f} "
                  + " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    means = {}
    for f in args.fractions:
        rows = [r for k, r in per_dataset.items() if k.endswith(f" @ {f:g}")]
        means[f"{f:g}"] = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}
        print(f"mean @ {f:g} ({len(rows)} datasets): "
              + " ".join(f"{k}={v:.3f}" for k, v in means[f"{f:g}"].items()))
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {
        "command": " ".join(["benchmarks/low_depth.py", *sys.argv[1:]]),
        "models": names, "metric": "kNN macro-F1 (k=15, 5-fold, seed 0)",
        "per_dataset": per_dataset, "median_counts": depth, "mean": means,
        "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
