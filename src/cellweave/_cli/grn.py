"""``cellweave grn``: a gene regulatory network from the model (edge table: source, target, score,
group).

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.tl.grn`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cellweave._cli._common import add_precision_option, input_rna, write_tsv
from cellweave._exceptions import CellWeaveInputError

logger = logging.getLogger("cellweave")


def _read_regulators(path: str | None):
    if path is None or path == "all":
        return path
    p = Path(path)
    if not p.is_file():
        raise CellWeaveInputError(f"--regulators {path}: no such file. Give a text file with one gene symbol per "
                                  "line, or 'all'.")
    names = [line.split("\t")[0].strip() for line in p.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise CellWeaveInputError(f"--regulators {path} holds no gene symbols (one per line expected).")
    return names


def cmd_grn(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    adata = input_rna(args.input, args.use_raw)
    model = CellWeave.load(args.model)
    tl.grn(adata, model=model, method=args.method, groupby=args.groupby, regulators=_read_regulators(args.regulators),
           n_cells=args.n_cells, n_top_targets=args.n_top_targets, layer=args.layer, organism=args.organism,
           seed=args.seed, precision=args.precision)
    write_tsv(adata.uns["cellweave_grn"]["edges"], args.out)
    if args.out_h5ad:
        io.write(adata, args.out_h5ad)
        logger.info("Wrote %s (varp: %s)", args.out_h5ad, ", ".join(adata.varp.keys()))
    return 0


def add_grn(sp: argparse.ArgumentParser, model_help: str) -> None:  # noqa: ARG001 - same signature as the others
    """Arguments of ``cellweave grn``."""
    from cellweave._cli._grammar import add_input

    add_input(sp, ".h5ad / .h5mu (RNA counts or log-normalized)")
    sp.add_argument("--model", default=None,
                    help="model folder or shipped model name (default: the shipped gene model cellweave-tiny-genes, "
                    "whose gene tables were learned; the default model's are fixed random codes)")
    sp.add_argument("--out", required=True, help="edge table (.tsv)")
    sp.add_argument("--out-h5ad", default=None, help="also write the data with varp['cellweave_grn...'] here")
    sp.add_argument("--method", default="embedding", choices=["embedding", "attention", "perturbation", "combined"],
                    help="how edges are scored (default: embedding, the best on the Papalexi knock-outs)")
    sp.add_argument("--groupby", default=None, help="obs column: one network per group")
    sp.add_argument("--regulators", default=None,
                    help="text file with one regulator symbol per line, or 'all' (default: the organism's pySCENIC TF list)")
    sp.add_argument("--n-cells", type=int, default=500, help="cells per group for attention/perturbation")
    sp.add_argument("--n-top-targets", type=int, default=50, help="edges per regulator in the table")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--use-raw", action="store_true", help="use .raw (e.g. when X is scaled)")
    sp.add_argument("--organism", default=None, choices=["human", "mouse"], help="default: inferred")
    sp.add_argument("--seed", type=int, default=0)
    add_precision_option(sp, what="the forward passes of --method attention / perturbation / combined")
