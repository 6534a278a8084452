"""``cellweave markers``: marker genes per group by attribution through the model.

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.tl.markers`.
"""

from __future__ import annotations

import argparse
import logging

from cellweave._cli._common import input_rna, write_tsv

logger = logging.getLogger("cellweave")


def cmd_markers(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    adata = input_rna(args.input, args.use_raw)
    model = CellWeave.load(args.model)
    tl.markers(adata, groupby=args.groupby, model=model, method=args.method, n_cells_per_group=args.n_cells,
               n_steps=args.n_steps, layer=args.layer, organism=args.organism, seed=args.seed)
    df = tl.markers_frame(adata)
    if args.n_top:
        df = df[df["rank"] <= args.n_top]
    write_tsv(df, args.out)
    for group, sub in df.groupby("group", sort=False):
        logger.info("%s: %s", group, ", ".join(sub["gene"].head(5)))
    if args.out_h5ad:
        io.write(adata, args.out_h5ad)
        logger.info("Wrote %s (uns['cellweave_markers'])", args.out_h5ad)
    return 0


def add_markers(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave markers``."""
    from cellweave._cli._grammar import add_input

    add_input(sp, ".h5ad / .h5mu (RNA counts or log-normalized)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--groupby", required=True, help="obs column with the groups")
    sp.add_argument("--out", required=True, help="marker table (.tsv: group, rank, gene, score)")
    sp.add_argument("--out-h5ad", default=None, help="also write the data with uns['cellweave_markers'] here")
    sp.add_argument("--method", default="integrated_gradients", choices=["integrated_gradients", "deletion"])
    sp.add_argument("--n-cells", type=int, default=50, help="cells per group averaged over")
    sp.add_argument("--n-steps", type=int, default=16, help="integrated-gradients steps (a count, not a training budget)")
    sp.add_argument("--n-top", type=int, default=100, help="markers per group in the table (0 = all genes)")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--use-raw", action="store_true", help="use .raw (e.g. when X is scaled)")
    sp.add_argument("--organism", default=None, choices=["human", "mouse"], help="default: inferred")
    sp.add_argument("--seed", type=int, default=0)
