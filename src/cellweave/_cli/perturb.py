"""``cellweave perturb``, ``finetune-perturb`` and ``predict-perturb``: one family in one module.

The three verbs share one subject (a perturbation's effect on cells): ``perturb`` is the zero-shot
in silico knock-out or over-expression (:func:`cellweave.tl.perturb`); ``finetune-perturb`` trains a
perturbation-response head on a screen and saves it; ``predict-perturb`` predicts control cells'
expression after a perturbation with that head (:func:`cellweave.tl.predict_perturbation`). Each
verb has its ``add_<verb>`` and ``cmd_<verb>`` here; all are listed in :data:`cellweave.cli.VERBS`.
"""

from __future__ import annotations

import argparse
import logging

from cellweave._cli._common import add_precision_option

logger = logging.getLogger("cellweave")


def cmd_perturb(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    data = io.read(args.input)
    if hasattr(data, "mod"):
        from cellweave.train import rna_with_cell_obs

        data = rna_with_cell_obs(data)
    model = CellWeave.load(args.model)
    tl.perturb(data, genes=args.genes, mode=args.mode, model=model, groupby=args.groupby, layer=args.layer,
               batch_size=args.batch_size, seed=args.seed, precision=args.precision)
    rec = data.uns["cellweave"]["perturb"]
    top = ", ".join(f"{g} ({v:+.4f})" for g, v in zip(rec["top_genes"]["gene"][:10], rec["top_genes"]["mean_delta"][:10]))
    logger.info("Most changed genes: %s", top)
    if "top_groups" in rec:
        logger.info("Most shifted %s: %s", args.groupby, ", ".join(rec["top_groups"]["group"][:5]))
    io.write(data, args.out)
    logger.info("Wrote %s", args.out)
    return 0


def cmd_finetune_perturb(args: argparse.Namespace) -> int:
    from cellweave import io
    from cellweave.models import CellWeave
    from cellweave.train import finetune_perturbation

    data = io.read(args.input)
    model = CellWeave.load(args.model)
    finetune_perturbation(
        data, model=model, perturbation_key=args.perturbation_key, control=args.control, group_key=args.groupby,
        exclude=list(args.exclude or []), layer=args.layer, zero_shot=args.zero_shot,
        n_control_cells=args.n_control_cells, steps=args.max_steps, seed=args.seed, out=args.out,
        precision=args.precision,
    )
    logger.info("Wrote the fine-tuned model to %s", args.out)
    return 0


def cmd_predict_perturb(args: argparse.Namespace) -> int:
    from cellweave import io, tl

    cells = None
    if args.input:
        cells = io.read(args.input)
        if hasattr(cells, "mod"):
            from cellweave.train import rna_with_cell_obs

            cells = rna_with_cell_obs(cells)
    out = tl.predict_perturbation(cells, model=args.model, perturbation=args.perturbation, layer=args.layer,
                                  seed=args.seed, precision=args.precision)
    io.write(out, args.out)
    logger.info("Wrote %s (layers['cellweave_predicted'])", args.out)
    return 0


def add_perturb(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave perturb``."""
    from cellweave._cli._grammar import ListArgument, add_input

    add_input(sp, ".h5ad / .h5mu with RNA counts")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--genes", action=ListArgument, required=True, metavar="GENE",
                    help="genes perturbed together, e.g. STAT1 IRF1 (STAT1,IRF1 also works)")
    sp.add_argument("--mode", default="knockout", choices=["knockout", "overexpress"])
    sp.add_argument("--groupby", default=None, help="obs column (e.g. cell_type) to rank groups by shift")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--out", required=True, help="output .h5ad")
    sp.add_argument("--batch-size", type=int, default=128)
    sp.add_argument("--seed", type=int, default=0)
    add_precision_option(sp, what="the forward passes before and after the perturbation")


def add_finetune_perturb(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave finetune-perturb``."""
    from cellweave._cli._grammar import ListArgument, add_input, add_renamed

    add_input(sp, ".h5ad / .h5mu with counts and a perturbation column")
    add_renamed(sp, "--data", target="input", new="INPUT (the positional argument)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--perturbation-key", default="perturbation", help="obs column naming each cell's perturbation")
    sp.add_argument("--control", default="control", help="value of --perturbation-key for control cells")
    sp.add_argument("--groupby", default=None, help="obs column (replicate, cell type) to compare within")
    add_renamed(sp, "--group-key", target="groupby", new="--groupby")
    sp.add_argument("--exclude", action=ListArgument, default=None, metavar="PERTURBATION",
                    help="perturbations to hold out of training, e.g. JAK2 STAT1")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--zero-shot", action="store_true", help="add zero-shot in silico KO profiles as features")
    sp.add_argument("--n-control-cells", type=int, default=512)
    sp.add_argument("--max-steps", type=int, default=500, help="optimizer steps of the fine-tuning")
    add_renamed(sp, "--steps", target="max_steps", new="--max-steps", type=int)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, help="output model folder")
    add_precision_option(sp, what="the frozen model's passes (control cells' embedding, --zero-shot's knock-outs)")


def add_predict_perturb(sp: argparse.ArgumentParser, model_help: str) -> None:  # noqa: ARG001 - its model is required
    """Arguments of ``cellweave predict-perturb``."""
    from cellweave._cli._grammar import add_input, add_renamed

    add_input(sp, "control cells .h5ad (default: those kept at fine-tuning)", required=False)
    add_renamed(sp, "--cells", target="input", new="INPUT (the positional argument)")
    sp.add_argument("--model", required=True, help="folder written by `cellweave finetune-perturb`")
    sp.add_argument("--perturbation", required=True, help="gene (seen or unseen), G1+G2, or a condition label")
    sp.add_argument("--layer", default=None, help="layer of INPUT holding raw counts (default: X)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, help="output .h5ad with layers['cellweave_predicted']")
    add_precision_option(sp, what="the control cells' embedding pass")
