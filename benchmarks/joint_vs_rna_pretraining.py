"""The effect of joint pretraining: the same downstream numbers from a model pretrained on RNA
alone and from one pretrained on every modality (same preset, epochs, seed and cell caps).

Step 1 (``--train VARIANT --seed S``) pretrains the tiny preset on every bundled pretraining
dataset into ``build/pretrained/cellweave-tiny-<VARIANT>-seed<S>`` (not shipped): ``joint`` (all
modalities, modality dropout 0.5), ``joint-no-dropout`` (all modalities, no cross-modal masking:
the objective before issue 4) and ``rna-only`` (RNA of the same cells). Give all variants the
same ``--max-epochs`` and ``--max-cells-per-dataset``. Step 2 runs the cellweave methods of the
``impute`` and ``spatial`` benchmark tasks (quick protocol: 10x PBMC CITE-seq split by batch,
multiome random 30%, osmFISH) with each model, benchmark seed = pretraining seed (so the spread
over seeds includes the pretraining's), and writes their records, the method
suffixed with ``[joint]``, ``[RNA only]`` or ``[joint, no modality dropout]``, to
``benchmarks/published/joint_vs_rna/results.json``, which
``cellweave benchmark --task multimodal`` reads and reports.

    for s in 0 1 2; do for v in joint rna-only; do
        .venv/bin/python benchmarks/joint_vs_rna_pretraining.py --train $v --seed $s --max-epochs 3 \
            --max-cells-per-dataset 600
    done; done
    .venv/bin/python benchmarks/joint_vs_rna_pretraining.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "pretrained"
OUT_JSON = ROOT / "benchmarks" / "published" / "joint_vs_rna" / "results.json"


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


def compare(models: dict[str, dict[int, Path]], out_json: Path) -> None:
    from cellweave._io_utils import atomic_write_json
    from cellweave.bench import BenchmarkContext, HtmlReport
    from cellweave.bench.tasks import impute, spatial
    from cellweave.models import CellWeave

    rows = []
    for label, by_seed in models.items():
        for seed, path in by_seed.items():
            cw = CellWeave.load(path)
            # The baselines do not depend on the model: only the cellweave methods are run.
            # The quick protocol (10x PBMC CITE-seq by batch, multiome random split, osmFISH) keeps
            # six models x (fine-tuning + spatial) within about half an hour on two cores.
            ctx = BenchmarkContext(model=cw, seeds=(seed,), quick=True, progress=False,
                                   cache={"cellweave_only": True})
            records = impute.run(ctx, HtmlReport("impute")) + spatial.run(ctx, HtmlReport("spatial"))
            for r in records:
                if r.method.startswith("cellweave"):
                    d = r.to_dict()
                    d["method"] = f"{r.method} [{label}]"
                    d["model_sha256"] = cw.model_hash
                    rows.append(d)
            logging.getLogger("cellweave").info("evaluated %s, seed %d", label, seed)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_json, rows)
    logging.getLogger("cellweave").info("wrote %s (%d records)", out_json, len(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", choices=sorted(VARIANTS), default=None,
                   help="pretrain one variant into build/pretrained/cellweave-tiny-<variant> (or --model-dir)")
    p.add_argument("--model-dir", default=None, help="output folder of --train")
    p.add_argument("--build", default=str(BUILD), help="folder holding cellweave-tiny-<variant>-seed<S>")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="pretraining seeds to compare (each model is benchmarked with its own seed)")
    p.add_argument("--out", default=str(OUT_JSON))
    p.add_argument("--max-epochs", type=int, default=6)
    p.add_argument("--max-cells-per-dataset", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.train:
        out = Path(args.model_dir) if args.model_dir else Path(args.build) / f"cellweave-tiny-{args.train}-seed{args.seed}"
        train(args.train, out, max_epochs=args.max_epochs, cap=args.max_cells_per_dataset, seed=args.seed)
        return 0
    labels = {"joint": "joint", "rna-only": "RNA only", "joint-no-dropout": "joint, no modality dropout"}
    models: dict[str, dict[int, Path]] = {}
    for variant, label in labels.items():
        found = {s: Path(args.build) / f"cellweave-tiny-{variant}-seed{s}" for s in args.seeds}
        found = {s: f for s, f in found.items() if (f / "model.safetensors").is_file()}
        if found:
            models[label] = found
    if "joint" not in models or "RNA only" not in models:
        p.error(f"pretrain the joint and rna-only variants first (--train); looked in {args.build}")
    compare(models, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
