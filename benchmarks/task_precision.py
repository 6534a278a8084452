"""bf16 autocast against float32 on the verbs of perturbations, networks and imputation: the same
cells, the same models, the seconds of each run and how far the bf16 result moves.

``--precision bf16-mixed`` on ``perturb``, ``grn``, ``impute``, ``finetune-perturb``,
``predict-perturb`` and ``annotate --finetune`` runs the model's forward passes under bf16 autocast (the perturbation readouts
in float32 from bf16 encoder passes). ``benchmarks/embed_precision.py`` measured the embedding
verbs; this script measures these, each at both precisions, float32 first (one warm-up pass of
each model runs before any timing):

- ``perturb``: the shipped model's zero-shot STAT1 knock-out of a seeded subsample of the
  Papalexi 2021 THP-1 screen's cells (``--perturb-cells``, default 2,000): Pearson of the per-cell
  embedding shifts, of the mean predicted change per gene and of the per-cell changes between the
  two precisions, the overlap of the 50 most changed genes, and at each precision the Pearson of
  the mean predicted change with the observed mean change of the STAT1 guides' cells (log1p of
  counts per 10k against the controls; the zero-shot model's agreement with the screen);
- ``grn attention`` / ``grn perturbation``: the shipped gene model's edges from the screen's
  knocked-out regulators (those with at least 3 observed targets, as ``cellweave benchmark --task
  grn`` scores them; ``--grn-cells`` seeded cells, default 200, the task's quick form): Pearson of the
  two precisions' edge scores, the mean overlap of each regulator's 50 strongest targets, and at each
  precision the task's AUPRC ratio and early-precision ratio against the knock-outs' observed targets;
  and ``tl.grn``'s whole network (the default TF regulators, ``--grn-cells`` cells of its own draw):
  the two agreements;
- ``impute``: the shipped model on the bundled 10x PBMC CITE-seq, a decoder fine-tuned on the
  first 10x run's cells (at most 40 epochs, early stopping on its held-out cells) predicting the
  other run's protein from RNA: the mean per-protein Pearson with the measured CLR protein at each
  precision and the Pearson of the two predictions; ``impute zero-shot``: the two precisions'
  zero-shot predictions compared;
- ``finetune-perturb``: the shipped model's perturbation head fine-tuned on the screen with 5
  seeded targets held out, each held-out target predicted for the kept control cells at the same
  precision: the mean over held-out targets of the Pearson of the predicted with the observed mean
  change (all genes and the 20 most changed), and the Pearson of the two precisions' predictions;
- ``annotate --finetune``: the encoder fine-tuned on the cell-line mixture's CEL-seq2 cells (3
  epochs), labels transferred to its Drop-seq cells: macro-F1 at each precision and the share of
  cells given the same label.

    CELLWEAVE_DATA_DIR=../shared/data OMP_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/task_precision.py --out task_precision.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any

import numpy as np

PRECISIONS = ("32-true", "bf16-mixed")
SCREEN = "perturb_papalexi2021_sceptre"
CITESEQ = "citeseq_pbmc_10x_scvi_tests"
CELL_LINES = "multibatch_cellbench_sc_mixology"
TASKS = ("perturb", "grn", "impute", "finetune-perturb", "annotate-finetune")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson of two arrays of one shape, flattened; 0 where either is constant."""
    a, b = np.ravel(np.asarray(a, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64))
    if a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def top_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean over rows of the share of the ``k`` largest entries of ``a`` that are among ``b``'s
    (1-d inputs are one row; by absolute value)."""
    a, b = np.atleast_2d(np.abs(a)), np.atleast_2d(np.abs(b))
    k = min(k, a.shape[1])
    ta, tb = np.argsort(-a, axis=1)[:, :k], np.argsort(-b, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t, 2)


def row(task: str, seconds: dict[str, float], **values: float) -> dict[str, Any]:
    """One task's row: its seconds at each precision, the speed-up and its measures (rounded)."""
    out: dict[str, Any] = {"task": task, **{f"seconds {p}": seconds[p] for p in PRECISIONS}}
    out["speed-up"] = round(seconds["32-true"] / max(seconds["bf16-mixed"], 1e-9), 2)
    out.update({k: round(float(v), 4) for k, v in values.items()})
    return out


def observed_change(ln, labels: np.ndarray, target: str) -> np.ndarray:
    """Mean log-normalized expression of ``target``'s cells minus the control cells' (``ln``: the
    screen's log1p counts per 10k, :func:`cellweave.data.log_normalize`)."""
    return np.asarray(ln[labels == target].mean(0) - ln[labels == "control"].mean(0), dtype=np.float64).ravel()


def perturb_rows(rna, ln, model, n_cells: int, seed: int) -> list[dict[str, Any]]:
    import cellweave

    rng = np.random.default_rng(seed)
    cells = rna[np.sort(rng.choice(rna.n_obs, size=min(n_cells, rna.n_obs), replace=False))].copy()
    observed = observed_change(ln, rna.obs["perturbation"].astype(str).to_numpy(), "STAT1")
    out, seconds = {}, {}
    for p in PRECISIONS:
        out[p], seconds[p] = timed(cellweave.tl.perturb, cells, genes=["STAT1"], model=model, progress=False,
                                   precision=p, copy=True, store_cell_deltas=True)
    a, b = out["32-true"], out["bf16-mixed"]
    mean_a, mean_b = (np.nan_to_num(x.var["cellweave_perturb_delta"].to_numpy()) for x in (a, b))
    return [row("perturb (STAT1 knock-out)", seconds,
                **{"shift pearson": pearson(a.obs["cellweave_shift"], b.obs["cellweave_shift"]),
                   "mean change pearson": pearson(mean_a, mean_b),
                   "per-cell change pearson": pearson(a.layers["cellweave_perturb_delta"],
                                                      b.layers["cellweave_perturb_delta"]),
                   "top-50 genes overlap": top_overlap(mean_a, mean_b, 50),
                   "vs observed 32-true": pearson(mean_a, observed),
                   "vs observed bf16-mixed": pearson(mean_b, observed)})]


def grn_rows(rna, n_cells: int, seed: int) -> list[dict[str, Any]]:
    """The ``grn`` benchmark task's evaluation (``cellweave.bench.tasks.grn``) at both precisions: the
    knocked-out regulators with at least 3 observed targets as sources, ``n_cells`` seeded cells."""
    from cellweave.bench.tasks.grn import knockout_screen, regulator_metrics
    from cellweave.models import DEFAULT_GENE_MODEL, CellWeave
    from cellweave.tl import attention_scores, perturbation_scores

    model = CellWeave.load(DEFAULT_GENE_MODEL)
    screen = knockout_screen(rna, model)
    corpus, tok, regs, src, truth = screen.corpus, screen.tokens, screen.regulators, screen.sources, screen.truth
    cells = np.sort(np.random.default_rng(seed).choice(rna.n_obs, size=min(n_cells, rna.n_obs), replace=False))

    def attention(precision):
        with model.autocast(precision):
            att = attention_scores(model, corpus, tok, cells, seed=seed)
        return (0.5 * (att + att.T))[src]

    def perturbation(precision):
        with model.autocast(precision):
            return perturbation_scores(model, corpus, tok, src, cells, seed=seed)

    rows = []
    for method, fn in (("attention", attention), ("perturbation", perturbation)):
        nets, seconds, metrics = {}, {}, {}
        for p in PRECISIONS:
            nets[p], seconds[p] = timed(fn, p)
            metrics[p] = regulator_metrics(nets[p], src, truth)
        a, b = nets["32-true"], nets["bf16-mixed"]
        rows.append(row(f"grn {method} ({len(regs)} knocked-out regulators)", seconds,
                        **{"score pearson": pearson(a, b), "top-50 targets overlap": top_overlap(a, b, 50),
                           **{f"{m} {p}": metrics[p][m] for m in ("auprc_ratio", "epr") for p in PRECISIONS}}))
    return rows


def grn_network_rows(rna, n_cells: int, seed: int) -> list[dict[str, Any]]:
    """``tl.grn``'s whole network at both precisions: the default TF regulators, ``n_cells`` cells."""
    import cellweave
    from cellweave.models import DEFAULT_GENE_MODEL, CellWeave

    model = CellWeave.load(DEFAULT_GENE_MODEL)
    rows = []
    for method in ("attention", "perturbation"):
        nets, seconds = {}, {}
        for p in PRECISIONS:
            data, seconds[p] = timed(cellweave.tl.grn, rna, model=model, method=method, n_cells=n_cells, seed=seed,
                                     progress=False, precision=p, copy=True)
            nets[p] = data.varp["cellweave_grn"].toarray()
        regs = np.flatnonzero(np.abs(nets["32-true"]).sum(1) > 0)  # the regulators' rows
        a, b = nets["32-true"][regs], nets["bf16-mixed"][regs]
        rows.append(row(f"grn {method} (tl.grn, {len(regs)} TF regulators)", seconds,
                        **{"score pearson": pearson(a, b), "top-50 targets overlap": top_overlap(a, b, 50)}))
    return rows


def impute_rows(model, seed: int) -> list[dict[str, Any]]:
    import cellweave
    from cellweave import datasets
    from cellweave.data import clr

    data = datasets.load(CITESEQ)
    batch = np.asarray(data.obs["batch"]).astype(str)
    ref, query = data[batch == batch[0]].copy(), data[batch != batch[0]].copy()
    truth = clr(query["prot"].X)
    tuned, zero, seconds, zero_seconds = {}, {}, {}, {}
    for p in PRECISIONS:
        rna = query["rna"].copy()
        _, seconds[p] = timed(cellweave.tl.impute, rna, target="prot", model=model, reference=ref, seed=seed,
                              progress=False, precision=p)
        tuned[p] = rna.obsm["cellweave_prot"]
        rna = query["rna"].copy()
        _, zero_seconds[p] = timed(cellweave.tl.impute, rna, target="prot", model=model, seed=seed, progress=False,
                                   precision=p)
        zero[p] = rna.obsm["cellweave_prot"]

    def per_protein(pred):
        return float(np.nanmean([pearson(pred[:, j], truth[:, j]) for j in range(truth.shape[1])]))

    return [row("impute (fine-tuned, protein from RNA)", seconds,
                **{"prediction pearson": pearson(tuned["32-true"], tuned["bf16-mixed"]),
                   "vs measured 32-true": per_protein(tuned["32-true"]),
                   "vs measured bf16-mixed": per_protein(tuned["bf16-mixed"])}),
            row("impute zero-shot", zero_seconds, **{"prediction pearson": pearson(zero["32-true"], zero["bf16-mixed"])})]


def finetune_perturb_rows(rna, ln, model, seed: int) -> list[dict[str, Any]]:
    import cellweave
    from cellweave.train import finetune_perturbation

    labels = rna.obs["perturbation"].astype(str).to_numpy()
    targets = sorted(set(labels) - {"control"})
    held = sorted(np.random.default_rng(seed).choice(targets, size=5, replace=False).tolist())
    observed = {t: observed_change(ln, labels, t) for t in held}
    preds, seconds, scores = {}, {}, {}
    for p in PRECISIONS:
        t = time.perf_counter()
        pm = finetune_perturbation(rna, model=model, exclude=held, seed=seed, progress=False, precision=p)
        preds[p] = {h: cellweave.tl.predict_perturbation(model=pm, perturbation=h, seed=seed, progress=False,
                                                         precision=p) for h in held}
        seconds[p] = round(time.perf_counter() - t, 2)
        pred_change = {h: preds[p][h].layers["cellweave_predicted"].mean(0) - preds[p][h].X.mean(0) for h in held}
        top = {h: np.argsort(-np.abs(observed[h]))[:20] for h in held}
        scores[p] = (np.mean([pearson(pred_change[h], observed[h]) for h in held]),
                     np.mean([pearson(pred_change[h][top[h]], observed[h][top[h]]) for h in held]))
    both = [np.stack([preds[p][h].layers["cellweave_predicted"] for h in held]) for p in PRECISIONS]
    return [row(f"finetune-perturb + predict-perturb ({', '.join(held)} held out)", seconds,
                **{"prediction pearson": pearson(*both),
                   "pearson delta 32-true": scores["32-true"][0], "pearson delta bf16-mixed": scores["bf16-mixed"][0],
                   "pearson delta top-20 32-true": scores["32-true"][1],
                   "pearson delta top-20 bf16-mixed": scores["bf16-mixed"][1]})]


def annotate_finetune_rows(model, seed: int) -> list[dict[str, Any]]:
    """``annotate --finetune`` from the cell-line mixture's CEL-seq2 cells to its Drop-seq cells."""
    import cellweave
    from cellweave import datasets
    from sklearn.metrics import f1_score

    data = datasets.load(CELL_LINES)
    protocol = data.obs["protocol"].astype(str).to_numpy()
    ref, query = data[protocol == "CEL-seq2"].copy(), data[protocol != "CEL-seq2"].copy()
    labels, seconds, f1 = {}, {}, {}
    for p in PRECISIONS:
        q = query.copy()
        _, seconds[p] = timed(cellweave.tl.annotate, q, reference=ref, label_key="cell_type", model=model,
                              finetune=True, seed=seed, progress=False, precision=p)
        labels[p] = q.obs["cellweave_prediction"].astype(str).to_numpy()
        f1[p] = f1_score(q.obs["cell_type"].astype(str), labels[p], average="macro")
    return [row("annotate --finetune (cell lines, CEL-seq2 to Drop-seq)", seconds,
                **{"same label": float(np.mean(labels["32-true"] == labels["bf16-mixed"])),
                   **{f"macro-F1 {p}": f1[p] for p in PRECISIONS}})]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--perturb-cells", type=int, default=2000)
    p.add_argument("--grn-cells", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="task_precision.json")
    args = p.parse_args(argv)

    import pandas as pd
    import torch

    from cellweave import datasets
    from cellweave._io_utils import atomic_write_json
    from cellweave._system import hardware, keep_torch_threads
    from cellweave.data import log_normalize
    from cellweave.models import CellWeave, environment_versions

    keep_torch_threads()
    t_start = time.perf_counter()
    model = CellWeave.load(None)
    rna = datasets.load(SCREEN, modality="rna")
    ln = log_normalize(rna)  # the observed changes of perturb and finetune-perturb
    model.embed(rna[:64].copy(), progress=False)  # warm-up: the first pass of a process is slower
    rows: list[dict[str, Any]] = []
    for task in args.tasks:
        if task == "perturb":
            new = perturb_rows(rna, ln, model, args.perturb_cells, args.seed)
        elif task == "grn":
            new = grn_rows(rna, args.grn_cells, args.seed) + grn_network_rows(rna, args.grn_cells, args.seed)
        elif task == "impute":
            new = impute_rows(model, args.seed)
        elif task == "finetune-perturb":
            new = finetune_perturb_rows(rna, ln, model, args.seed)
        else:
            new = annotate_finetune_rows(model, args.seed)
        for r in new:
            sys.stderr.write(f"{r}\n")
        rows.extend(new)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        sys.stdout.write(pd.DataFrame(rows).set_index("task").T.to_string() + "\n")
    atomic_write_json(args.out, {
        "command": shlex.join(["benchmarks/task_precision.py", *(sys.argv[1:] if argv is None else argv)]),
        "model": model.name, "model_sha256": model.model_hash, "hardware": hardware(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(), "versions": environment_versions(),
        "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - t_start, 1), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
