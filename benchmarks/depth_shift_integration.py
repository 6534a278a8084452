"""Issue 12: is a model's integration gain depth invariance? Integration across a depth shift made on purpose.

On the panel the thinned-view recipe (``pretrain --vicreg-weight 0.4 --depth-augmentation 0.5
--depth-augmentation-min 0.3`` beside the profile path) gained over its random weights on one integration
set only, the Baron human and mouse islets, whose mouse cells hold 0.71 of the human cells' molecules; the
cell-line mixture, whose batches differ in depth as much (median 16,144 to 34,839 molecules), tied. This
script asks the question without the species: every RNA panel dataset is split in two halves stratified by
cell type, the molecules of one half are thinned binomially to ``--fraction`` (:func:`low_depth.thinned`),
and the panel's integration protocol (:func:`cellweave.bench.tasks.panel.integration_records`: scIB total,
0.6 bio conservation + 0.4 batch correction, the half as the batch; kBET left out as in ``--quick``) scores
each model adapted to the two halves (``cellweave adapt``, the half as the count decoder's covariate), each
model zero-shot, and the first model's architecture adapted from random weights in the same budget (the
control), all with Harmony, beside Harmony on PCA and scVI on the same cells::

    .venv/bin/python benchmarks/depth_shift_integration.py --models cellweave-tiny M --fraction 0.5 \\
        --seed 0 --out depth_shift_integration.json

Binomial thinning is the views' own augmentation, so a gain here says the recipe learned what it was
trained for; a natural depth shift (another protocol, another chemistry) differs from thinning in which
genes drop out. Nothing is chosen here: every arm is scored on the same cells and splits.
"""

from __future__ import annotations

import shlex
import sys
import time

#: The batch key of the two halves.
HALF = "depth half"
#: Scores read from each integration record.
METRICS = ("scIB total", "scIB bio conservation", "scIB batch correction")


def depth_shift_set(d, fraction: float, seed: int):
    """``d`` (a panel dataset of RNA counts) with the cells of one half, stratified by type, thinned to
    ``fraction`` of their molecules (:func:`low_depth.thinned`), ``obs[HALF]`` naming the half
    (``"full"`` / ``"thinned"``); cells left without a molecule are dropped. A new ``PanelData``."""
    import numpy as np
    import scipy.sparse as sp
    from low_depth import thinned

    from cellweave.bench.tasks.panel import PanelData
    from cellweave.data import log_normalize

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(d.labels).astype(str)
    thin = np.zeros(len(labels), dtype=bool)
    for t in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == t))
        thin[idx[: len(idx) // 2]] = True
    adata = d.adata.copy()
    x = sp.csr_matrix(adata.X, dtype=np.float32, copy=True)
    rows = np.flatnonzero(thin)
    part = thinned(adata[rows], fraction, seed=seed)
    x = sp.vstack([x[~thin], sp.csr_matrix(part.X, dtype=np.float32)]).tocsr()
    order = np.r_[np.flatnonzero(~thin), rows]
    back = np.argsort(order)  # the cells in their first order again
    adata.X = x[back]
    adata.obs[HALF] = np.where(thin, "thinned", "full")
    kept = np.asarray(adata.X.sum(axis=1)).ravel() > 0
    adata = adata[kept].copy()
    return PanelData(f"{d.name} (half at {fraction:g} depth)", adata, adata, labels[kept], None, HALF,
                     log_normalize(adata))


def rows_of(records, label: str, *, baselines: bool) -> dict[str, dict[str, float]]:
    """Integration records as ``{method: {metric: value}}``; cellweave's methods (and the scratch and
    untrained controls) named ``"{label}: {method}"``; baselines kept only with ``baselines``."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        if r.split != "integration" or r.metric not in METRICS:
            continue
        ours = r.method.startswith(("cellweave", "scratch", "untrained"))
        if not ours and not baselines:
            continue
        out.setdefault(f"{label}: {r.method}" if ours else r.method, {})[r.metric] = float(r.value)
    return out


def integration_rows(models, labels, d, seed: int, *, scratch: bool = True,
                     precision: str = "32-true") -> dict[str, dict[str, float]]:
    """The panel's integration protocol on ``d`` (``d.batch_key`` as the batch) for every model in
    ``models`` (named ``labels``), as :func:`rows_of`: each model zero-shot and adapted, the first
    model's architecture adapted from random weights (``scratch``), and the baselines once (scVI is
    trained once for all models: the same cells)."""
    from cellweave.bench import BenchmarkContext
    from cellweave.bench.tasks.panel import integration_records

    rows, scvi_cache = {}, {}
    for i, (model, label) in enumerate(zip(models, labels)):
        adapt = ("pretrained", "scratch") if i == 0 and scratch else ("pretrained",)
        ctx = BenchmarkContext(model=model, seeds=(seed,), quick=True, progress=False, adapt=adapt,
                               precision=precision, cache=dict(scvi_cache))
        rows.update(rows_of(integration_records(ctx, d, seed), label, baselines=i == 0))
        scvi_cache = {k: v for k, v in ctx.cache.items() if k[0] == "panel scVI"}
    return rows


def mean_rows(tables) -> dict[str, dict[str, float]]:
    """``{method: {metric: mean}}`` over several ``{method: {metric: value}}`` tables (datasets or
    seeds), each method over the tables that have it."""
    import numpy as np

    tables = list(tables)
    methods = sorted({m for rows in tables for m in rows})
    return {m: {k: float(np.mean([rows[m][k] for rows in tables if m in rows])) for k in METRICS} for m in methods}


def print_table(means: dict[str, dict[str, float]], title: str) -> None:
    """``means`` (:func:`mean_rows`) as a table, best scIB total first."""
    print(f"\n{title}")
    print(f"{'method':72s} {'total':>6s} {'bio':>6s} {'batch':>6s}")
    for m in sorted(means, key=lambda m: -means[m]["scIB total"]):
        print(f"{m[:72]:72s} {means[m]['scIB total']:6.3f} {means[m]['scIB bio conservation']:6.3f} "
              f"{means[m]['scIB batch correction']:6.3f}")


def main() -> None:
    import argparse

    from _diagnostics import panel_selection

    from cellweave import CellWeave
    from cellweave._io_utils import atomic_write_json
    from cellweave._system import hardware, keep_torch_threads

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="model folders or shipped names")
    p.add_argument("--fraction", type=float, default=0.5, help="share of molecules kept in the thinned half")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", nargs="*", default=None, help="panel datasets (default: every RNA one)")
    p.add_argument("--no-scratch", action="store_true", help="leave out the random-weight control")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    p.add_argument("--out", default="depth_shift_integration.json")
    args = p.parse_args()
    if not 0.0 < args.fraction < 1.0:
        sys.exit(f"error: --fraction must be in (0, 1), got {args.fraction}")
    keep_torch_threads()

    models = [CellWeave.load(m) for m in args.models]
    labels = [m.name for m in models]
    if len(set(labels)) < len(labels):
        labels = [f"{m.name} ({i})" for i, m in enumerate(models)]
    per_dataset: dict[str, dict[str, dict[str, float]]] = {}
    start = time.perf_counter()
    for d in panel_selection(args.datasets):
        if d.model_input is not d.adata:  # protein only: no molecules to thin
            continue
        shifted = depth_shift_set(d, args.fraction, args.seed)
        rows = integration_rows(models, labels, shifted, args.seed, scratch=not args.no_scratch,
                                precision=args.precision)
        per_dataset[d.name] = rows
        print(f"{d.name}: " + ", ".join(f"{m} {v['scIB total']:.3f}" for m, v in rows.items()), flush=True)
        atomic_write_json(args.out, {"complete": False, "per_dataset": per_dataset})

    means = mean_rows(per_dataset.values())
    print_table(means, f"integration across a depth shift (half of each dataset's cells at {args.fraction:g} of "
                       f"their molecules), mean over {len(per_dataset)} datasets, seed {args.seed}")
    atomic_write_json(args.out, {
        "command": shlex.join(sys.argv), "complete": True, "fraction": args.fraction, "seed": args.seed,
        "models": [{"label": label, "name": m.name, "sha256": m.model_hash} for label, m in zip(labels, models)],
        "seconds": round(time.perf_counter() - start, 1), "hardware": hardware(), "means": means,
        "per_dataset": per_dataset,
    })


if __name__ == "__main__":
    main()
