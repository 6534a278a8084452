"""``cellweave prepare``: build a sharded, memory-mapped token store from files larger than memory.

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.data.prepare_store`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cellweave._cli._common import add_soma_arguments, soma_selection

logger = logging.getLogger("cellweave")


def cmd_prepare(args: argparse.Namespace) -> int:
    from cellweave import datasets as registry
    from cellweave.data import DEFAULT_CHUNK_SIZE, is_soma, prepare_store
    from cellweave.models import CellWeave

    # A registered dataset's name (`cellweave datasets list`) stands for its file, as in `pretrain`;
    # a SOMA experiment's URI stays a string (it may be remote).
    inputs = [p if is_soma(p) else registry.path(p) if not Path(p).exists() and p in registry.REGISTRY else Path(p)
              for p in args.input]
    model = CellWeave.load(args.model)  # only its vocabulary, value encoding and generated codes are used
    encoding = model.config.value_encoding
    logger.info("Tokens for %s: vocabulary of %d features, value encoding %r", model.name, len(model.vocab), encoding)
    manifest = prepare_store(inputs, args.out, vocab=model.stored_vocab, value_encoding=encoding,
                             chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE, append=args.append,
                             soma=soma_selection(args), generate_codes=model.code_modalities)
    for source in manifest["sources"]:
        cov = ", ".join(f"{c['modality']} {c['n_in_vocab']:,}/{c['n_features']:,}" for c in source["coverage"])
        logger.info("  %-40s %9d cells  %3d shards  features in vocabulary: %s", source["name"], source["n_cells"],
                    len(source["shards"]), cov)
    logger.info("Token store %s: %d sources, %d cells; train on it with the model %s", args.out,
                len(manifest["sources"]), manifest["n_cells"], model.name)
    model.warn_store_left_out({src["name"]: src["coverage"] for src in manifest["sources"]}, args.out)
    return 0


def add_prepare(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave prepare``."""
    from cellweave._cli._grammar import add_input
    from cellweave.data import DEFAULT_CHUNK_SIZE

    sp.description = (
        "Normalize the cells of INPUT files and map them onto a model's vocabulary once, writing a token store "
        "folder (shards of .npy arrays and a manifest) that pretraining reads without holding the corpus in "
        "memory. .h5ad files are read in chunks of --chunk-size cells; .h5mu and 10x files are read whole; "
        "TileDB-SOMA experiments (a local folder, or a URI such as s3://... or tiledb://...) are read in chunks "
        "too (see --soma-*). Rerun with --append to add files or to finish a killed run. For a model that gives "
        "features outside its vocabulary generated codes (the default model), the store keeps those features too "
        "(genes, proteins, peaks), so "
        "`cellweave embed STORE` embeds as `cellweave embed FILE` does.")
    add_input(sp, ".h5ad / .h5mu / 10x .h5 or mtx folder, a TileDB-SOMA experiment, or a registered dataset's "
                  "name", nargs="+")
    sp.add_argument("--out", required=True, help="token store folder (new, empty, or an existing store with --append)")
    sp.add_argument("--model", default=None, help=model_help + "; its vocabulary and value encoding make the tokens")
    sp.add_argument("--append", action="store_true",
                    help="add the inputs to an existing store (sources already in it are skipped); also finishes a "
                         "prepare that was killed")
    sp.add_argument("--chunk-size", type=_positive_int, default=DEFAULT_CHUNK_SIZE,
                    help=f"cells read and written at once, and per shard (default: {DEFAULT_CHUNK_SIZE})")
    add_soma_arguments(sp)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1")
    return value
