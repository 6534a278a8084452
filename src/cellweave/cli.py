"""The ``cellweave`` command line: one table of verbs (:data:`VERBS`), one grammar (:mod:`cellweave._cli._grammar`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("cellweave")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                  "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _read_named(paths: list[str]) -> tuple[dict, dict[str, str]]:
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


def _pretrain_overrides(args: argparse.Namespace) -> dict | None:
    """Architecture fields ``pretrain`` flags override in the preset."""
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.nn import CellWeaveConfig

    overrides: dict = {}
    if args.modality_dropout is not None:
        overrides["modality_dropout"] = args.modality_dropout
    if args.value_encoding is not None:
        overrides["value_encoding"] = args.value_encoding
    if args.rna_context is not None:
        if args.rna_context < 1:
            raise CellWeaveInputError(f"--rna-context {args.rna_context}: give at least 1 token per cell.")
        context = dict(CellWeaveConfig.from_preset(args.preset).context_length)
        context["rna"] = args.rna_context
        overrides["context_length"] = context
    return overrides or None


def cmd_pretrain(args: argparse.Namespace) -> int:
    from cellweave._cli import command_line
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.train import pretrain

    if args.modality_dropout is not None and not 0.0 <= args.modality_dropout <= 1.0:
        raise CellWeaveInputError(f"--modality-dropout is a probability in [0, 1], not {args.modality_dropout}.")
    from cellweave._cli.prepare import soma_selection
    from cellweave.data import is_soma, is_store

    stores = [p for p in args.input if is_store(p) or is_soma(p)]  # read in bounded memory
    if stores and len(args.input) > 1:
        raise CellWeaveInputError(f"{stores[0]} is a token store or SOMA experiment: pretrain from one of those, or "
                                  "from data files, not both (put them together with `cellweave prepare INPUTS --out "
                                  "STORE`).")
    datasets, hashes = _read_named(args.input) if not stores else (None, None)
    model = pretrain(
        datasets,
        store=stores[0] if stores else None,
        soma=soma_selection(args),
        out=args.out,
        preset=args.preset,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_cells_per_dataset=args.max_cells_per_dataset,
        resume=args.resume,
        name=args.name,
        command=command_line(args),
        data_hashes=hashes,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        precision=args.precision,
        accumulate_grad_batches=args.accumulate_grad_batches,
        gradient_checkpointing=args.gradient_checkpointing,
        log_cells=args.log_cells,
        modalities=args.modalities,
        config_overrides=_pretrain_overrides(args),
        max_steps=args.max_steps,
        count_likelihood=args.count_likelihood,
        vicreg_weight=args.vicreg_weight,
    )
    m = model.card["metrics"]
    logger.info(
        "validation masked-value MSE: %.4f after, %.4f before (epoch 0); per-feature mean baselines %.4f / %.4f",
        m["val_masked_mse"], m["val_masked_mse_epoch0"], m["val_feature_mean_mse"], m["val_token_mean_mse"],
    )
    return 0


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
                             devices=args.devices, accelerator=args.accelerator, num_nodes=args.num_nodes)
        if not _global_rank_zero():
            return 0
        io.write(out, args.out)
        logger.info("Wrote %s (%d cells; obsm['X_cellweave'], no X)", args.out, out.n_obs)
        return 0
    if args.adapt and not (str(args.devices) == "1" and args.num_nodes == 1):
        # Each process would adapt its own copy; on a GPU they need not end equal.
        raise CellWeaveInputError("--adapt runs on one device: adapt and save the model first (`cellweave adapt`), "
                                  "then embed with it on several devices.")
    data = io.read(args.input)
    model = CellWeave.load(args.model)
    if args.adapt:
        from cellweave._cli.adapt import adapt_for_command

        model = adapt_for_command(data, model, args)
    tl.embed(data, model=model, layer=args.layer, batch_size=args.batch_size, seed=args.seed,
             organism=args.organism, spatial=args.spatial, section_key=args.section_key,
             devices=args.devices, accelerator=args.accelerator, num_nodes=args.num_nodes)
    if not _global_rank_zero():  # every rank holds the embeddings of a multi-device run; one writes them
        return 0
    io.write(data, args.out)
    logger.info("Wrote %s", args.out)
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    reference = io.read(args.reference)
    query = io.read(args.input)
    model = CellWeave.load(args.model)
    if args.adapt:
        model = _adapt_on_both(reference, query, model, args)
    tl.annotate(query, reference=reference, label_key=args.label_key, model=model,
                novelty_quantile=args.novelty_quantile, finetune=args.finetune, finetune_epochs=args.max_epochs,
                spatial=args.spatial, spatial_key=args.spatial_key, section_key=args.section_key,
                n_spatial_neighbors=args.n_spatial_neighbors, seed=args.seed)
    counts = query.obs["cellweave_prediction"].value_counts()
    for label, n in counts.items():
        logger.info("predicted %s: %d cells", label, n)
    io.write(query, args.out)
    logger.info("Wrote %s", args.out)
    return 0


def cmd_integrate(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    data = io.read(args.input)
    model = CellWeave.load(args.model)
    if args.adapt:
        from cellweave._cli.adapt import adapt_for_command

        model = adapt_for_command(data, model, args, batch_key=args.batch_key)
    tl.integrate(data, batch_key=args.batch_key, model=model, method=args.method, seed=args.seed)
    io.write(data, args.out)
    logger.info("Wrote %s (obsm['X_cellweave_integrated'])", args.out)
    return 0


def cmd_map_query(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    reference = io.read(args.reference)  # only read: the reference file is never written
    query = io.read(args.input)
    model = CellWeave.load(args.model)
    if args.adapt:
        model = _adapt_on_both(reference, query, model, args)
    tl.map_query(query, reference=reference, label_key=args.label_key, model=model, n_neighbors=args.n_neighbors,
                 index=args.index, novelty_quantile=args.novelty_quantile, seed=args.seed)
    for label, n in query.obs["cellweave_prediction"].value_counts().items():
        logger.info("mapped %s: %d cells", label, n)
    io.write(query, args.out)
    logger.info("Wrote %s", args.out)
    return 0


def _adapt_on_both(reference, query, model, args: argparse.Namespace):
    """``--adapt`` of ``annotate`` and ``map-query``: adapt on reference and query cells together (their
    shared genes), with reference/query as the count decoder's batch covariate unless
    ``--adapt-batch-key`` names an obs column both have."""
    import anndata as ad

    from cellweave._cli.adapt import adapt_for_command
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


def cmd_benchmark(args: argparse.Namespace) -> int:
    from cellweave.bench import comparison_table, run_benchmark

    records = run_benchmark(
        args.task, args.out, model=args.model, seeds=tuple(args.seeds), quick=args.quick, data=args.input,
        label_key=args.label_key, batch_key=args.batch_key, adapt=tuple(args.adapt or ()),
        adapt_max_steps=args.adapt_max_steps,
    )
    table = comparison_table(records)
    if not table.empty:
        logger.info("Results (mean ± sd over seeds):\n%s", table.to_string(index=False))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cellweave.demo import run_demo

    run_demo(args.out, model=args.model, from_scratch=args.from_scratch, max_epochs=args.max_epochs,
             max_cells_per_dataset=args.max_cells_per_dataset, seed=args.seed,
             benchmark=not args.no_benchmark)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cellweave.models import CellWeave, available_models

    for name in available_models():
        sys.stdout.write(f"{name}\t{CellWeave.load(name)!r}\n")
    return 0


def _add_device_options(sp: argparse.ArgumentParser) -> None:
    """Where a command runs: Lightning's accelerator, devices and nodes."""
    sp.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    sp.add_argument("--devices", default=1, help="Lightning devices per node (e.g. 2 for data parallelism; -1: all)")
    sp.add_argument("--num-nodes", type=int, default=1, help="machines (e.g. SLURM nodes), each with --devices devices")


def _add_pretrain(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave pretrain``."""
    from cellweave import modalities
    from cellweave._cli._grammar import ListArgument, add_input, add_renamed

    add_input(sp, ".h5ad / .h5mu files or registered dataset names (all modalities are used), or one token store "
                  "folder made by `cellweave prepare`, or one TileDB-SOMA experiment (folder or URI; streamed, see "
                  "--soma-*)", nargs="+")
    add_renamed(sp, "--data", target="input", new="INPUT... (the positional arguments)", nargs="+")
    sp.add_argument("--preset", default="tiny", choices=["tiny", "small", "base"])
    sp.add_argument("--out", required=True, help="output model folder")
    sp.add_argument("--max-epochs", type=int, default=5)
    sp.add_argument("--batch-size", type=int, default=64)
    sp.add_argument("--lr", type=float, default=1e-3)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--max-cells-per-dataset", type=int, default=None,
                    help="pretrain on at most this many cells of each dataset, drawn with the seed (default: all cells)")
    sp.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    sp.add_argument("--name", default=None, help="model name recorded in the model card (default: the output folder's name)")
    _add_device_options(sp)
    sp.add_argument("--strategy", default="auto",
                    help="Lightning strategy: auto (ddp on several devices), ddp, ddp_spawn, fsdp, ... "
                    "(see README, Scaling out)")
    sp.add_argument("--precision", default=None, choices=["32-true", "bf16-mixed", "16-mixed"],  # train.PRECISIONS (not imported: keeps --help fast)
                    help="Lightning precision (default 32-true; bf16-mixed also runs on CPUs)")
    sp.add_argument("--accumulate-grad-batches", type=int, default=1, metavar="K",
                    help="sum gradients over K batches per optimizer step (effective batch: batch size x devices x K)")
    sp.add_argument("--gradient-checkpointing", action="store_true",
                    help="recompute the encoder's activations in the backward pass: less memory, ~1/3 more compute")
    sp.add_argument("--log-cells", action="store_true",
                    help="write each rank's trained-on cells and final weight hash to OUT/cells_seen/ "
                    "(a check of data-parallel sharding; small runs)")
    sp.add_argument("--modality-dropout", type=float, default=None,
                    help="probability that a multimodal cell has one modality left out of its input and predicted "
                    "(cross-modal masking; e.g. 0.5). Default: the config's 0.0, as the shipped model")
    sp.add_argument("--modalities", action=ListArgument, default=None, choices=list(modalities.names()),
                    help="pretrain on these modalities only (e.g. rna for an RNA-only model); default: all")
    sp.add_argument("--max-steps", type=int, default=None,
                    help="stop after this many optimizer steps (default: no cap; --max-epochs still applies)")
    sp.add_argument("--value-encoding", default=None, choices=["quantile", "log1p"],
                    help="token values: within-cell quantiles or log1p of counts per 10k (default: the preset's, quantile)")
    sp.add_argument("--rna-context", type=int, default=None,
                    help="RNA tokens per cell (default: the preset's; tiny 256)")
    sp.add_argument("--count-likelihood", action="store_true",
                    help="add a negative-binomial decoder of each cell's counts of 1,000 variable genes per dataset, "
                    "dataset as covariate (needs --value-encoding log1p)")
    sp.add_argument("--vicreg-weight", type=float, default=0.0,
                    help="weight of VICReg between two masked views of each cell (default: 0.0, off; adaptation uses 0.04)")
    from cellweave._cli.prepare import add_soma_arguments

    add_soma_arguments(sp)

def _add_embed(sp: argparse.ArgumentParser, model_help: str) -> None:
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
    _add_device_options(sp)
    _add_adapt_options(sp, with_batch_key=True)

def _add_annotate(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave annotate``."""
    from cellweave._cli._grammar import add_input, add_renamed

    add_input(sp, "query .h5ad to annotate")
    add_renamed(sp, "--query", target="input", new="INPUT (the positional argument)")
    sp.add_argument("--reference", required=True, help="labelled reference .h5ad")
    sp.add_argument("--label-key", required=True, help="column of the reference's obs with the labels")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--out", required=True, help="output .h5ad (the annotated query)")
    sp.add_argument("--novelty-quantile", type=float, default=0.99,
                    help="quantile of held-out reference novelty used as the 'unknown' threshold")
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
    _add_adapt_options(sp, with_batch_key=True)

def _add_map_query(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave map-query``."""
    from cellweave._cli._grammar import add_input, add_renamed

    add_input(sp, "query .h5ad")
    add_renamed(sp, "--query", target="input", new="INPUT (the positional argument)")
    sp.add_argument("--reference", required=True, help="labelled reference .h5ad (read only)")
    sp.add_argument("--label-key", required=True, help="column of the reference's obs with the labels")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--n-neighbors", type=int, default=15)
    sp.add_argument("--index", default="faiss", choices=["faiss", "pynndescent"], help="nearest-neighbour library")
    sp.add_argument("--novelty-quantile", type=float, default=0.99)
    sp.add_argument("--out", required=True, help="output .h5ad (the mapped query)")
    sp.add_argument("--seed", type=int, default=0)
    _add_adapt_options(sp, with_batch_key=True)

def _add_integrate(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave integrate``."""
    from cellweave._cli._grammar import add_input

    add_input(sp, ".h5ad with RNA counts and a batch column")
    sp.add_argument("--batch-key", required=True, help="obs column with the batch of each cell")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--method", default="harmony", choices=["harmony", "adversarial"],
                    help="correction on top of the embedding (default: harmony; see the benchmark)")
    sp.add_argument("--out", required=True, help="output .h5ad")
    sp.add_argument("--seed", type=int, default=0)
    _add_adapt_options(sp, with_batch_key=False)

def _add_benchmark(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave benchmark``."""
    from cellweave._cli._grammar import ListArgument, add_input, add_renamed
    from cellweave.bench import TASKS

    add_input(sp, "run the protocol on this file instead of the registered datasets", required=False)
    add_renamed(sp, "--data", target="input", new="INPUT (the positional argument)")
    sp.add_argument("--task", action=ListArgument, default=["all"], choices=[*TASKS, "all"], help="task(s) to run")
    sp.add_argument("--out", required=True, help="output folder")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--seeds", action=ListArgument, item_type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    sp.add_argument("--quick", action="store_true", help="one seed and fewer folds/datasets (the demo's setting)")
    sp.add_argument("--label-key", default=None, help="obs column with cell labels (with INPUT)")
    sp.add_argument("--batch-key", default=None, help="obs column with batches (with INPUT)")
    sp.add_argument("--adapt", action=ListArgument, default=None, choices=["pretrained", "scratch", "untrained"],
                    help="panel: also score the model adapted to each dataset (pretrained), the same adaptation "
                         "from random weights (scratch) and the architecture with random weights, untrained")
    sp.add_argument("--adapt-max-steps", type=int, default=None,
                    help="panel: step budget of each adaptation (default: cellweave adapt's)")

def _add_demo(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave demo``."""
    sp.add_argument("--out", default="demo_out", help="output folder (report.html, embeddings, metrics)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--from-scratch", action="store_true", help="pretrain the tiny preset on the bundled corpus first")
    sp.add_argument("--max-epochs", type=int, default=None, help="epochs for --from-scratch (default: the demo's setting)")
    sp.add_argument("--max-cells-per-dataset", type=int, default=None, help="cap per dataset for --from-scratch (default: the demo's setting)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--no-benchmark", action="store_true", help="skip the quick benchmark sections")


def _add_models(sp: argparse.ArgumentParser, model_help: str) -> None:  # noqa: ARG001 - same signature as the others
    """``cellweave models`` takes no arguments."""


@dataclass(frozen=True)
class Verb:
    """One ``cellweave`` verb: its name, the area ``cellweave --help`` lists it under, its one-line help,
    and the functions that add its arguments and run it: ``"module:function"`` of ``cellweave._cli``
    or the name of a function of this module, looked up when the parser is built (so the modules of
    verbs not run are imported only for their arguments, and a test may replace a command)."""

    name: str
    area: str
    help: str
    add_arguments: str
    command: str


#: Every verb, in the order ``cellweave --help`` lists them; :func:`build_parser` registers these only.
VERBS: tuple[Verb, ...] = (
    Verb("embed", "Cells", "embed cells: writes obsm['X_cellweave'] and uns['cellweave']", "_add_embed", "cmd_embed"),
    Verb("annotate", "Cells", "transfer labels from a reference: writes obs['cellweave_prediction'] etc.",
         "_add_annotate", "cmd_annotate"),
    Verb("map-query", "Cells", "map query cells onto a labelled reference (the reference is not modified)",
         "_add_map_query", "cmd_map_query"),
    Verb("integrate", "Cells", "batch-corrected embedding: writes obsm['X_cellweave_integrated']", "_add_integrate",
         "cmd_integrate"),
    Verb("adapt", "Cells", "adapt a pretrained model to your cells without labels; writes a model folder",
         "adapt:add_adapt", "adapt:cmd_adapt"),
    Verb("impute", "Modalities", "predict a missing modality (protein, ATAC, RNA) of every cell from the measured ones",
         "multimodal:add_impute", "multimodal:cmd_impute"),
    Verb("perturb", "Perturbation", "zero-shot in silico knock-out / over-expression with the pretrained model",
         "perturb:add_perturb", "perturb:cmd_perturb"),
    Verb("finetune-perturb", "Perturbation", "fine-tune a perturbation-response head on a screen or conditions",
         "perturb:add_finetune_perturb", "perturb:cmd_finetune"),
    Verb("predict-perturb", "Perturbation", "predict control cells' expression after a perturbation",
         "perturb:add_predict_perturb", "perturb:cmd_predict"),
    Verb("grn", "Genes", "gene regulatory network from the model: edge table (source, target, score, group)",
         "genes:add_grn", "genes:cmd_grn"),
    Verb("markers", "Genes", "marker genes per group by attribution through the model", "genes:add_markers",
         "genes:cmd_markers"),
    Verb("genes", "Genes", "the model's gene embedding table as an AnnData with UMAP and Leiden programs",
         "genes:add_genes", "genes:cmd_genes"),
    Verb("pretrain", "Models & data", "pretrain a model on .h5ad/.h5mu files, a token store or a SOMA experiment",
         "_add_pretrain", "cmd_pretrain"),
    Verb("prepare", "Models & data",
         "turn .h5ad/.h5mu/10x files into a sharded, memory-mapped token store (bounded memory)",
         "prepare:add_prepare", "prepare:cmd_prepare"),
    Verb("models", "Models & data", "list the shipped models", "_add_models", "cmd_models"),
    Verb("datasets", "Models & data", "registered public datasets: list, info, fetch (mirror, cache or download)",
         "datasets:add_datasets", "datasets:cmd_datasets"),
    Verb("benchmark", "Evaluation", "run cellweave and the baselines on the same splits; results.json + report.html",
         "_add_benchmark", "cmd_benchmark"),
    Verb("demo", "Evaluation", "embed every available registered dataset and write an HTML report", "_add_demo",
         "cmd_demo"),
)


def _resolve(ref: str) -> Callable:
    """A function the table names: ``"module:function"`` of ``cellweave._cli``, or one of this module."""
    import importlib

    module, _, name = ref.rpartition(":")
    return getattr(importlib.import_module(f"cellweave._cli.{module}"), name) if module else globals()[name]


def _verbs_by_area() -> str:
    """The verbs grouped by area, for ``cellweave --help`` (argparse's own list of choices cannot group)."""
    import textwrap

    width = max(len(v.name) for v in VERBS) + 2
    lines = ["verbs (`cellweave VERB --help` for each):"]
    for area in dict.fromkeys(v.area for v in VERBS):
        lines.append(f"  {area}:")
        for v in (v for v in VERBS if v.area == area):
            text = textwrap.wrap(v.help, 110 - 4 - width) or [""]
            lines.append(f"    {v.name:<{width}}{text[0]}")
            lines.extend(" " * (4 + width) + more for more in text[1:])
    return "\n".join(lines)


_GRAMMAR = """\
grammar: INPUT (positional) is the cells a verb reads; --out is what it writes; --model the base model;
--reference a labelled reference; --groupby an obs column of groups; --max-epochs / --max-steps cap the
verb's own training (--adapt-epochs / --adapt-max-steps the --adapt step before it); lists are
space-separated (commas also work). Old flag names still work until 0.3, with a warning (README: Changed
flag names)."""


def build_parser() -> argparse.ArgumentParser:
    from cellweave import __version__

    p = argparse.ArgumentParser(prog="cellweave", description="Multimodal single-cell foundation models.\n\n"
                                + _verbs_by_area(), epilog=_GRAMMAR,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"cellweave {__version__}")
    _add_global_options(p, default=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="VERB", help="one of the verbs above")

    model_help = "model folder or shipped model name (default: the shipped default model)"
    for verb in VERBS:
        # No help= here: argparse would list the verbs again, ungrouped; the description above lists them.
        sp = sub.add_parser(verb.name, description=verb.help)
        _resolve(verb.add_arguments)(sp, model_help)
        sp.set_defaults(func=_resolve(verb.command))
        _add_global_options(sp, default=False)  # -q / -v / --debug work after the verb too
        _show_defaults(sp)
        _usage_with_input_first(sp)
    return p


def _usage_with_input_first(sp: argparse.ArgumentParser) -> None:
    """Show ``INPUT`` first in the verb's usage line, as it is written, and without brackets where the
    verb needs it (argparse must take it as optional, for the old flag that may stand for it)."""
    action = next((a for a in sp._actions if a.dest == "input" and not a.option_strings), None)
    if action is None:
        return
    shown = "INPUT [INPUT ...]" if action.nargs == "*" else "INPUT"
    if not sp.get_default("_input_required"):
        shown = f"[{shown}]"
    sp._actions.remove(action)
    try:
        usage = sp.format_usage().strip().removeprefix("usage: ")
    finally:
        sp._actions.append(action)
    sp.usage = usage.replace(sp.prog, f"{sp.prog} {shown}", 1).replace("%", "%%")




def _default_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: ...)`` to the help of every option that takes a value and has a default,
    unless its help already says what the default is (many explain it in words: "default: the
    preset's"). Flags (``store_true``, ``--x/--no-x``, counts) and ``None`` defaults are left alone:
    "(default: False)" or "(default: None)" tells a reader nothing. Done here, once, so every verb
    (those in ``cellweave._cli`` too) shows its defaults in ``--help``."""
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.help == argparse.SUPPRESS:
            continue
        if action.default is None or action.default is argparse.SUPPRESS:
            continue
        if action.help and "default" in action.help.lower():
            continue
        shown = "(default: " + _default_text(action.default).replace("%", "%%") + ")"
        action.help = f"{action.help} {shown}" if action.help else shown


def _add_adapt_options(sp: argparse.ArgumentParser, *, with_batch_key: bool = True) -> None:
    from cellweave._cli.adapt import add_budget_options

    sp.add_argument("--adapt", action="store_true",
                    help="first adapt the model to these cells without labels (as `cellweave adapt`; minutes on a "
                         "CPU), then run with the adapted model")
    add_budget_options(sp, with_batch_key=with_batch_key)


def _add_global_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """``-v``, ``-q`` and ``--debug`` on the main parser (with defaults) and on every verb
    (without, so that a flag given before the verb is not reset by the verb's parser)."""
    suppress = {} if default else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="count", help="more log output",
                        **({"default": 0} if default else suppress))
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only",
                        **({"default": False} if default else suppress))
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error",
                        **({"default": False} if default else suppress))
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist",
                        **({"default": False} if default else suppress))


#: Attributes of the parsed arguments that name files or folders a command writes.
OUTPUT_ARGS = ("out", "out_h5ad", "programs_tsv")
_DATA = (".h5ad", ".h5mu")
#: (verb, attribute) -> suffixes a file output may have; outputs not listed are folders.
OUTPUT_SUFFIXES = {
    **{(verb, "out"): _DATA for verb in ("embed", "annotate", "integrate", "map-query", "impute", "perturb",
                                        "predict-perturb")},
    ("grn", "out"): (".tsv", ".txt"), ("markers", "out"): (".tsv", ".txt"), ("genes", "out"): (".h5ad",),
    ("grn", "out_h5ad"): _DATA, ("markers", "out_h5ad"): _DATA, ("genes", "programs_tsv"): (".tsv", ".txt"),
}


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path before any work starts: the nearest existing folder above it must be
    writable (a path whose parent is an existing file is refused), a file output must have a suffix
    the command writes, and an existing file is replaced only with ``--overwrite``; a folder output
    must not be an existing file."""
    import os

    from cellweave._exceptions import CellWeaveInputError

    for attr in OUTPUT_ARGS:
        value = getattr(args, attr, None)
        if not value:
            continue
        path = Path(value).expanduser().absolute()
        flag = "--" + attr.replace("_", "-")
        suffixes = OUTPUT_SUFFIXES.get((args.command, attr))
        if suffixes is not None:
            if path.is_dir():
                raise CellWeaveInputError(f"{flag} {value} is a folder; give a file name ending in {suffixes[0]}.")
            if path.suffix.lower() not in suffixes:
                raise CellWeaveInputError(
                    f"{flag} {value}: cellweave {args.command} writes {' or '.join(suffixes)} files, not "
                    f"{path.suffix or 'a path without suffix'!r}. Use {path.with_suffix(suffixes[0]).name!r}.")
            if path.exists() and not getattr(args, "overwrite", False):
                raise CellWeaveInputError(
                    f"{flag} {value} exists; add --overwrite to replace it, or choose another name.")
        elif path.is_file():
            raise CellWeaveInputError(f"{flag} {value} is a file, but cellweave {args.command} writes a folder there. "
                                      "Choose a folder path.")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise CellWeaveInputError(f"{flag} {value}: {ancestor} is a file, not a folder. Choose another path.")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise CellWeaveInputError(
                f"{flag} {value}: the folder {ancestor} is not writable. Choose a path you can write to.")


def _verb_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def main(argv: list[str] | None = None) -> int:
    from cellweave._exceptions import CellWeaveInputError, CellWeaveModelError

    from cellweave._cli._grammar import resolve_renamed

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(-1 if args.quiet else args.verbose)
    try:
        resolve_renamed(args, _verb_parser(parser, args.command))
        _check_outputs(args)
        return int(args.func(args) or 0)
    except (CellWeaveInputError, CellWeaveModelError, FileExistsError) as err:
        # Bad input is the user's to fix: one clear line, no traceback (unless --debug).
        if args.debug:
            raise
        sys.stderr.write(f"cellweave {args.command}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"cellweave {args.command}: interrupted\n")
        return 130
    except Exception as err:  # noqa: BLE001 - the command line's last resort; --debug shows it all
        if args.debug:
            raise
        sys.stderr.write(
            f"cellweave {args.command}: error: {type(err).__name__}: {err}. This input or situation is not "
            "handled with a clearer message yet; rerun with --debug for the traceback, and report it.\n"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
