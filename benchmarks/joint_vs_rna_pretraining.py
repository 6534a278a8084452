"""The effect of joint pretraining: the same downstream numbers from a model pretrained on RNA
alone and from one pretrained on every modality (same preset, epochs, seed and cell caps).

Step 1 (``--train VARIANT``) pretrains the tiny preset on every bundled pretraining dataset
into ``build/pretrained/cellweave-tiny-<VARIANT>`` (not shipped): ``joint`` (all modalities,
modality dropout 0.5), ``joint-no-dropout`` (all modalities, no cross-modal masking:
the objective before issue 4) and ``rna-only`` (RNA of the same cells). Give all three the same
``--max-epochs``, ``--max-cells-per-dataset`` and ``--seed``. Step 2 runs the ``impute`` and
``spatial`` benchmark tasks (3 seeds) with each model and writes their cellweave records, the
method suffixed with ``[joint]``, ``[RNA only]`` or ``[joint, no modality dropout]``, to
``benchmarks/results/joint_vs_rna_pretraining.json``, which
``cellweave benchmark --task multimodal`` reads and reports.

    for v in joint joint-no-dropout rna-only; do
        .venv/bin/python benchmarks/joint_vs_rna_pretraining.py --train $v --max-epochs 3 --max-cells-per-dataset 600
    done
    .venv/bin/python benchmarks/joint_vs_rna_pretraining.py
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "pretrained"
OUT_JSON = ROOT / "benchmarks" / "results" / "joint_vs_rna_pretraining.json"


VARIANTS = {
    # name: (modalities, config overrides)
    "rna-only": (["rna"], {"modality_dropout": 0.5}),
    "joint": (None, {"modality_dropout": 0.5}),
    "joint-no-dropout": (None, {"modality_dropout": 0.0}),
}


def train(variant: str, out: Path, *, max_epochs: int, cap: int, seed: int) -> None:
    import cellweave.datasets as d
    from cellweave import io
    from cellweave._io_utils import sha256_file
    from cellweave.train import pretrain

    table = d.list()
    names = list(table[table.pretrain].name)
    datasets = {n: io.read(d.path(n)) for n in names}
    hashes = {n: sha256_file(d.path(n)) for n in names}
    modalities, overrides = VARIANTS[variant]
    pretrain(datasets, out=out, preset="tiny", max_epochs=max_epochs, max_cells_per_dataset=cap, seed=seed,
             modalities=modalities, config_overrides=overrides, name=f"cellweave-tiny-{variant}", data_hashes=hashes,
             command=f"benchmarks/joint_vs_rna_pretraining.py --train {variant} --max-epochs {max_epochs} "
                     f"--max-cells-per-dataset {cap} --seed {seed}", progress=False)


def compare(models: dict[str, str | None], seeds: list[int], out_json: Path) -> None:
    from cellweave._io_utils import atomic_write_json
    from cellweave.bench import BenchmarkContext, HtmlReport
    from cellweave.bench.tasks import impute, spatial
    from cellweave.models import CellWeave

    rows = []
    for label, model in models.items():
        cw = CellWeave.load(model)
        # The baselines do not depend on the model: only the cellweave methods are run.
        ctx = BenchmarkContext(model=cw, seeds=tuple(seeds), progress=False, cache={"cellweave_only": True})
        records = impute.run(ctx, HtmlReport("impute")) + spatial.run(ctx, HtmlReport("spatial"))
        for r in records:
            if r.method.startswith("cellweave"):
                d = r.to_dict()
                d["method"] = f"{r.method} [{label}]"
                d["model_sha256"] = cw.model_hash
                rows.append(d)
    atomic_write_json(out_json, rows)
    logging.getLogger("cellweave").info("wrote %s (%d records)", out_json, len(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", choices=sorted(VARIANTS), default=None,
                   help="pretrain one variant into build/pretrained/cellweave-tiny-<variant> (or --model-dir)")
    p.add_argument("--model-dir", default=None, help="output folder of --train")
    p.add_argument("--joint", default=str(BUILD / "cellweave-tiny-joint"), help="joint model folder")
    p.add_argument("--joint-no-dropout", default=str(BUILD / "cellweave-tiny-joint-no-dropout"),
                   help="joint model pretrained without modality dropout (skipped when absent)")
    p.add_argument("--rna-only", default=str(BUILD / "cellweave-tiny-rna-only"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(OUT_JSON))
    p.add_argument("--max-epochs", type=int, default=6)
    p.add_argument("--max-cells-per-dataset", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.train:
        out = Path(args.model_dir) if args.model_dir else BUILD / f"cellweave-tiny-{args.train}"
        train(args.train, out, max_epochs=args.max_epochs, cap=args.max_cells_per_dataset, seed=args.seed)
        return 0
    models = {"joint": args.joint, "RNA only": args.rna_only}
    if (Path(args.joint_no_dropout) / "model.safetensors").is_file():
        models["joint, no modality dropout"] = args.joint_no_dropout
    compare(models, args.seeds, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
