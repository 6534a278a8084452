"""``cellweave impute``: predict a missing modality (protein, ATAC, RNA) of every cell from the measured ones.

Listed in :data:`cellweave.cli.VERBS`; the work is :func:`cellweave.tl.impute`.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger("cellweave")


def cmd_impute(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cellweave import io, tl
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.models import CellWeave

    out = Path(args.out)
    data = io.read(args.input)
    is_mudata = hasattr(data, "mod")
    want = ".h5mu" if is_mudata else ".h5ad"
    if out.suffix != want:
        raise CellWeaveInputError(f"--out must end in {want} for {'MuData' if is_mudata else 'AnnData'} input, "
                                  f"not {out.name!r}.")
    model = CellWeave.load(args.model)
    reference = None
    if args.paired is not None:
        reference = data if Path(args.paired).resolve() == Path(args.input).resolve() else io.read(args.paired)
    tl.impute(data, target=args.target, model=model, input_modalities=args.input_modalities, layer=args.layer,
              organism=args.organism, batch_size=args.batch_size, seed=args.seed, reference=reference,
              max_epochs=args.max_epochs, precision=args.precision)
    key = f"cellweave_{args.target}"
    n_feat = data.obsm[key].shape[1]
    logger.info("predicted %d %s features for %d cells -> obsm[%r]%s", n_feat, args.target, data.n_obs, key,
                f" and modality {args.target!r}" if is_mudata else "")
    io.write(data, out)
    logger.info("Wrote %s", out)
    return 0


def add_impute(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave impute``."""
    from cellweave import modalities
    from cellweave._cli._common import add_precision_option
    from cellweave._cli._grammar import ListArgument, add_input, add_renamed

    sp.description = ("Writes obsm['cellweave_<target>'] (features in uns['cellweave']['cellweave_<target>']); "
                      "for .h5mu input also adds the modality, or extends it to every cell with the predictions in "
                      "layers['cellweave_imputed'].")
    add_input(sp, ".h5ad (RNA) or .h5mu")
    sp.add_argument("--target", required=True, choices=list(modalities.names()),
                    help="modality to predict")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--out", required=True, help="output .h5ad (or .h5mu for MuData input)")
    # Not --reference: that names a labelled reference everywhere else; these are paired training cells.
    sp.add_argument("--paired", default=None,
                    help=".h5mu whose cells measured the target and the input modalities (CITE-seq, multiome; "
                    "may be INPUT itself): fine-tune a decoder on its cells and predict its target features in "
                    "its units (CLR protein, log1p CP10k otherwise). Without it: zero-shot from the pretrained "
                    "cell head.")
    add_renamed(sp, "--reference", target="paired", new="--paired")
    sp.add_argument("--max-epochs", type=int, default=40, help="fine-tuning epochs at most (with --paired)")
    sp.add_argument("--input-modalities", action=ListArgument, default=None,
                    help="predict from these modalities only (default: all but the target)")
    sp.add_argument("--layer", default=None, help="layer holding raw RNA counts (default: X)")
    sp.add_argument("--organism", default=None, choices=["human", "mouse"], help="default: inferred")
    sp.add_argument("--batch-size", type=int, default=128)
    sp.add_argument("--seed", type=int, default=0)
    add_precision_option(sp, what="the forward passes (and --paired's fine-tuning)")
