"""``cellweave adapt``: self-supervised adaptation of a pretrained model to the user's cells.

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.train.adapt`. ``--adapt`` on
``embed``, ``annotate``, ``integrate`` and ``map-query`` runs the same adaptation first
(:func:`cellweave._cli._common.adapt_for_command`).
"""

from __future__ import annotations

import argparse
import logging

from cellweave._cli._common import command_line

logger = logging.getLogger("cellweave")


def cmd_adapt(args: argparse.Namespace) -> int:
    from cellweave import io
    from cellweave.models import CellWeave
    from cellweave.train import adapt

    data = io.read(args.input)
    model = CellWeave.load(args.model)
    adapted = adapt(
        data, model=model, batch_key=args.batch_key, layer=args.layer, organism=args.organism,
        max_epochs=args.max_epochs, max_steps=args.max_steps or None, batch_size=args.batch_size,
        lr=args.lr, count_likelihood=args.count_likelihood, start=args.start,
        from_scratch=args.from_scratch, train_feature_tables=args.train_feature_tables, seed=args.seed,
        out=args.out, command=command_line(args),
    )
    rec = adapted.card["adaptation"]
    logger.info("Adapted model written to %s (%d steps, %.0f s); use it with --model %s",
                args.out, rec["steps"], rec["seconds"], args.out)
    return 0


def add_adapt(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave adapt``."""
    from cellweave._cli._grammar import add_input, add_renamed
    from cellweave.train import ADAPT_EPOCHS, ADAPT_MAX_STEPS

    sp.description = ("Fine-tune a pretrained model self-supervised on INPUT (masked value modelling plus a "
                      "negative-binomial count decoder with the batch as covariate) and save the adapted model "
                      "folder, which every command accepts as --model.")
    add_input(sp, ".h5ad/.h5mu with RNA counts (all cells you will embed, annotate or integrate)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--out", required=True, help="output model folder")
    sp.add_argument("--batch-key", default=None, help="obs column of batches (a covariate of the count decoder)")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--organism", default=None, choices=["human", "mouse"], help="default: inferred")
    # The verb's own training: --max-epochs / --max-steps, as every verb; --adapt-* is `--adapt` on the others.
    sp.add_argument("--max-epochs", type=int, default=ADAPT_EPOCHS, help="passes over the cells")
    sp.add_argument("--max-steps", type=int, default=ADAPT_MAX_STEPS,
                    help=f"cap on optimizer steps (default: {ADAPT_MAX_STEPS}, about 8 minutes on 2 CPU cores; "
                         "0 = no cap)")
    add_renamed(sp, "--adapt-epochs", target="max_epochs", new="--max-epochs", type=int)
    add_renamed(sp, "--adapt-max-steps", target="max_steps", new="--max-steps", type=int)
    sp.add_argument("--batch-size", type=int, default=64)
    sp.add_argument("--lr", type=float, default=3e-4)
    sp.add_argument("--count-likelihood", action=argparse.BooleanOptionalAction, default=True,
                    help="decode the counts of 2,000 highly variable genes (negative binomial) from the cell "
                         "embedding; needs raw counts")
    sp.add_argument("--start", default="pretrained", choices=["pretrained", "random", "genes"],
                    help="start from the model's weights, from random weights of the same architecture (the "
                         "control for pretraining), or from random weights with the model's pretrained gene "
                         "embeddings")
    sp.add_argument("--from-scratch", action="store_true", help="the same as --start random")
    sp.add_argument("--train-feature-tables", action=argparse.BooleanOptionalAction, default=True,
                    help="train the per-feature tables (gene embeddings) with the rest of the network, also in a "
                         "model pretrained with fixed tables; --no-train-feature-tables keeps them as they are")
    sp.add_argument("--seed", type=int, default=0)
