"""Issue 12 diagnostic: does a linear path from the input values to the cell state
(``CellWeaveConfig.profile_skip``) make the adapted embedding reach PCA?

On the panel datasets named (default: CA1 neurons, endocrinogenesis, Baron pancreas), kNN macro-F1
(k=15, stratified 5-fold, seed 0) of the embedding after ``cellweave.train.adapt`` (``--steps``
steps, the dataset's batch key, else its shift key, as the count decoder's covariate) from:

- ``scratch``: random weights, no profile path (the best start of ``adapt_start_points.py``);
- ``scratch + skip``: random weights with the profile path;
- ``pretrained + skip``: the shipped weights with a new, randomly initialized profile path;
- ``scratch + skip, log1p [384]``: random weights with the path, token values log1p of counts
  per 10k instead of within-cell quantiles [and 384 RNA tokens per cell instead of 256];

each read out as the cell state (``cls``, which holds the path) and as the shipped pooling
(``cls+bag``). PCA-50 on log-normalized HVGs of the same cells is printed beside them::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/profile_skip.py --out skip.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time

DEFAULT_DATASETS = ("scrna_mouse_ca1_zeisel2015_descend", "scrna_mouse_pancreas_endocrinogenesis_veloviz",
                    "scrna_pancreas_baron2016_human_mouse_cider")
VARIANTS = ("scratch", "scratch + skip", "pretrained + skip", "scratch + skip, log1p", "scratch + skip, log1p 384")


def with_skip(base, *, pretrained: bool, **overrides):
    """``base`` with the profile path added (new weights); the rest pretrained or random.
    ``overrides``: other config fields (only with random weights)."""
    from cellweave.models import CellWeave
    from cellweave.nn import CellWeaveModule

    config = dataclasses.replace(copy.deepcopy(base.config), profile_skip=True, **overrides)
    module = CellWeaveModule(config)
    if pretrained:
        missing, unexpected = module.load_state_dict(base.module.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("profile_") for k in missing), (missing, unexpected)
    return CellWeave(config, base.vocab, module=module, card=copy.deepcopy(base.card))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default="profile_skip.json")
    args = p.parse_args()

    from cellweave.bench import knn_accuracy
    from cellweave.bench.tasks.panel import N_NEIGHBORS, panel_datasets
    from cellweave.models import CellWeave
    from cellweave.train import adapt

    base = CellWeave.load(None)
    results: dict[str, dict[str, float]] = {}
    for d in panel_datasets():
        if d.name not in args.datasets:
            continue

        def f1(emb) -> float:
            return round(float(knn_accuracy(emb, d.labels, k=N_NEIGHBORS, seed=0)["macro_f1"]), 3)

        res: dict[str, float] = {}
        for name in args.variants:
            t = time.perf_counter()
            overrides = {}
            if "log1p" in name:
                overrides["value_encoding"] = "log1p"
            if "384" in name:
                overrides["context_length"] = {**base.config.context_length, "rna": 384}
            start = base if name == "scratch" else with_skip(base, pretrained=name.startswith("pretrained"),
                                                             **overrides)
            adapted = adapt(d.model_input, model=start, batch_key=d.batch_key or d.shift_key, max_steps=args.steps,
                            seed=0, progress=False, lr=args.lr, from_scratch=name.startswith("scratch"))
            corpus = adapted.prepare(d.model_input)
            for pooling in ("cls", "config"):
                label = f"{name}: {'cls' if pooling == 'cls' else adapted.config.pooling}"
                res[label] = f1(adapted.embed_corpus(corpus, seed=0, progress=False, pooling=pooling))
            res[f"{name}: seconds"] = round(time.perf_counter() - t, 1)
            print(d.name, {k: v for k, v in res.items() if k.startswith(name)}, flush=True)
        results[d.name] = res
    with open(args.out, "w") as fh:
        json.dump({"command": "benchmarks/profile_skip.py", "steps": args.steps, "lr": args.lr,
                   "metric": "kNN macro-F1 (k=15, 5-fold, seed 0)", "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
