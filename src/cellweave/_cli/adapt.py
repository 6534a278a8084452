"""``cellweave adapt``: self-supervised adaptation of a pretrained model to the user's cells.

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.train.adapt`. ``--adapt`` on
``embed``, ``annotate``, ``integrate`` and ``map-query`` runs the same adaptation first
(:func:`cellweave._cli._common.adapt_for_command`).
"""

from __future__ import annotations

import argparse
import logging

from cellweave._cli._common import add_precision_option, command_line, max_steps_argument

logger = logging.getLogger("cellweave")


def cmd_adapt(args: argparse.Namespace) -> int:
    from cellweave import io
    from cellweave.models import CellWeave
    from cellweave.train import adapt

    data = io.read(args.input)
    model = CellWeave.load(args.model)
    adapted = adapt(
        data, model=model, method=args.method, batch_key=args.batch_key, layer=args.layer, organism=args.organism,
        max_epochs=args.max_epochs, max_steps=max_steps_argument(args.max_steps), batch_size=args.batch_size,
        lr=args.lr, count_likelihood=args.count_likelihood, n_latent=args.n_latent, start=args.start,
        from_scratch=args.from_scratch, train_feature_tables=args.train_feature_tables, seed=args.seed,
        precision=args.precision, out=args.out, command=command_line(args),
    )
    rec = adapted.card["adaptation"]
    logger.info("Adapted model written to %s (%d steps, %.0f s); use it with --model %s",
                args.out, rec["steps"], rec["seconds"], args.out)
    return 0


def add_adapt(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave adapt``."""
    from cellweave._cli._grammar import add_input, add_renamed
    from cellweave.train import ADAPT_EPOCHS, ADAPT_MAX_STEPS, HEAD_EPOCHS, HEAD_LATENT

    sp.description = ("Adapt a pretrained model to INPUT without labels and save the adapted model folder, which "
                      "every command accepts as --model. --method head (default) keeps the model frozen and trains "
                      "a small variational encoder of its embedding with a negative-binomial decoder of the counts "
                      "(scVI's model; the batch is the decoder's covariate); --method encoder fine-tunes the "
                      "transformer itself (masked value modelling plus the same decoder).")
    add_input(sp, ".h5ad/.h5mu with RNA counts (all cells you will embed, annotate or integrate)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--out", required=True, help="output model folder")
    sp.add_argument("--method", default="head", choices=["head", "encoder"],
                    help="head: a latent readout of the frozen model (seconds to minutes); encoder: fine-tune the "
                         "transformer (minutes per 200 steps on a CPU)")
    sp.add_argument("--batch-key", default=None, help="obs column of batches (a covariate of the count decoder)")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--organism", default=None, choices=["human", "mouse"], help="default: inferred")
    # The verb's own training: --max-epochs / --max-steps, as every verb; --adapt-* is `--adapt` on the others.
    sp.add_argument("--max-epochs", type=int, default=None,
                    help=f"passes over the cells (default: {HEAD_EPOCHS} with --method head, {ADAPT_EPOCHS} with encoder)")
    sp.add_argument("--max-steps", type=int, default=None,
                    help=f"cap on optimizer steps (default: none with --method head; {ADAPT_MAX_STEPS} with encoder, "
                         "about 8 minutes on 2 CPU cores; 0 = no cap)")
    add_renamed(sp, "--adapt-epochs", target="max_epochs", new="--max-epochs", type=int)
    add_renamed(sp, "--adapt-max-steps", target="max_steps", new="--max-steps", type=int)
    sp.add_argument("--batch-size", type=int, default=None, help="cells per step (default: 128 head, 64 encoder)")
    sp.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3 head, 3e-4 encoder)")
    sp.add_argument("--n-latent", type=int, default=HEAD_LATENT,
                    help=f"width of the head's latent, the adapted embedding (--method head; default {HEAD_LATENT})")
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
    add_precision_option(sp, what="the embedding pass (--method head) or the fine-tuning (--method encoder)")
