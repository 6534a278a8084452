"""``cellweave embed``: the model's embedding of every cell (``obsm['X_cellweave']``).

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.tl.embed` (and
:func:`cellweave.tl.embed_store` for a token store).
"""

from __future__ import annotations

import argparse
import logging
import sys

from cellweave._cli._common import add_adapt_options, add_device_options, add_precision_option, adapt_for_command

logger = logging.getLogger("cellweave")


def _global_rank_zero() -> bool:
    """Whether this process writes the outputs: always without distribution; under DDP (whose
    strategy sets the rank when it starts) only global rank 0."""
    if "lightning" not in sys.modules:
        return True
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def cmd_embed(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.models import CellWeave

    from cellweave.data import is_store

    if is_store(args.input):  # a token store: embed in bounded memory
        if args.adapt or args.spatial:
            raise CellWeaveInputError(f"{args.input} is a token store; --adapt and --spatial need the data file itself.")
        if not str(args.out).lower().endswith(".h5ad"):
            raise CellWeaveInputError(f"--out {args.out}: embeddings of a token store are written as .h5ad.")
        out = tl.embed_store(args.input, model=args.model, batch_size=args.batch_size, seed=args.seed,
                             devices=args.devices, accelerator=args.accelerator, num_nodes=args.num_nodes,
                             precision=args.precision)
        if not _global_rank_zero():
            return 0
        io.write(out, args.out)
        logger.info("Wrote %s (%d cells; obsm['X_cellweave'], no X)", args.out, out.n_obs)
        return 0
    if args.adapt and not (str(args.devices) == "1" and args.num_nodes == 1):
        # Each process would adapt its own copy; on a GPU they need not end equal.
        raise CellWeaveInputError("--adapt runs on one device: adapt and save the model first (`cellweave adapt`), "
                                  "then embed with it on several devices.")
    _check_fits_in_memory(args.input)
    data = io.read(args.input)
    model = CellWeave.load(args.model)
    if args.adapt:
        model = adapt_for_command(data, model, args)
    tl.embed(data, model=model, layer=args.layer, batch_size=args.batch_size, seed=args.seed,
             organism=args.organism, spatial=args.spatial, section_key=args.section_key,
             devices=args.devices, accelerator=args.accelerator, num_nodes=args.num_nodes,
             precision=args.precision)
    if not _global_rank_zero():  # every rank holds the embeddings of a multi-device run; one writes them
        return 0
    io.write(data, args.out)
    logger.info("Wrote %s", args.out)
    return 0


#: Peak memory of ``cellweave embed FILE.h5ad`` as a multiple of the bytes of its ``X`` (the file is
#: read whole, then normalized and tokenized: 6.5 GB for 1.6 GB of X at 100k cells x 20k genes,
#: ``benchmarks/perf.py``), plus the model and libraries.
EMBED_MEMORY_FACTOR = 4.0
EMBED_MEMORY_BASE_MB = 600


def memory_to_embed_mb(x_bytes: int) -> float:
    """Estimated peak memory, in MB, of ``cellweave embed`` on a file whose ``X`` takes ``x_bytes``."""
    return EMBED_MEMORY_BASE_MB + EMBED_MEMORY_FACTOR * x_bytes / 2**20


def _check_fits_in_memory(path: str) -> None:
    """Refuse, before reading, a file whose embedding would plainly not fit in the free memory,
    naming the bounded-memory route (a token store) instead of letting the kernel kill the run."""
    from cellweave import io
    from cellweave._exceptions import CellWeaveInputError
    from cellweave._system import available_memory_mb

    x_bytes, avail = io.h5ad_matrix_bytes(path), available_memory_mb()
    if x_bytes is None or avail is None:
        return
    need = memory_to_embed_mb(x_bytes)
    if need > avail:
        raise CellWeaveInputError(
            f"{path} holds {x_bytes / 2**30:.1f} GiB of values; embedding it whole needs about {need / 1024:.0f} GiB "
            f"and {avail / 1024:.0f} GiB are free. Tokenize it in chunks into a token store and embed the store in "
            f"bounded memory: `cellweave prepare {path} --out STORE/ [--model M]`, then "
            "`cellweave embed STORE/ --out OUT.h5ad [--model M]` (OUT.h5ad holds the cells and the embedding, no X)."
        )


def add_embed(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave embed``."""
    from cellweave._cli._grammar import add_input

    add_input(sp, ".h5ad, .h5mu, 10x .h5, 10x mtx folder or .loom, or a token store folder (`cellweave prepare`; "
                  "read in bounded memory, written as .h5ad without X)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--out", required=True, help="output .h5ad (or .h5mu for MuData input)")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--organism", default=None, choices=["human", "mouse"], help="default: inferred")
    sp.add_argument("--batch-size", type=int, default=128)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--spatial", action=argparse.BooleanOptionalAction, default=None,
                    help="append the mean embedding of each cell's nearest cells in space (obsm['spatial'], within a "
                         "section); default: only if the model was pretrained with spatial context")
    sp.add_argument("--section-key", default=None,
                    help="obs column of tissue sections (default: section/library_id/sample/batch)")
    add_device_options(sp)
    add_precision_option(sp, what="the forward pass (and --adapt's embedding pass)")
    add_adapt_options(sp, with_batch_key=True)
