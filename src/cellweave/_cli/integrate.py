"""``cellweave integrate``: a batch-corrected embedding (``obsm['X_cellweave_integrated']``).

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.tl.integrate`.
"""

from __future__ import annotations

import argparse
import logging

from cellweave._cli._common import adapt_for_command, add_adapt_options, add_precision_option

logger = logging.getLogger("cellweave")


def cmd_integrate(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    data = io.read(args.input)
    model = CellWeave.load(args.model)
    if args.adapt:
        model = adapt_for_command(data, model, args, batch_key=args.batch_key)
    tl.integrate(data, batch_key=args.batch_key, model=model, method=args.method, seed=args.seed,
                 precision=args.precision)
    io.write(data, args.out)
    logger.info("Wrote %s (obsm['X_cellweave_integrated'])", args.out)
    return 0


def add_integrate(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave integrate``."""
    from cellweave._cli._grammar import add_input

    add_input(sp, ".h5ad with RNA counts and a batch column")
    sp.add_argument("--batch-key", required=True, help="obs column with the batch of each cell")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--method", default="harmony", choices=["harmony", "adversarial"],
                    help="correction on top of the embedding (default: harmony; see the benchmark)")
    sp.add_argument("--out", required=True, help="output .h5ad")
    sp.add_argument("--seed", type=int, default=0)
    add_precision_option(sp, what="the embedding pass (and --adapt's)")
    add_adapt_options(sp, with_batch_key=False)
