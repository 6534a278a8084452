"""``cellweave benchmark --precision bf16-mixed`` against float32: every task's records and seconds.

Runs the benchmark tasks twice with the same model, seeds and mode, once per precision
(:func:`cellweave.bench.run_benchmark`, ``precision=``), or reads two runs made already
(``--runs DIR_32 DIR_BF16``, folders written by ``cellweave benchmark --precision P``), and compares
them task by task: the seconds of each (``summary.json``), and for the records of each method
present in both runs the largest and the mean absolute difference of its values. cellweave's rows
(methods named ``cellweave...``) are what the precision changes; the baselines' rows never run under
bf16, so their differences are the run-to-run noise of the tasks (zero where a task is
deterministic), the floor against which cellweave's are read.

    CELLWEAVE_DATA_DIR=../shared/data OMP_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/bench_precision.py --quick --out bench_precision.json
    .venv/bin/python benchmarks/bench_precision.py --runs OUT_32 OUT_BF16 --out bench_precision.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("32-true", "bf16-mixed")


def is_cellweave(method: str) -> bool:
    """Whether a record's method is one of cellweave's (its rows run at the benchmark's precision)."""
    return method.startswith("cellweave")


def compare(rows: dict[str, list[dict[str, Any]]], seconds: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per task, the two runs' seconds and speed-up, and the differences of the values of cellweave's
    records and of the baselines' that both runs hold (keyed by dataset, split, seed, method and
    metric; NaN values left out). ``rows`` and ``seconds`` map each precision to a run's records and
    per-task seconds."""

    def keyed(records):
        return {(r["task"], r["dataset"], r["split"], r["seed"], r["method"], r["metric"]): r["value"]
                for r in records if r["value"] is not None and np.isfinite(r["value"])}

    a, b = keyed(rows["32-true"]), keyed(rows["bf16-mixed"])
    tasks = sorted({k[0] for k in a} | {k[0] for k in b} | set(seconds["32-true"]) | set(seconds["bf16-mixed"]))
    out = []
    for task in tasks:
        row: dict[str, Any] = {"task": task}
        s32, s16 = seconds["32-true"].get(task), seconds["bf16-mixed"].get(task)
        row["seconds 32-true"], row["seconds bf16-mixed"] = s32, s16
        row["speed-up"] = round(s32 / s16, 2) if s32 and s16 else None
        for name, ours in (("cellweave", True), ("baselines", False)):
            shared = [k for k in a if k[0] == task and k in b and is_cellweave(k[4]) == ours]
            diff = np.array([abs(a[k] - b[k]) for k in shared])
            row[f"{name} records"] = len(shared)
            row[f"{name} identical"] = int((diff == 0).sum())
            row[f"{name} max |difference|"] = round(float(diff.max()), 4) if len(diff) else None
            row[f"{name} mean |difference|"] = round(float(diff.mean()), 4) if len(diff) else None
        only = [k for k in (a.keys() ^ b.keys()) if k[0] == task]
        row["records in one run only"] = len(only)
        out.append(row)
    return out


def read_run(folder: Path) -> tuple[str, list[dict[str, Any]], dict[str, float], dict[str, Any]]:
    """A ``cellweave benchmark`` output folder: its precision, records, per-task seconds and summary."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
        records = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{folder}: not a finished `cellweave benchmark` run ({e}); run it to the end first.")
    return summary.get("precision", "32-true"), records, summary.get("seconds", {}), summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs=2, metavar=("DIR_32", "DIR_BF16"), default=None,
                   help="compare these two finished runs instead of running the tasks")
    p.add_argument("--task", nargs="+", default=["all"], help="tasks to run (default: all but the panel)")
    p.add_argument("--model", default=None, help="model folder or shipped name (default: the shipped model)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--quick", action="store_true", help="the tasks' quick mode (the demo's)")
    p.add_argument("--work", default="bench_precision_runs", help="where the two runs write (without --runs)")
    p.add_argument("--out", default="bench_precision.json")
    args = p.parse_args(argv)

    import pandas as pd

    from cellweave._io_utils import atomic_write_json
    from cellweave._system import keep_torch_threads

    keep_torch_threads()
    t0 = time.perf_counter()
    if args.runs is None:
        from cellweave.bench import run_benchmark

        folders = [Path(args.work) / precision for precision in PRECISIONS]
        for precision, folder in zip(PRECISIONS, folders):
            run_benchmark(args.task, folder, model=args.model, seeds=tuple(args.seeds), quick=args.quick,
                          progress=False, precision=precision)
    else:
        folders = [Path(f) for f in args.runs]
    runs = {}
    for folder in folders:
        precision, records, seconds, summary = read_run(folder)
        runs[precision] = (folder, records, seconds, summary)
    if sorted(runs) != sorted(PRECISIONS):
        p.error(f"the runs' precisions are {', '.join(runs)}; give one run of each of {', '.join(PRECISIONS)}")
    settings = [{k: runs[pr][3].get(k) for k in ("model_sha256", "tasks", "seeds", "quick")} for pr in PRECISIONS]
    if settings[0] != settings[1]:
        p.error(f"the two runs differ beyond the precision: {settings[0]} against {settings[1]}")
    table = compare({pr: runs[pr][1] for pr in PRECISIONS}, {pr: runs[pr][2] for pr in PRECISIONS})
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        sys.stdout.write(pd.DataFrame(table).to_string(index=False) + "\n")
    total = {pr: sum(runs[pr][2].values()) for pr in PRECISIONS}
    sys.stdout.write(f"all tasks: {total['32-true']:.1f} s float32, {total['bf16-mixed']:.1f} s bf16\n")
    atomic_write_json(args.out, {
        "command": shlex.join(["benchmarks/bench_precision.py", *(sys.argv[1:] if argv is None else argv)]),
        "runs": {pr: str(runs[pr][0]) for pr in PRECISIONS}, **settings[0],
        "hardware": {pr: runs[pr][3].get("hardware") for pr in PRECISIONS},
        "versions": runs["32-true"][3].get("versions"), "this script's seconds": round(time.perf_counter() - t0, 1),
        "seconds, all tasks": {pr: round(total[pr], 1) for pr in PRECISIONS}, "tasks compared": table,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
