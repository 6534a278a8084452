"""``cellweave benchmark``: cellweave and the baselines on the same splits (results.json, report.html).

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.bench.run_benchmark`. Task names
are verb names (``--task map-query``); the old names of :data:`cellweave.bench.RENAMED_TASKS` are
accepted but not shown.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger("cellweave")


def cmd_benchmark(args: argparse.Namespace) -> int:
    from cellweave.bench import comparison_table, run_benchmark

    records = run_benchmark(
        args.task, args.out, model=args.model, seeds=tuple(args.seeds), quick=args.quick, data=args.input,
        label_key=args.label_key, batch_key=args.batch_key, adapt=tuple(args.adapt or ()),
        adapt_max_steps=args.adapt_max_steps, adapt_lr=args.adapt_lr, resume=args.resume, precision=args.precision,
    )
    table = comparison_table(records)
    if not table.empty:
        logger.info("Results (mean ± sd over seeds):\n%s", table.to_string(index=False))
    return 0


def add_benchmark(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave benchmark``."""
    from cellweave._cli._common import add_precision_option
    from cellweave._cli._grammar import ListArgument, add_input, add_renamed
    from cellweave.bench import RENAMED_TASKS, TASKS

    add_input(sp, "run the protocol on this file instead of the registered datasets", required=False)
    add_renamed(sp, "--data", target="input", new="INPUT (the positional argument)")
    shown = [*TASKS, "all"]  # the old names run too (run_benchmark warns), but --help shows today's
    sp.add_argument("--task", action=ListArgument, default=["all"], choices=[*shown, *RENAMED_TASKS],
                    metavar="{" + ",".join(shown) + "}", help="task(s) to run")
    sp.add_argument("--out", required=True, help="output folder")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--seeds", action=ListArgument, item_type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    sp.add_argument("--quick", action="store_true", help="one seed and fewer folds/datasets (the demo's setting)")
    sp.add_argument("--label-key", default=None, help="obs column with cell labels (with INPUT)")
    sp.add_argument("--batch-key", default=None, help="obs column with batches (with INPUT)")
    sp.add_argument("--adapt", action=ListArgument, default=None, choices=["pretrained", "scratch", "untrained", "genes"],
                    help="panel: also score the model adapted to each dataset (pretrained), the same adaptation "
                         "from random weights (scratch), the architecture with random weights, untrained, and the same "
                         "adaptation from random weights with the pretrained gene embeddings (genes)")
    sp.add_argument("--adapt-max-steps", type=int, default=None,
                    help="panel: step budget of each adaptation (default: cellweave adapt's)")
    sp.add_argument("--adapt-lr", type=float, default=None,
                    help="panel: learning rate of each adaptation (default: cellweave adapt's)")
    add_precision_option(sp, what="cellweave's forward passes in every task (the baselines are unchanged)")
    sp.add_argument("--resume", action="store_true",
                    help="panel: continue a stopped run in the same --out (same model and settings) from the "
                         "datasets and seeds it finished (kept in OUT/panel_partial.json)")
