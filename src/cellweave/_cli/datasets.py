"""``cellweave datasets list|info|fetch``: the dataset registry on the command line.

Listed in :data:`cellweave.cli.VERBS`.
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger("cellweave")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_datasets(args: argparse.Namespace) -> int:
    from cellweave import datasets
    from cellweave._fetch import CACHE_DIR_ENV, DATA_DIR_ENV, cache_dir

    if args.action == "list":
        table = datasets.list()
        if args.pretrain:
            table = table[table["pretrain"]]
        if args.task:
            table = table[[args.task in t for t in table["tasks"]]]
        if args.exclude_task:
            table = table[[args.exclude_task not in t for t in table["tasks"]]]
        if args.names:
            _out(" ".join(table["name"]))
            return 0
        shown = table.assign(
            modalities=[",".join(m) for m in table["modalities"]],
            local=["yes" if p else "no" for p in table["path"]],
            tasks=[",".join(t) for t in table["tasks"]],
            converter=["yes" if c else "no" for c in table["converter"]],
        )[["name", "n_cells", "modalities", "organism", "x_kind", "label_key", "batch_key", "pretrain", "tasks",
           "local", "converter", "licence"]]
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                               "display.max_colwidth", 40):
            _out(shown.to_string(index=False))
        mirror = datasets.data_dir()
        _out(f"\nmirror (${DATA_DIR_ENV}): {mirror or 'not set'}; cache (${CACHE_DIR_ENV}): {cache_dir()}")
        return 0
    if not args.name:
        from cellweave._exceptions import CellWeaveInputError

        raise CellWeaveInputError(f"`cellweave datasets {args.action}` needs a dataset NAME (see `cellweave datasets list`).")
    for name in args.name:
        entry = datasets.info(name)
        if args.action == "info":
            local = str(datasets.path(name)) if datasets.is_available(name) else None
            lines = [
                f"name:       {entry.name}",
                f"file:       {entry.relpath} ({'local: ' + local if local else 'not local'})",
                f"cells:      {entry.n_cells:,}",
                f"modalities: {', '.join(entry.modalities)} ({entry.x_kind})",
                f"organism:   {entry.organism}",
                f"labels:     {entry.label_key or '-'}; batches: {entry.batch_key or '-'}",
                f"tasks:      {', '.join(entry.tasks) or '-'}; pretraining: {'yes' if entry.pretrain else 'no'}",
                f"licence:    {entry.licence}",
                f"citation:   {entry.citation}",
                f"converted:  sha256 {entry.sha256}",
                f"converter:  {'yes (download and convert)' if datasets.has_converter(name) else 'no (mirror or cache only)'}",
                "source files:",
                *(f"  {f.url}  sha256 {f.sha256 or 'not pinned'}" for f in entry.files),
                f"used for:   {entry.used_for}",
            ]
            _out("\n".join(lines))
        else:
            _out(str(datasets.fetch(name, progress=not args.quiet)))
    return 0


def add_datasets(sp: argparse.ArgumentParser, model_help: str) -> None:  # noqa: ARG001 - same signature as the others
    """Arguments of ``cellweave datasets``."""
    sp.add_argument("action", choices=["list", "info", "fetch"], help="list the registry, describe or fetch datasets")
    sp.add_argument("name", nargs="*", help="dataset name(s) for info / fetch")
    sp.add_argument("--pretrain", action="store_true", help="list: only the pretraining corpus")
    sp.add_argument("--task", default=None, help="list: only datasets tagged with this task (panel, spatial, ...)")
    sp.add_argument("--exclude-task", default=None, metavar="TASK",
                    help="list: leave out datasets tagged with this task (e.g. `--pretrain --exclude-task panel`: "
                         "the corpus of the shipped model, which the development panel never trains on)")
    sp.add_argument("--names", action="store_true", help="list: print the names only, space-separated")
