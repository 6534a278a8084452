"""Issue 12 diagnostic: does adaptation gain from the pretrained weights, and what start makes it gain most?

On the panel datasets named (default: CA1 neurons, endocrinogenesis, Baron pancreas), kNN macro-F1
(k=15, stratified 5-fold, seed 0) of the shipped model zero-shot and after ``cellweave.train.adapt``
(60 steps, the dataset's batch key, else its shift key, as the count decoder's covariate) from:

- the pretrained weights at adapt's default learning rate (3e-4) and at 1e-3;
- the pretrained weights with the top 1 or 2 transformer blocks re-initialized (re-initializing
  the top layers before fine-tuning helped BERT on small data; Zhang et al. 2021, "Revisiting
  few-sample BERT fine-tuning", ICLR);
- random weights (the same architecture) at 3e-4 and at 1e-3: the control.

``--variants`` picks some (names as in the table). Prints one line per run and writes ``--out``::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/adapt_start_points.py --out start.json
"""

from __future__ import annotations

import argparse
import copy
import time

DEFAULT_DATASETS = ("scrna_mouse_ca1_zeisel2015_descend", "scrna_mouse_pancreas_endocrinogenesis_veloviz",
                    "scrna_pancreas_baron2016_human_mouse_cider")
#: name -> (adapt keyword arguments, number of top blocks re-initialized)
VARIANTS = {
    "pretrained": ({}, 0),
    "pretrained, top block re-init": ({}, 1),
    "pretrained, top 2 blocks re-init": ({}, 2),
    "pretrained, lr 1e-3": ({"lr": 1e-3}, 0),
    "scratch": ({"from_scratch": True}, 0),
    "scratch, lr 1e-3": ({"from_scratch": True, "lr": 1e-3}, 0),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", default="adapt_start_points.json")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from _diagnostics import knn_f1, panel_selection

    from cellweave.models import CellWeave
    from cellweave.train import adapt

    base = CellWeave.load(None)
    results: dict[str, dict[str, float]] = {}
    for d in panel_selection(args.datasets):

        def f1(model) -> float:
            return knn_f1(model.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0], d.labels)

        res = {"zero-shot": f1(base)}
        for name in args.variants:
            kwargs, n_reinit = VARIANTS[name]
            t = time.perf_counter()
            model = copy.deepcopy(base)
            for block in list(model.module.blocks)[len(model.module.blocks) - n_reinit:] if n_reinit else []:
                block.apply(model.module._init_weights)
            adapted = adapt(d.model_input, model=model, batch_key=d.batch_key or d.shift_key, max_steps=args.steps,
                            seed=0, progress=False, **kwargs)
            res[name] = f1(adapted)
            res[f"{name}: seconds"] = round(time.perf_counter() - t, 1)
            print(f"{d.name:50s} {name:35s} {res[name]:.3f} ({res[f'{name}: seconds']:.0f} s)", flush=True)
        results[d.name] = res
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {"command": "benchmarks/adapt_start_points.py", "steps": args.steps,
                                 "metric": "kNN macro-F1 (k=15, 5-fold, seed 0)", "results": results})


if __name__ == "__main__":
    main()
