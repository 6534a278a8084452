"""``cellweave demo``: embed every available registered dataset and write an HTML report.

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.demo.run_demo`.
"""

from __future__ import annotations

import argparse


def cmd_demo(args: argparse.Namespace) -> int:
    from cellweave.demo import run_demo

    run_demo(args.out, model=args.model, from_scratch=args.from_scratch, max_epochs=args.max_epochs,
             max_cells_per_dataset=args.max_cells_per_dataset, seed=args.seed,
             benchmark=not args.no_benchmark, adapt=not args.no_adapt)
    return 0


def add_demo(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave demo``."""
    sp.add_argument("--out", default="demo_out", help="output folder (report.html, embeddings, metrics)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--from-scratch", action="store_true", help="pretrain the tiny preset on the bundled corpus first")
    sp.add_argument("--max-epochs", type=int, default=None, help="epochs for --from-scratch (default: the demo's setting)")
    sp.add_argument("--max-cells-per-dataset", type=int, default=None, help="cap per dataset for --from-scratch (default: the demo's setting)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--no-benchmark", action="store_true", help="skip the quick benchmark sections")
    sp.add_argument("--no-adapt", action="store_true",
                    help="datasets of one tissue: show the zero-shot embedding only, without adapting the model to "
                         "them (saves several minutes)")
