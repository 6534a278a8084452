"""``cellweave map-query``: map query cells onto a labelled reference (the reference is only read).

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.tl.map_query`.
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


def cmd_map_query(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    reference = io.read(args.reference)  # only read: the reference file is never written
    query = io.read(args.input)
    model = CellWeave.load(args.model)
    if args.adapt:
        model = adapt_on_both(reference, query, model, args)
    tl.map_query(query, reference=reference, label_key=args.label_key, model=model, n_neighbors=args.n_neighbors,
                 index=args.index, novelty_quantile=args.novelty_quantile, novelty_score=args.novelty_score,
                 batch_key=args.batch_key, shift_adjust=args.shift_adjust, softmax_when_far=args.softmax_when_far,
                 sharpen_when_far=args.sharpen_when_far, weight_parts=args.weight_parts,
                 sharpen_when_shifted=args.sharpen_when_shifted, cross_fit=CROSS_FIT[args.cross_fit],
                 align=args.align,
                 reference_token_space=args.reference_token_space, seed=args.seed, precision=args.precision)
    for label, n in query.obs["cellweave_prediction"].value_counts().items():
        logger.info("mapped %s: %d cells", label, n)
    io.write(query, args.out)
    logger.info("Wrote %s", args.out)
    return 0


def add_map_query(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave map-query``."""
    add_query_and_reference(sp, query_help="query .h5ad", reference_help="labelled reference .h5ad (read only)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--n-neighbors", type=int, default=15)
    sp.add_argument("--index", default="faiss", choices=["faiss", "pynndescent"], help="nearest-neighbour library")
    add_transfer_options(sp)
    sp.add_argument("--out", required=True, help="output .h5ad (the mapped query)")
    sp.add_argument("--seed", type=int, default=0)
    add_precision_option(sp, what="the embedding passes (and --adapt's)")
    add_adapt_options(sp, with_batch_key=True)
