"""Embedding under bf16 autocast against float32, on the development panel: the same cells, the
same model, the seconds of each embedding pass and the zero-shot kNN macro-F1 of each embedding.

``cellweave embed --precision bf16-mixed`` (``tl.embed(precision=...)``) runs the forward pass
under bf16 autocast; this script measures what that costs in quality and buys in time on the
machine it runs on. Per panel dataset (seed 0): the shipped model's (or ``--model``'s) embedding
of the prepared cells in float32 and in bf16, each timed over ``CellWeave.embed_corpus``
(tokenizing and collating included; the float32 pass first, so the first dataset's float32 time
includes the warm-up and is left out of the speed-up summary), the kNN macro-F1 of each (the
panel's zero-shot score, 5-fold) and the cosine of each cell's two embeddings.

``--adapt`` adds the adapted path (``cellweave embed --adapt --precision P``, ``train.adapt(precision=P)``):
per dataset and precision, the panel's adaptation (the head, seed 0, the dataset's batch or shift key
as the decoder's covariate) timed, the adapted model's embedding pass at the same precision timed,
and the adapted embedding's kNN macro-F1 (the panel's adapted score).

    CELLWEAVE_DATA_DIR=../shared/data OMP_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/embed_precision.py [--adapt] --out embed_precision.json
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

import numpy as np

PRECISIONS = ("32-true", "bf16-mixed")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row's cosine between ``a`` and ``b``."""
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and ranges over datasets; the speed-up leaves out the first dataset (its float32 pass
    warmed the process up)."""
    diff = [r["knn bf16-mixed"] - r["knn 32-true"] for r in rows]
    timed = rows[1:] or rows
    speed = [r["seconds 32-true"] / r["seconds bf16-mixed"] for r in timed]
    adapted = {}
    if all("adapted knn 32-true" in r for r in rows):
        def total(r, p):  # adaptation (its own embedding pass included) + the adapted model's embedding pass
            return r[f"adapt seconds {p}"] + r[f"adapted embed seconds {p}"]

        adapted = {
            "adapted knn 32-true": round(float(np.mean([r["adapted knn 32-true"] for r in rows])), 4),
            "adapted knn bf16-mixed": round(float(np.mean([r["adapted knn bf16-mixed"] for r in rows])), 4),
            "adapted knn difference min": round(float(min(r["adapted knn bf16-mixed"] - r["adapted knn 32-true"]
                                                          for r in rows)), 4),
            "adapted knn difference max": round(float(max(r["adapted knn bf16-mixed"] - r["adapted knn 32-true"]
                                                          for r in rows)), 4),
            "adapt + embed seconds 32-true": round(float(sum(total(r, "32-true") for r in rows)), 1),
            "adapt + embed seconds bf16-mixed": round(float(sum(total(r, "bf16-mixed") for r in rows)), 1),
            "adapt + embed speed-up": round(sum(total(r, "32-true") for r in rows)
                                            / sum(total(r, "bf16-mixed") for r in rows), 2),
        }
    return {
        "datasets": len(rows),
        "knn 32-true": round(float(np.mean([r["knn 32-true"] for r in rows])), 4),
        "knn bf16-mixed": round(float(np.mean([r["knn bf16-mixed"] for r in rows])), 4),
        "knn difference min": round(float(min(diff)), 4),
        "knn difference max": round(float(max(diff)), 4),
        "min cosine": float(min(r["min cosine"] for r in rows)),
        "speed-up (total seconds, first dataset left out)": round(
            sum(r["seconds 32-true"] for r in timed) / sum(r["seconds bf16-mixed"] for r in timed), 2),
        "speed-up min": round(float(min(speed)), 2),
        "speed-up max": round(float(max(speed)), 2),
        **adapted,
    }


def main(argv: list[str] | None = None) -> int:
    from _diagnostics import knn_f1, panel_arguments, panel_selection

    p = panel_arguments(__doc__, "embed_precision.json")
    p.add_argument("--adapt", action="store_true",
                   help="also adapt (the panel's head, seed 0) at each precision and score the adapted embedding")
    args = p.parse_args(argv)

    import pandas as pd
    import torch

    from cellweave._io_utils import atomic_write_json
    from cellweave._system import hardware, keep_torch_threads
    from cellweave.models import CellWeave, environment_versions
    from cellweave.nn import precision_autocast
    from cellweave.train import adapt

    keep_torch_threads()
    model = CellWeave.load(args.model)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for d in panel_selection(args.datasets):
        corpus = model.prepare(d.model_input)
        row: dict[str, Any] = {"dataset": d.name, "cells": int(len(d.labels))}
        embs = {}
        for precision in PRECISIONS:
            with precision_autocast(precision):
                t = time.perf_counter()
                embs[precision] = model.embed_corpus(corpus, progress=False)
                row[f"seconds {precision}"] = round(time.perf_counter() - t, 2)
            row[f"knn {precision}"] = knn_f1(embs[precision], d.labels)
        for precision in PRECISIONS if args.adapt else ():
            t = time.perf_counter()
            adapted = adapt(d.model_input, model=model, batch_key=d.batch_key or d.shift_key, seed=0,
                            precision=precision, progress=False)
            row[f"adapt seconds {precision}"] = round(time.perf_counter() - t, 2)
            with precision_autocast(precision):
                t = time.perf_counter()
                emb = adapted.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0]
                row[f"adapted embed seconds {precision}"] = round(time.perf_counter() - t, 2)
            row[f"adapted knn {precision}"] = knn_f1(emb, d.labels)
        cos = cosines(embs["32-true"], embs["bf16-mixed"])
        row["min cosine"], row["median cosine"] = round(float(cos.min()), 5), round(float(np.median(cos)), 5)
        rows.append(row)
        sys.stderr.write(f"{d.name}: {row}\n")
    if not rows:
        p.error("no panel dataset was found (set CELLWEAVE_DATA_DIR to the mirror, or check --datasets)")
    summary = summarize(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        sys.stdout.write(pd.DataFrame(rows).to_string(index=False) + "\n\n")
    sys.stdout.write("  ".join(f"{k}: {v}" for k, v in summary.items()) + "\n")
    atomic_write_json(args.out, {
        "command": shlex.join(["benchmarks/embed_precision.py", *(sys.argv[1:] if argv is None else argv)]),
        "model": model.name, "model_sha256": model.model_hash, "hardware": hardware(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(), "versions": environment_versions(),
        "seconds": round(time.perf_counter() - t_start, 1), "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
