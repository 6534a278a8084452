"""Issue 12: does pretraining help when the user has few cells?

On the development panel's full datasets (up to 6,000 cells each) the pretrained model ties random
weights of its architecture, zero-shot (kNN macro-F1 0.668 against 0.658, ``few_shot.py``) and under
``adapt``'s count-likelihood readout (0.770 against 0.767, PCA's input 0.771, ``embedding_vae.py``);
few labels did not favour it either (``few_shot.py``). A prior learned on other cells should matter
most when the data itself is small: PCA's components, the highly variable genes and scVI's encoder are
all estimated from the user's cells, while a pretrained embedding is fixed before it sees them. Sample
efficiency is what foundation models are usually credited with (Bommasani et al. 2021; scGPT and
Geneformer report it for labels, not for unlabelled cells). This measures it for unlabelled cells.

On every panel dataset, for each ``n`` of ``--cells`` and each seed of ``--seeds``, ``n`` cells are drawn
at random (the seed draws them and seeds every fit) and each representation is computed from those
cells alone, as a user holding only them would:

- ``cellweave, zero-shot``: the model's embedding (``CellWeave.embed``, seed 0);
- ``untrained, zero-shot``: random weights of its architecture (``start_module(model, "random", seed=0)``),
  the same tokens and pooling: the control for pretraining;
- ``PCA (HVG)``: PCA (50) of the 2,000 most variable log-normalized genes, chosen and fitted on the ``n``
  cells (the panel's zero-shot baseline); ``PCA (HVG), k components``: the same with 10 and 20 components,
  since 50 components of 100 cells fit much of their noise (no width is chosen: all three are printed);
- ``<each of the three> + readout``: :func:`cellweave.train.fit_count_readout` on that representation,
  scVI's negative-binomial decoder of the ``n`` cells' 2,000 most variable genes with the dataset's
  batch key (else its shift key) as the covariate. On the model's embedding this is what ``cellweave adapt``
  (``--method head``, its default budget) trains; on random weights it is the panel's scratch control,
  on PCA the readout's control for the foundation model as a whole (as ``embedding_vae.py``);
- ``scVI``: scvi-tools' SCVI (10-d latent) on the same genes' counts and covariate, ``--scvi-epochs``
  passes (the panel's 200 by default).

Each is scored by kNN macro-F1 (the panel's k=15, 5-fold, seed 0) on the drawn cells of the types with at
least ``MIN_TYPE_CELLS`` of them; an ``n`` is left out of a dataset where fewer than two types reach it in
some seed's draw, or where the dataset has no more than ``n`` cells, so every seed of an ``n`` has the same datasets.
Nothing is chosen: every representation is scored on the same cells with its default settings. Prints, per
``n``, the mean over datasets and seeds of each representation and the paired difference pretrained minus
random weights (zero-shot and with the readout) with the datasets where it is positive, and writes OUT
(JSON, per dataset, ``n`` and seed)::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/cell_budget.py [--model M] \\
        [--datasets D ...] [--cells 100 300 1000] [--seeds 0 1 2] --out cell_budget.json

``--methods`` scores only some representations (PCA's alone take seconds per dataset). Runs on parts of the
panel (two one-thread runs share these 2 cores well) are joined by
``benchmarks/cell_budget.py --merge A.json B.json --out cell_budget.json``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

import numpy as np

#: Cells drawn per dataset (default ``--cells``).
CELLS = (100, 300, 1000)
#: Fewest drawn cells of a type for its cells to be scored.
MIN_TYPE_CELLS = 10
#: The representations, in the table's order.
#: PCA's other widths (besides the panel's 50), for a fairer baseline on few cells: 50 components of 100 cells
#: fit much of their noise.
PCA_COMPONENTS = (10, 20)
METHODS = ("cellweave, zero-shot", "untrained, zero-shot", "PCA (HVG)",
           *(f"PCA (HVG), {k} components" for k in PCA_COMPONENTS),
           "cellweave + readout", "untrained + readout", "PCA (HVG) + readout", "scVI")
#: Paired differences printed per ``n``: name -> (minuend, subtrahend).
CONTRASTS = {"pretrained - random, zero-shot": ("cellweave, zero-shot", "untrained, zero-shot"),
             "pretrained - random, + readout": ("cellweave + readout", "untrained + readout"),
             "pretrained - PCA, zero-shot": ("cellweave, zero-shot", "PCA (HVG)"),
             **{f"pretrained - PCA ({k}), zero-shot": ("cellweave, zero-shot", f"PCA (HVG), {k} components")
                for k in PCA_COMPONENTS},
             "pretrained + readout - scVI": ("cellweave + readout", "scVI")}


def draw_cells(n_cells: int, n: int, seed: int) -> np.ndarray | None:
    """``n`` of ``n_cells`` positions drawn without replacement by ``seed``, sorted; ``None`` when the
    dataset has no more than ``n`` cells (the full dataset is the panel's, not a budget)."""
    if n_cells <= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_cells, n, replace=False))


def scored_cells(labels: np.ndarray, min_cells: int = MIN_TYPE_CELLS) -> np.ndarray | None:
    """Positions of the cells whose type has at least ``min_cells`` cells in ``labels``; ``None`` when fewer
    than two types do (kNN macro-F1 needs two classes with enough cells for its folds)."""
    types, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    kept = types[counts >= min_cells]
    if len(kept) < 2:
        return None
    return np.flatnonzero(np.isin(np.asarray(labels).astype(str), kept))


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Per ``n``: each method's mean over the (dataset, seed) rows that have it and the sd over seeds of its
    mean over datasets (the seeds' spread, as the panel's tables; not the datasets'), ``datasets`` (how many),
    and each of :data:`CONTRASTS`' paired differences (mean over rows having both terms; ``wins``: the
    datasets whose mean over seeds is positive, of those with both)."""
    out: dict[str, dict] = {}
    for n in sorted({r["n"] for r in rows}):
        at_n = [r for r in rows if r["n"] == n]
        entry: dict = {"datasets": len({r["dataset"] for r in at_n})}
        for m in METHODS:
            vals = [r["scores"][m] for r in at_n if m in r["scores"]]
            if vals:
                per_seed = [np.mean([r["scores"][m] for r in at_n if m in r["scores"] and r["seed"] == s])
                            for s in sorted({r["seed"] for r in at_n if m in r["scores"]})]
                entry[m] = {"mean": round(float(np.mean(vals)), 3), "sd": round(float(np.std(per_seed)), 3),
                            "datasets": len({r["dataset"] for r in at_n if m in r["scores"]})}
        for name, (a, b) in CONTRASTS.items():
            pairs = [(r["dataset"], r["scores"][a] - r["scores"][b]) for r in at_n
                     if a in r["scores"] and b in r["scores"]]
            if not pairs:
                continue
            per_dataset: dict[str, list[float]] = {}
            for ds, diff in pairs:
                per_dataset.setdefault(ds, []).append(diff)
            wins = sum(np.mean(v) > 0 for v in per_dataset.values())
            entry[name] = {"mean": round(float(np.mean([p[1] for p in pairs])), 3),
                           "wins": f"{wins} of {len(per_dataset)}"}
        out[str(n)] = entry
    return out


def print_summary(summary: dict[str, dict]) -> None:
    """The table: one column per ``n`` (its datasets in parentheses), one row per method (mean ± sd; ``[k]``:
    over only ``k`` of the datasets, e.g. scVI without the protein-only one), then the paired differences."""
    ns = list(summary)
    print(f"{'kNN macro-F1 on n cells':32s}" + "".join(f"{'n = ' + n + ' (' + str(summary[n]['datasets']) + ')':>22s}"
                                                      for n in ns))

    def cell(n: str, m: str) -> str:
        e = summary[n][m]
        fewer = f" [{e['datasets']}]" if e["datasets"] < summary[n]["datasets"] else ""
        return f"{e['mean']:.3f} ± {e['sd']:.3f}{fewer}"

    for m in METHODS:
        cells = [cell(n, m) if m in summary[n] else "-" for n in ns]
        print(f"{m:32s}" + "".join(f"{c:>22s}" for c in cells))
    for name in CONTRASTS:
        cells = [f"{summary[n][name]['mean']:+.3f} ({summary[n][name]['wins']})" if name in summary[n] else "-"
                 for n in ns]
        print(f"{name:32s}" + "".join(f"{c:>22s}" for c in cells))


def budget_scores(d, idx: np.ndarray, model, untrained, *, seed: int, scvi_epochs: int,
                  methods: tuple[str, ...] = METHODS) -> dict[str, float] | None:
    """kNN macro-F1 of the representations ``methods`` (of :data:`METHODS`; module docstring) of the cells
    ``idx`` of panel dataset ``d``; only what they need is computed. ``None`` when fewer than two of the
    cells' types have :data:`MIN_TYPE_CELLS` cells."""
    from _diagnostics import knn_f1, panel_batch_codes, readout_latent

    from cellweave.bench import pca_hvg_embedding
    from cellweave.data import hvg_features
    from cellweave.train import decoded_counts

    labels = np.asarray(d.labels).astype(str)[idx]
    scored = scored_cells(labels)
    if scored is None:
        return None
    data, sub = d.model_input[idx].copy(), d.adata[idx].copy()
    make = {"cellweave": lambda: model.embed(data, seed=0, progress=False, dataset=d.name)[0],
            "untrained": lambda: untrained.embed(data, seed=0, progress=False, dataset=d.name)[0],
            "PCA (HVG)": lambda: pca_hvg_embedding(sub, seed=seed)}
    inputs = {name: f() for name, f in make.items()
              if {f"{name}, zero-shot", name, f"{name} + readout"} & set(methods)}
    reps = {m: inputs[name] for name in inputs for m in (f"{name}, zero-shot", name) if m in methods}
    for k in PCA_COMPONENTS:
        if f"PCA (HVG), {k} components" in methods:
            reps[f"PCA (HVG), {k} components"] = pca_hvg_embedding(sub, n_comps=k, seed=seed)
    batches = np.unique(panel_batch_codes(d)[idx], return_inverse=True)[1]
    readouts = [name for name in inputs if f"{name} + readout" in methods]
    counts = decoded_counts(data, None, any_modality=True)[0] if readouts else None
    if counts is not None:
        for name in readouts:
            reps[f"{name} + readout"] = readout_latent(inputs[name], counts, batches, seed)
    if "scVI" in methods and d.adata.n_vars >= 20:
        from cellweave.bench.tasks._scvi_baselines import scvi_latent

        latent = scvi_latent(sub, hvg_features(d.lognorm[idx]), batches.astype(str), seed=seed, max_epochs=scvi_epochs)
        if latent is not None:
            reps["scVI"] = latent
    return {m: knn_f1(reps[m][scored], labels[scored]) for m in METHODS if m in reps}


def merged(runs: list[dict]) -> dict:
    """One result of several finished runs of this script (e.g. on two halves of the panel, side by side):
    their rows, their summary recomputed, each run's command. A (dataset, n, seed) that several runs score
    with different methods (``--methods``) becomes one row with all their scores. Refuses partial runs, runs
    of different models or scVI budgets, and a method that two runs both score on one (dataset, n, seed)."""
    for r in runs:
        if r.get("partial") or "command" not in r:
            raise SystemExit("a run to merge is unfinished (its JSON is the partial one written as it goes): "
                             "merge finished runs only.")
    for key in ("model", "scvi_epochs"):
        if len({str(r[key]) for r in runs}) > 1:
            raise SystemExit(f"the runs differ in {key} ({', '.join(sorted({str(r[key]) for r in runs}))}): "
                             "merge runs of one model and one scVI budget.")
    joined: dict[tuple, dict] = {}
    for row in (row for r in runs for row in r["rows"]):
        key = (row["dataset"], row["n"], row["seed"])
        held = joined.setdefault(key, {"dataset": key[0], "n": key[1], "seed": key[2], "scores": {}})["scores"]
        both = sorted(set(held) & set(row["scores"]))
        if both:
            raise SystemExit(f"two runs both score {both[0]!r} on {key} (dataset, n, seed): merge runs of different "
                             "datasets, seeds or methods.")
        held.update(row["scores"])
    rows = [{**row, "scores": {m: row["scores"][m] for m in METHODS if m in row["scores"]}} for row in joined.values()]
    return {"commands": [r["command"] for r in runs], "model": runs[0]["model"], "metric": runs[0]["metric"],
            "threads": sorted({r["threads"] for r in runs}), "scvi_epochs": runs[0]["scvi_epochs"], "rows": rows,
            "summary": summarize(rows), "seconds": [r["seconds"] for r in runs]}


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="cell_budget.json")
    p.add_argument("--cells", type=int, nargs="+", default=list(CELLS), help="cells drawn per dataset")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="draws (each seeds its fits)")
    p.add_argument("--scvi-epochs", type=int, default=200, help="scVI's passes (the panel's 200)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD",
                   help="representations to score (default all; PCA's alone take seconds): " + "; ".join(METHODS))
    p.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                   help="instead of running: merge finished runs (e.g. halves of the panel) into OUT and print the table")
    args = p.parse_args()
    if args.merge:
        import json
        from pathlib import Path

        from cellweave._io_utils import atomic_write_json

        result = merged([json.loads(Path(f).read_text()) for f in args.merge])
        print_summary(result["summary"])
        atomic_write_json(args.out, result)
        return
    if min(args.cells) < 2 * MIN_TYPE_CELLS:
        p.error(f"--cells {min(args.cells)}: draw at least {2 * MIN_TYPE_CELLS} cells (two types of "
                f"{MIN_TYPE_CELLS} cells each are scored).")
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    import logging

    from _diagnostics import panel_selection, random_weights

    from cellweave._io_utils import atomic_write_json
    from cellweave.models import CellWeave

    logging.getLogger("scvi").setLevel(logging.WARNING)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    model = CellWeave.load(args.model)
    untrained = random_weights(model)
    rows, t0 = [], time.perf_counter()
    for d in panel_selection(args.datasets):
        for n in args.cells:
            found = []  # this n's rows, kept only when every seed's draw is scored
            for seed in args.seeds:
                idx = draw_cells(d.adata.n_obs, n, seed)
                if idx is None:
                    print(f"{d.name}: n = {n} left out ({d.adata.n_obs} cells)", flush=True)
                    break
                scores = budget_scores(d, idx, model, untrained, seed=seed, scvi_epochs=args.scvi_epochs,
                                       methods=tuple(args.methods))
                if scores is None:
                    print(f"{d.name}: n = {n} left out (fewer than two types with {MIN_TYPE_CELLS} cells in the "
                          f"draw of seed {seed})", flush=True)
                    break
                found.append({"dataset": d.name, "n": n, "seed": seed, "scores": scores})
                print(f"{d.name} n={n} seed={seed} {time.perf_counter() - t0:.0f} s "
                      + " ".join(f"{m}={v:.3f}" for m, v in scores.items()), flush=True)
            else:
                rows += found
            summary = summarize(rows)
            atomic_write_json(args.out, {"partial": True, "rows": rows, "summary": summary})
    summary = summarize(rows)
    print_summary(summary)
    atomic_write_json(args.out, {
        "command": shlex.join(["benchmarks/cell_budget.py", *sys.argv[1:]]), "model": model.name,
        "metric": f"kNN macro-F1 (k=15, 5-fold, seed 0) on the drawn cells of types with >= {MIN_TYPE_CELLS} of them",
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"), "scvi_epochs": args.scvi_epochs,
        "rows": rows, "summary": summary, "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
