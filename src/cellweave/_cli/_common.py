"""Helpers that several verbs of the command line share: reading inputs, the ``--adapt`` step, the
device and ``--soma-*`` options, the command as typed, tables written as ``.tsv``.

A helper used by one verb lives in that verb's module; the top-level parser and the output checks
live in :mod:`cellweave.cli`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

#: ``--cross-fit``'s choices and the ``cross_fit`` value of :class:`cellweave.tl.LabelTransfer` each gives.
CROSS_FIT = {"auto": "auto", "on": True, "off": False}

logger = logging.getLogger("cellweave")


def command_line(args: argparse.Namespace) -> str:
    """The command as the user typed it (``cellweave ...``), for model cards and records; from the
    argument list :func:`cellweave.cli.main` parsed, which is not ``sys.argv`` when called from Python."""
    import shlex
    import sys

    argv = getattr(args, "argv", None)
    return "cellweave " + shlex.join(sys.argv[1:] if argv is None else argv)


def read_named(paths: list[str]) -> tuple[dict, dict[str, str]]:
    """Read input files into {name: AnnData|MuData} and their SHA-256.

    An argument that is not a file but a registered dataset's name (``cellweave datasets list``)
    is loaded through the registry (mirror, cache or download).
    """
    from cellweave import datasets as registry
    from cellweave import io
    from cellweave._io_utils import sha256_file

    datasets, hashes = {}, {}
    for p in paths:
        registered = not Path(p).exists() and p in registry.REGISTRY
        name = p if registered else Path(p).name.split(".")[0]
        if name in datasets:
            name = f"{name}_{len(datasets)}"
        if registered:
            datasets[name] = registry.load(p)
            hashes[name] = sha256_file(registry.path(p))
        else:
            datasets[name] = io.read(p)
            hashes[name] = sha256_file(p)
    return datasets, hashes


def add_device_options(sp: argparse.ArgumentParser) -> None:
    """Where a command runs: Lightning's accelerator, devices and nodes."""
    sp.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    sp.add_argument("--devices", default=1, help="Lightning devices per node (e.g. 2 for data parallelism; -1: all)")
    sp.add_argument("--num-nodes", type=int, default=1, help="machines (e.g. SLURM nodes), each with --devices devices")


def add_precision_option(sp: argparse.ArgumentParser, *, what: str = "the forward passes") -> None:
    """``--precision`` of the verbs that run the model's forward passes: ``embed``, ``annotate``,
    ``map-query``, ``integrate``, ``adapt`` (and their ``--adapt``), ``impute``, ``grn``, ``perturb``,
    ``finetune-perturb`` and ``predict-perturb``, and ``benchmark`` (cellweave's passes in every task)."""
    # The choices are cellweave.nn.PRECISIONS, spelled out so that --help needs no torch import (tested).
    sp.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"],
                    help=f"bf16-mixed: {what} under bf16 autocast (weights stay float32); faster on GPUs and on "
                         "CPUs with bf16 matrix units (e.g. AMX); default 32-true")


# --- adaptation: `cellweave adapt` and the --adapt of embed, annotate, map-query, integrate -----------

def max_steps_argument(value: int | None) -> int | None:
    """``--max-steps`` / ``--adapt-max-steps`` as :func:`cellweave.train.adapt` takes it: ``None`` (the
    method's default cap) stays, 0 means no cap."""
    if value is None:
        return None
    return int(value) if int(value) != 0 else 2**62  # a negative value reaches adapt, which refuses it


def add_budget_options(sp: argparse.ArgumentParser, *, with_batch_key: bool = True) -> None:
    """The adaptation's method and budget options, shared by every verb's ``--adapt``."""
    from cellweave.train import ADAPT_EPOCHS, ADAPT_MAX_STEPS, HEAD_EPOCHS

    sp.add_argument("--adapt-method", default="head", choices=["head", "encoder"],
                    help="how to adapt (as `cellweave adapt --method`): head, a latent readout of the frozen model "
                         "(default); encoder, fine-tune the transformer")
    sp.add_argument("--adapt-epochs", type=int, default=None,
                    help=f"passes over the cells when adapting (default: {HEAD_EPOCHS} head, {ADAPT_EPOCHS} encoder)")
    sp.add_argument("--adapt-max-steps", type=int, default=None,
                    help=f"cap on optimizer steps when adapting (default: none for head; {ADAPT_MAX_STEPS} for encoder, "
                         "about 8 minutes on 2 CPU cores; 0 = no cap)")
    if with_batch_key:
        sp.add_argument("--adapt-batch-key", default=None,
                        help="obs column of batches, a covariate of the count decoder when adapting (default: none)")


def add_transfer_options(sp: argparse.ArgumentParser) -> None:
    """The label-transfer options that ``annotate`` and ``map-query`` share: the "unknown" rule
    (:class:`cellweave.tl.LabelTransfer`), Harmony alignment and the query's token space."""
    from cellweave._constants import NOVELTY_SCORES

    sp.add_argument("--novelty-quantile", type=float, default=0.99,
                    help="quantile of held-out reference novelty used as the 'unknown' threshold")
    sp.add_argument("--novelty-score", choices=NOVELTY_SCORES, default=NOVELTY_SCORES[0],
                    help="combined+composition: mean conformal rank of the kNN distance to the reference, of one "
                         "minus the top class probability and of how much the query cells are each other's "
                         "neighbours rather than the reference's (needs 50 query cells); combined: the first two "
                         "(the default before); distance, softmax or composition: one of them alone; mahalanobis: "
                         "distance to the nearest class mean in the classes' shared covariance; "
                         "distance+mahalanobis+softmax: the mean rank of the three (default: combined+composition)")
    sp.add_argument("--batch-key", default=None,
                    help="obs column of the reference's batches: calibrate the 'unknown' threshold on whole batches "
                         "held out in turn, so a query shifted as much as they differ is not called unknown")
    sp.add_argument("--shift-adjust", action=argparse.BooleanOptionalAction, default=True,
                    help="scale the query's distances to the reference down by how much their median exceeds the "
                         "held-out reference cells' before the 'unknown' threshold, so a shifted query of known "
                         "types is not called unknown wholesale (default: on; needs 50 query cells)")
    sp.add_argument("--softmax-when-far", action=argparse.BooleanOptionalAction, default=True,
                    help="when the typical query cell is farther from the reference than the 'unknown' threshold, "
                         "decide 'unknown' by the classifier's top class probability alone, since distance cannot "
                         "tell a shifted query from new types (default: on; --no-softmax-when-far: the rule before)")
    sp.add_argument("--sharpen-when-far", action=argparse.BooleanOptionalAction, default=True,
                    help="with --softmax-when-far, when it applies: sharpen the classifier's probabilities on the "
                         "query until its median uncertainty is the held-out reference cells', so a query the "
                         "classifier is unsure of as a whole (another species) is not called unknown wholesale "
                         "(default: on; labels unchanged)")
    sp.add_argument("--weight-parts", action=argparse.BooleanOptionalAction, default=True,
                    help="weight the parts of the novelty score (distance, max-softmax, composition) by how well "
                         "each tells the reference's own types left out in turn (default: on; --no-weight-parts: "
                         "equal weights, the rule before)")
    sp.add_argument("--sharpen-when-shifted", action=argparse.BooleanOptionalAction, default=True,
                    help="sharpen the classifier's probabilities on any query it is less sure of than of held-out "
                         "reference cells, not only a far one, so a query shifted a little in every part of the "
                         "novelty score is not called unknown for the classifier's doubt alone (default: on; "
                         "with --shift-adjust, a score of several parts and 50 query cells; labels unchanged; "
                         "--no-sharpen-when-shifted: the rule before)")
    sp.add_argument("--cross-fit", choices=tuple(CROSS_FIT), default="auto",
                    help="calibrate the 'unknown' threshold on every reference cell, each held out once in 5 "
                         "folds (auto, the default: when the held-out 20%% would be under 500 cells; on: always; "
                         "off: one held-out 20%%, the rule before); --batch-key calibrates on batches instead")
    sp.add_argument("--align", action=argparse.BooleanOptionalAction, default=False,
                    help="correct reference and query embeddings together by Harmony first, so known types in a "
                         "new state (another protocol, study or condition) are not called unknown")
    sp.add_argument("--reference-token-space", action=argparse.BooleanOptionalAction, default=True,
                    help="tokenize the query as the reference: tokens from the reference's most variable genes, "
                         "ranked by the reference's gene means (default: on; --no-reference-token-space: the "
                         "query's own)")


def add_adapt_options(sp: argparse.ArgumentParser, *, with_batch_key: bool = True) -> None:
    """``--adapt`` and its budget, on the verbs that can adapt the model first."""
    sp.add_argument("--adapt", action="store_true",
                    help="first adapt the model to these cells without labels (as `cellweave adapt`; minutes on a "
                         "CPU), then run with the adapted model")
    add_budget_options(sp, with_batch_key=with_batch_key)


def adapt_for_command(data, model, args: argparse.Namespace, *, batch_key: str | None = None):
    """The model adapted to ``data`` with the command's ``--adapt-*`` options."""
    from cellweave.train import adapt

    key = getattr(args, "adapt_batch_key", None) or batch_key
    logger.info("Adapting %s to %d cells (--adapt, method %s; batch covariate: %s)", model.name, data.n_obs,
                args.adapt_method, key or "none")
    return adapt(data, model=model, method=args.adapt_method, batch_key=key, max_epochs=args.adapt_epochs,
                 max_steps=max_steps_argument(args.adapt_max_steps),
                 seed=getattr(args, "seed", 0), layer=getattr(args, "layer", None),
                 precision=getattr(args, "precision", "32-true"), command=command_line(args))


def adapt_on_both(reference, query, model, args: argparse.Namespace):
    """``--adapt`` of ``annotate`` and ``map-query``: adapt on reference and query cells together (their
    shared genes), with reference/query as the count decoder's batch covariate unless
    ``--adapt-batch-key`` names an obs column both have."""
    import anndata as ad

    from cellweave._exceptions import CellWeaveInputError

    key = args.adapt_batch_key
    for side, a in (("reference", reference), ("query", query)):
        if key is not None and key not in a.obs.columns:
            raise CellWeaveInputError(f"--adapt-batch-key {key!r} is not a column of the {side}'s obs.")
    both = ad.concat({"reference": reference, "query": query}, join="inner", label="_cellweave_side",
                     index_unique="-")
    if both.n_vars < 0.5 * max(reference.n_vars, query.n_vars):
        logger.warning("Reference and query share only %d genes; adapting on those.", both.n_vars)
    return adapt_for_command(both, model, args, batch_key="_cellweave_side")


# --- TileDB-SOMA inputs: `prepare` and `pretrain` ----------------------------------------------------

def add_soma_arguments(sp: argparse.ArgumentParser) -> None:
    """The ``--soma-*`` options of ``prepare`` and ``pretrain`` (:class:`cellweave.data.SomaSelection`)."""
    from cellweave.data import SOMA_LAYER_ORDER as LAYER_ORDER
    from cellweave.data import SOMA_VAR_NAME_COLUMNS as VAR_NAME_COLUMNS

    sp.add_argument("--soma-measurement", default=None,
                    help="TileDB-SOMA inputs: the measurement holding RNA (default: RNA)")
    sp.add_argument("--soma-layer", default=None,
                    help=f"TileDB-SOMA inputs: the X layer with raw counts (default: the first of "
                         f"{', '.join(LAYER_ORDER)} that exists)")
    sp.add_argument("--soma-filter", default=None,
                    help="TileDB-SOMA inputs: an obs value filter selecting cells, e.g. "
                         "\"tissue_general == 'blood' and is_primary_data == True\" (default: every cell)")
    sp.add_argument("--soma-var-column", default=None,
                    help=f"TileDB-SOMA inputs: the var column of feature names (default: the first of "
                         f"{', '.join(VAR_NAME_COLUMNS)} that exists)")
    sp.add_argument("--soma-config", action="append", default=None, metavar="KEY=VALUE",
                    help="TileDB-SOMA inputs: a TileDB configuration entry, repeatable (CELLxGENE Census: "
                         "vfs.s3.region=us-west-2 and vfs.s3.no_sign_request=true)")


def soma_selection(args: argparse.Namespace):
    """The :class:`cellweave.data.SomaSelection` the ``--soma-*`` options ask for; ``None`` when none is given."""
    from cellweave.data import SomaSelection

    from cellweave._exceptions import CellWeaveInputError

    config = []
    for entry in args.soma_config or []:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise CellWeaveInputError(f"--soma-config {entry!r}: give KEY=VALUE, e.g. vfs.s3.region=us-west-2.")
        config.append((key.strip(), value.strip()))
    given = {"measurement": args.soma_measurement, "layer": args.soma_layer, "value_filter": args.soma_filter,
             "var_column": args.soma_var_column, "tiledb_config": tuple(config) or None}
    given = {k: v for k, v in given.items() if v is not None}
    return SomaSelection(**given) if given else None


# --- gene-level verbs: `grn`, `markers`, `gene-map` --------------------------------------------------

def input_rna(path: str, use_raw: bool):
    """The RNA of ``path`` (``.raw`` with ``--use-raw``); scaled values are refused with the fix."""
    from cellweave import io
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.io import detect_x_kind
    from cellweave.tl import rna_adata

    data = io.read(path)
    rna = rna_adata(data)
    if not use_raw and rna.raw is not None and detect_x_kind(rna.X) == "scaled":
        raise CellWeaveInputError(f"{path}: X holds scaled values, which the model cannot read; add --use-raw to "
                                  "use .raw (log-normalized or counts) instead.")
    if use_raw:
        if rna.raw is None:
            raise CellWeaveInputError(f"{path} has no .raw; drop --use-raw.")
        raw = rna.raw.to_adata()
        raw.obs = rna.obs.copy()
        return raw
    return rna


def write_tsv(df, path: str) -> None:
    """Write a table as tab-separated text, atomically."""
    from cellweave._io_utils import atomic_write_text

    atomic_write_text(path, df.to_csv(sep="\t", index=False))
    logger.info("Wrote %s (%d rows)", path, len(df))


def add_query_and_reference(sp: argparse.ArgumentParser, *, query_help: str, reference_help: str) -> None:
    """The query (``INPUT``; the old ``--query`` as an alias), ``--reference`` and ``--label-key`` of the
    verbs that carry labels from a reference to a query (``annotate``, ``map-query``)."""
    from cellweave._cli._grammar import add_input, add_renamed

    add_input(sp, query_help)
    add_renamed(sp, "--query", target="input", new="INPUT (the positional argument)")
    sp.add_argument("--reference", required=True, help=reference_help)
    sp.add_argument("--label-key", required=True, help="column of the reference's obs with the labels")
