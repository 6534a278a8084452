"""Embedding under bf16 autocast against float32, on the development panel: the same cells, the
same model, the seconds of each embedding pass and the zero-shot kNN macro-F1 of each embedding.

``cellweave embed --precision bf16-mixed`` (``tl.embed(precision=...)``) runs the forward pass
under bf16 autocast; this script measures what that costs in quality and buys in time on the
machine it runs on. Per panel dataset (seed 0): the shipped model's (or ``--model``'s) embedding
of the prepared cells in float32 and in bf16, each timed over ``CellWeave.embed_corpus``
(tokenizing and collating included; the float32 pass first, so the first dataset's float32 time
includes the warm-up and is left out of the speed-up summary), the kNN macro-F1 of each (the
panel's zero-shot score, 5-fold) and the cosine of each cell's two embeddings.

    CELLWEAVE_DATA_DIR=../shared/data OMP_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/embed_precision.py --out embed_precision.json
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
    }


def main(argv: list[str] | None = None) -> int:
    from _diagnostics import knn_f1, panel_arguments, panel_selection

    p = panel_arguments(__doc__, "embed_precision.json")
    args = p.parse_args(argv)

    import pandas as pd
    import torch

    from cellweave._io_utils import atomic_write_json
    from cellweave._system import hardware, keep_torch_threads
    from cellweave.models import CellWeave, environment_versions
    from cellweave.nn import precision_autocast

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
