"""``cellweave pretrain``: pretrain a model on data files, a token store or a TileDB-SOMA experiment.

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.train.pretrain`.
"""

from __future__ import annotations

import argparse
import logging

from cellweave._constants import LABEL_LOSSES, MASK_GROUPINGS, MIN_DEPTH_FRACTION
from cellweave._cli._common import add_device_options, add_soma_arguments, command_line, read_named, soma_selection

logger = logging.getLogger("cellweave")


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
    if args.profile_skip:
        overrides["profile_skip"] = True
    if args.token_selection is not None:
        overrides["token_selection"] = args.token_selection
    if args.hvg_tokens is not None:
        if args.hvg_tokens < 0:
            raise CellWeaveInputError(f"--hvg-tokens {args.hvg_tokens}: give a number of genes, or 0 for all.")
        overrides["hvg_tokens"] = args.hvg_tokens
    if args.mask_ratio is not None:
        if not 0.0 < args.mask_ratio < 1.0:
            raise CellWeaveInputError(f"--mask-ratio {args.mask_ratio}: give the share of tokens to hide, "
                                      "between 0 and 1 (e.g. 0.5).")
        overrides["mask_ratio"] = args.mask_ratio
    if args.mask_grouping is not None:
        overrides["mask_grouping"] = args.mask_grouping
    if args.depth_augmentation is not None:
        if not 0.0 <= args.depth_augmentation <= 1.0:
            raise CellWeaveInputError(f"--depth-augmentation {args.depth_augmentation}: give the probability that a "
                                      "cell is thinned, between 0 and 1 (e.g. 0.5).")
        overrides["depth_augmentation"] = args.depth_augmentation
    if args.depth_augmentation_min is not None:
        if not 0.0 < args.depth_augmentation_min <= 1.0:
            raise CellWeaveInputError(f"--depth-augmentation-min {args.depth_augmentation_min}: give the lowest share "
                                      "of its molecules a thinned cell keeps, above 0 and at most 1 (e.g. 0.3).")
        if not args.depth_augmentation:
            raise CellWeaveInputError("--depth-augmentation-min sets how far --depth-augmentation thins a cell; give "
                                      "--depth-augmentation P (e.g. 0.5) as well.")
        overrides["depth_augmentation_min"] = args.depth_augmentation_min
    if args.fixed_feature_tables:
        overrides["fixed_feature_tables"] = True
    if args.feature_offset:
        overrides["feature_offset"] = True
    return overrides or None


def cmd_pretrain(args: argparse.Namespace) -> int:
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.data import is_soma, is_store
    from cellweave.train import pretrain

    if args.modality_dropout is not None and not 0.0 <= args.modality_dropout <= 1.0:
        raise CellWeaveInputError(f"--modality-dropout is a probability in [0, 1], not {args.modality_dropout}.")
    stores = [p for p in args.input if is_store(p) or is_soma(p)]  # read in bounded memory
    if args.embed_hvg_tokens is not None and args.embed_hvg_tokens < 0:
        raise CellWeaveInputError(f"--embed-hvg-tokens {args.embed_hvg_tokens}: give a number of genes, or 0 for all.")
    if stores and len(args.input) > 1:
        raise CellWeaveInputError(f"{stores[0]} is a token store or SOMA experiment: pretrain from one of those, or "
                                  "from data files, not both (put them together with `cellweave prepare INPUTS --out "
                                  "STORE`).")
    datasets, hashes = read_named(args.input) if not stores else (None, None)
    monitor, monitor_hashes = read_named(args.knn_monitor) if args.knn_monitor else (None, {})
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
        data_hashes={**(hashes or {}), **(monitor_hashes or {})} or None,
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
        count_latent=args.count_latent,
        vicreg_weight=args.vicreg_weight,
        vicreg_neighbours=args.vicreg_neighbours,
        pc_targets=args.pc_targets,
        pc_weight=args.pc_weight,
        label_keys=args.label_key,
        label_weight=args.label_weight,
        label_loss=args.label_loss,
        embed_hvg_tokens=args.embed_hvg_tokens,
        snapshot_every=args.snapshot_every,
        monitor=monitor,
        monitor_label_keys=args.knn_monitor_key,
        monitor_cells=args.knn_monitor_cells,
        select_epoch=args.select_epoch,
    )
    m = model.card["metrics"]
    logger.info(
        "validation masked-value MSE: %.4f after, %.4f before (epoch 0); per-feature mean baselines %.4f / %.4f",
        m["val_masked_mse"], m["val_masked_mse_epoch0"], m["val_feature_mean_mse"], m["val_token_mean_mse"],
    )
    return 0


def add_pretrain(sp: argparse.ArgumentParser, model_help: str) -> None:
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
    add_device_options(sp)
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
                    help="token values: within-cell quantiles or log1p of counts per 10k (default: the preset's, quantile; "
                    "the shipped model: log1p)")
    sp.add_argument("--rna-context", type=int, default=None,
                    help="RNA tokens per cell (default: the preset's; tiny 256)")
    sp.add_argument("--profile-skip", action="store_true",
                    help="add a linear path from the input values to the cell state beside the transformer "
                    "(CellWeaveConfig.profile_skip; default: off; on in the shipped model)")
    sp.add_argument("--token-selection", default=None, choices=["value", "deviation"],
                    help="which measured genes become a cell's tokens: the highest values, or the largest "
                    "deviations above each gene's mean over the cells prepared together (default: value; "
                    "the shipped model: deviation)")
    sp.add_argument("--hvg-tokens", type=int, default=None, metavar="N",
                    help="draw each cell's tokens from the N most highly variable genes of its dataset (of the "
                         "cells prepared together in embed and adapt); 0 = all genes (default; the shipped model trains on all, see --embed-hvg-tokens)")
    sp.add_argument("--embed-hvg-tokens", type=int, default=None, metavar="N",
                    help="train on tokens as --hvg-tokens says, then save the model to draw the tokens of the "
                         "cells it embeds from their N most variable genes (the shipped model: 2000)")
    sp.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                    help="also save the model after every N-th epoch to OUT/snapshots/epochNNN, a folder every "
                         "command accepts as --model, to compare a run's epochs on held-out cells (default: 0, the "
                         "final model only)")
    sp.add_argument("--knn-monitor", nargs="+", default=None, metavar="FILE",
                    help="labelled .h5ad/.h5mu files or registered dataset names outside the corpus: after every "
                         "epoch (and before training) embed them as the saved model would and record their kNN "
                         "macro-F1 (k=15, 5-fold; mean over them) as val_knn_f1 in the history, the snapshots' "
                         "cards and the model card; the best checkpoint is then chosen by it (default: off)")
    sp.add_argument("--knn-monitor-key", nargs="+", default=["cell_type"], metavar="KEY",
                    help="with --knn-monitor: the obs column holding their cell types, the first found "
                         "(default: cell_type)")
    sp.add_argument("--knn-monitor-cells", type=int, default=2000, metavar="N",
                    help="with --knn-monitor: score at most N labelled cells of each (default: 2000)")
    sp.add_argument("--select-epoch", default="last", choices=["last", "knn"],  # train.SELECT_EPOCHS
                    help="save the last epoch's weights, or (with --knn-monitor) those of the epoch with the "
                         "highest val_knn_f1 (default: last)")
    sp.add_argument("--mask-ratio", type=float, default=None,
                    help="share of each cell's tokens whose values are hidden and predicted (default: the "
                         "preset's, 0.3)")
    sp.add_argument("--mask-grouping", default=None, choices=MASK_GROUPINGS,
                    help="hide a random draw of tokens, or whole co-expression modules of each dataset's "
                         "variable genes together (default: random, as the shipped model)")
    sp.add_argument("--depth-augmentation", type=float, default=None, metavar="P",
                    help="probability that a training cell is read at a lower depth: its counts thinned to a share "
                         "drawn log-uniformly in [F, 1] (--depth-augmentation-min F; read-depth-aware pretraining, as "
                         "scFoundation); needs "
                         "--value-encoding log1p (default: 0, every cell at its own depth, as the shipped model)")
    sp.add_argument("--depth-augmentation-min", type=float, default=None, metavar="F",
                    help="with --depth-augmentation, the lowest share of its molecules a thinned cell keeps; match "
                         "it to the depth of the data the model will meet (e.g. 0.3 for a corpus 3x deeper than "
                         f"the targets) (default: {MIN_DEPTH_FRACTION})")
    sp.add_argument("--fixed-feature-tables", action="store_true",
                    help="keep each gene's (and protein's, peak's) embedding at its random initialization, training "
                    "only the rest (CellWeaveConfig.fixed_feature_tables; default: off, learned; on in the shipped model)")
    sp.add_argument("--feature-offset", action="store_true",
                    help="learn a scalar per feature added to every predicted value, its typical value "
                    "(CellWeaveConfig.feature_offset; default: off, as the shipped model)")
    sp.add_argument("--count-likelihood", action="store_true",
                    help="add a negative-binomial decoder of each cell's counts of 1,000 variable genes per dataset, "
                    "dataset as covariate (needs --value-encoding log1p; on in the shipped model)")
    sp.add_argument("--count-latent", type=int, default=0, metavar="N",
                    help="with --count-likelihood: decode the counts from an N-dimensional Gaussian latent of the "
                    "pooled embedding, trained as scVI's variational autoencoder with the encoder; the saved model "
                    "embeds cells as that latent (default: 0, the CLS state is decoded and no bottleneck)")
    sp.add_argument("--vicreg-weight", type=float, default=0.0,
                    help="weight of VICReg between two masked views of each cell (default: 0.0, off; adaptation uses 0.04)")
    sp.add_argument("--vicreg-neighbours", type=int, default=0, metavar="K",
                    help="with --vicreg-weight: take the second view from one of the cell's K nearest neighbours in "
                    "its dataset (PCA of its 2,000 most variable genes) instead of the cell itself (default: 0, itself)")
    sp.add_argument("--pc-targets", type=int, default=0, metavar="K",
                    help="add a term asking the cell state to give each cell's scores on its dataset's first K "
                    "principal components (standardized 2,000 most variable genes) through a linear map per dataset "
                    "(default: 0, off, as the shipped model)")
    sp.add_argument("--pc-weight", type=float, default=1.0,
                    help="with --pc-targets: the weight of that term in the loss (default: 1.0)")
    sp.add_argument("--label-key", nargs="+", default=None, metavar="KEY",
                    help="add a supervised term: every input whose obs has one of these columns (the first found) "
                    "trains a linear classifier per dataset of its cells' labels from the cell state "
                    "(e.g. --label-key cell_type; default: off, as the shipped model)")
    sp.add_argument("--label-weight", type=float, default=1.0,
                    help="with --label-key: the weight of that term in the loss (default: 1.0)")
    sp.add_argument("--label-loss", default=LABEL_LOSSES[0], choices=LABEL_LOSSES,
                    help="with --label-key: a linear classifier, or cosine (16 x the cosine between the cell state "
                         "and a learned proxy per class, NormFace-style; pulls each type's cells toward one "
                         "direction) (default: linear)")
    add_soma_arguments(sp)
