"""``cellweave perturb``, ``finetune-perturb`` and ``predict-perturb``; registered by :mod:`cellweave.cli`."""

from __future__ import annotations

import argparse
import logging

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
               batch_size=args.batch_size, seed=args.seed)
    rec = data.uns["cellweave"]["perturb"]
    top = ", ".join(f"{g} ({v:+.4f})" for g, v in zip(rec["top_genes"]["gene"][:10], rec["top_genes"]["mean_delta"][:10]))
    logger.info("Most changed genes: %s", top)
    if "top_groups" in rec:
        logger.info("Most shifted %s: %s", args.groupby, ", ".join(rec["top_groups"]["group"][:5]))
    io.write(data, args.out)
    logger.info("Wrote %s", args.out)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from cellweave import io
    from cellweave.models import CellWeave
    from cellweave.train import finetune_perturbation

    data = io.read(args.data)
    model = CellWeave.load(args.model)
    finetune_perturbation(
        data, model=model, perturbation_key=args.perturbation_key, control=args.control, group_key=args.group_key,
        exclude=[e for e in (args.exclude or "").split(",") if e], layer=args.layer, zero_shot=args.zero_shot,
        n_control_cells=args.n_control_cells, steps=args.steps, seed=args.seed, out=args.out,
    )
    logger.info("Wrote the fine-tuned model to %s", args.out)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cellweave import io, tl

    cells = None
    if args.cells:
        cells = io.read(args.cells)
        if hasattr(cells, "mod"):
            from cellweave.train import rna_with_cell_obs

            cells = rna_with_cell_obs(cells)
    out = tl.predict_perturbation(cells, model=args.model, perturbation=args.perturbation, layer=args.layer,
                                  seed=args.seed)
    io.write(out, args.out)
    logger.info("Wrote %s (layers['cellweave_predicted'])", args.out)
    return 0


def register(sub: argparse._SubParsersAction, model_help: str) -> None:
    """Add the perturbation subcommands to the cellweave parser."""
    sp = sub.add_parser("perturb", help="zero-shot in silico knock-out / over-expression with the pretrained model")
    sp.add_argument("input", help=".h5ad / .h5mu with RNA counts")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--genes", required=True, help="comma-separated genes perturbed together, e.g. STAT1,IRF1")
    sp.add_argument("--mode", default="knockout", choices=["knockout", "overexpress"])
    sp.add_argument("--groupby", default=None, help="obs column (e.g. cell_type) to rank groups by shift")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--out", required=True, help="output .h5ad")
    sp.add_argument("--batch-size", type=int, default=128)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_perturb)

    sp = sub.add_parser("finetune-perturb", help="fine-tune a perturbation-response head on a screen or conditions")
    sp.add_argument("--data", required=True, help=".h5ad / .h5mu with counts and a perturbation column")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--perturbation-key", default="perturbation", help="obs column naming each cell's perturbation")
    sp.add_argument("--control", default="control", help="value of --perturbation-key for control cells")
    sp.add_argument("--group-key", default=None, help="obs column (replicate, cell type) to compare within")
    sp.add_argument("--exclude", default=None, help="comma-separated perturbations to hold out of training")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--zero-shot", action="store_true", help="add zero-shot in silico KO profiles as features")
    sp.add_argument("--n-control-cells", type=int, default=512)
    sp.add_argument("--steps", type=int, default=500)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, help="output model folder")
    sp.set_defaults(func=cmd_finetune)

    sp = sub.add_parser("predict-perturb", help="predict control cells' expression after a perturbation")
    sp.add_argument("--model", required=True, help="folder written by `cellweave finetune-perturb`")
    sp.add_argument("--perturbation", required=True, help="gene (seen or unseen), G1+G2, or a condition label")
    sp.add_argument("--cells", default=None, help="control cells .h5ad (default: those kept at fine-tuning)")
    sp.add_argument("--layer", default=None, help="layer of --cells holding raw counts (default: X)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, help="output .h5ad with layers['cellweave_predicted']")
    sp.set_defaults(func=cmd_predict)
