"""``cellweave annotate``: transfer labels from a labelled reference to the query cells.

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.tl.annotate`.
"""

from __future__ import annotations

import argparse
import logging

from cellweave._cli._common import (
    CROSS_FIT,
    adapt_on_both,
    add_adapt_options,
    add_precision_option,
    add_query_and_reference,
    add_transfer_options,
)

logger = logging.getLogger("cellweave")


def cmd_annotate(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    reference = io.read(args.reference)
    query = io.read(args.input)
    model = CellWeave.load(args.model)
    if args.adapt:
        model = adapt_on_both(reference, query, model, args)
    tl.annotate(query, reference=reference, label_key=args.label_key, model=model,
                novelty_quantile=args.novelty_quantile, novelty_score=args.novelty_score, batch_key=args.batch_key,
                align=args.align, shift_adjust=args.shift_adjust, softmax_when_far=args.softmax_when_far,
                sharpen_when_far=args.sharpen_when_far, weight_parts=args.weight_parts,
                sharpen_when_shifted=args.sharpen_when_shifted, cross_fit=CROSS_FIT[args.cross_fit],
                reference_token_space=args.reference_token_space,
                finetune=args.finetune, finetune_epochs=args.max_epochs,
                spatial=args.spatial, spatial_key=args.spatial_key, section_key=args.section_key,
                n_spatial_neighbors=args.n_spatial_neighbors, seed=args.seed, precision=args.precision)
    counts = query.obs["cellweave_prediction"].value_counts()
    for label, n in counts.items():
        logger.info("predicted %s: %d cells", label, n)
    io.write(query, args.out)
    logger.info("Wrote %s", args.out)
    return 0


def add_annotate(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave annotate``."""
    from cellweave._cli._grammar import add_renamed

    add_query_and_reference(sp, query_help="query .h5ad to annotate", reference_help="labelled reference .h5ad")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--out", required=True, help="output .h5ad (the annotated query)")
    add_transfer_options(sp)
    sp.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=False,
                    help="fine-tune the encoder on the reference labels (default: --no-finetune, a classifier on "
                         "frozen embeddings)")
    sp.add_argument("--max-epochs", type=int, default=3, help="epochs of the fine-tuning (with --finetune)")
    add_renamed(sp, "--finetune-epochs", target="max_epochs", new="--max-epochs", type=int)
    sp.add_argument("--spatial", action=argparse.BooleanOptionalAction, default=None,
                    help="append to each cell's embedding the mean embedding of its nearest cells in space (within "
                         "a section; reference and query each on their own); default: only if reference and query "
                         "both have obsm[SPATIAL_KEY]")
    sp.add_argument("--spatial-key", default="spatial", help="obsm key of the coordinates (default: spatial)")
    sp.add_argument("--section-key", default=None,
                    help="obs column of tissue sections (default: section/library_id/sample/batch)")
    sp.add_argument("--n-spatial-neighbors", type=int, default=None,
                    help="neighbours averaged (default: the model's setting, else 10)")
    sp.add_argument("--seed", type=int, default=0)
    add_precision_option(sp, what="the embedding passes (and --adapt's, --finetune's training)")
    add_adapt_options(sp, with_batch_key=True)
