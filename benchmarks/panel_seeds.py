"""Issue 12, points 1-3: pool the seeds of separate panel runs of one model into mean ± sd over seeds.

The panel (``cellweave benchmark --task panel --seeds S ...``) writes ``results.json`` and, beside it,
``summary.json`` naming the model's hash. A panel of three seeds takes three times as long as one, so
the seeds of one model are often run as separate commands (on one thread each, side by side). This
script reads their ``results.json`` files, refuses files of different models, settings (quick,
precision) or sets of methods, and seeds that two files both hold, and prints, per protocol and
method, the mean over datasets for each seed and the mean ± sd over seeds
(:func:`cellweave.bench.tasks.panel.panel_seed_table`, the table a single panel run with several
seeds prints and writes as ``panel.json``'s ``"over seeds"``). Writes ``--out`` (JSON)::

    .venv/bin/python benchmarks/panel_seeds.py benchmarks/published/panel_path_vicreg_thin_quick/results.json \\
        benchmarks/published/panel_path_vicreg_thin_quick/seed1/results.json \\
        benchmarks/published/panel_path_vicreg_thin_quick/seed2/results.json --out panel_seeds.json

Nothing is chosen here: it only averages what the runs measured.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

#: ``summary.json`` fields that must agree for seeds to be pooled.
SAME = ("model_sha256", "quick", "precision")


def _display(path: Path) -> str:
    """A path as given, relative to the working directory where it lies below it (no absolute paths in
    published files)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_runs(paths: list[str]) -> tuple[list, dict]:
    """The records of every ``results.json`` in ``paths`` and the settings they share; a clear error
    where they are not runs of one model with one set of methods, or where a seed is in two files."""
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.bench._results import records_from_rows

    records, settings, methods, seeds_of = [], None, None, {}
    for name in paths:
        path = Path(name)
        summary_path = path.with_name("summary.json")
        try:
            rows = json.loads(path.read_text())
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError) as e:
            raise CellWeaveInputError(f"{path}: cannot read it or the summary.json beside it ({e}); pass the "
                                      "results.json of a panel run (cellweave benchmark --task panel --out DIR).") from e
        if "panel" not in summary.get("tasks", []):
            raise CellWeaveInputError(f"{summary_path}: not a panel run (tasks {summary.get('tasks')}).")
        these = {k: summary.get(k) for k in SAME}
        if settings is None:
            settings, first = these, path
        elif these != settings:
            diff = ", ".join(f"{k}: {settings[k]!r} in {first}, {these[k]!r} here" for k in SAME
                             if these[k] != settings[k])
            raise CellWeaveInputError(f"{path}: another model or settings than the first file ({diff}); pool "
                                      "only seeds of one model run the same way.")
        run = [r for r in records_from_rows(rows, path) if r.task == "panel"]
        these_methods = sorted({r.method for r in run})
        if methods is None:
            methods = these_methods
        elif these_methods != methods:
            raise CellWeaveInputError(f"{path}: other methods than the first file (here {these_methods}, "
                                      f"there {methods}); run every seed with the same --adapt variants.")
        for seed in sorted({r.seed for r in run}):
            if seed in seeds_of:
                raise CellWeaveInputError(f"seed {seed} is in both {seeds_of[seed]} and {path}; pass each seed once.")
            seeds_of[seed] = path
        records += run
    return records, {**(settings or {}), "seeds": sorted(seeds_of)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="results.json of panel runs of one model (each with its summary.json)")
    p.add_argument("--out", default="panel_seeds.json")
    args = p.parse_args()

    import pandas as pd

    from cellweave._exceptions import CellWeaveInputError
    from cellweave._io_utils import atomic_write_json
    from cellweave.bench.tasks.panel import panel_seed_table

    try:
        records, settings = load_runs(args.results)
    except CellWeaveInputError as e:
        sys.exit(f"error: {e}")
    table = panel_seed_table(records)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(f"model {settings['model_sha256'][:12]}, seeds {settings['seeds']}: mean over datasets, "
              "then mean ± sd over seeds")
        print(table[["protocol", "method", "datasets", "seeds", "mean", "sd"]].round(3).to_string(index=False))
    atomic_write_json(args.out, {
        "command": shlex.join(_display(Path(a)) if Path(a).exists() else a for a in sys.argv),
        "results": [_display(Path(r)) for r in args.results], **settings,
        "over seeds": table.astype(object).where(table.notna(), None).to_dict(orient="records"),
    })


if __name__ == "__main__":
    main()
