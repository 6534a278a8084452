"""Issue 12 diagnostic: which half of the zero-shot embedding a pretraining recipe changes.

A ``cls+bag`` embedding joins the CLS state (what the transformer and the profile path compute)
and the bag (a value-weighted mean of the input feature tables; with
``fixed_feature_tables`` these stay at their random codes, so pretraining never changes the bag).
A recipe that works on the cell state can only show in the CLS half, diluted by the bag in the
whole embedding. On every development-panel dataset, kNN macro-F1 (k=15, stratified 5-fold, seed
0) of each model's embedding as it embeds by default (its own ``hvg_tokens``), of its CLS half and
of its bag half; with ``--untrained``, also of random weights of the first model's architecture
(seed 0), the control every recipe has to beat.

Prints one line per dataset and the means, and writes ``--out`` (JSON). About 3 minutes per model
on two idle cores::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/embedding_halves.py \\
        --models cellweave-tiny build/exp/M --untrained --out embedding_halves.json
"""

from __future__ import annotations

import time


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="embedding_halves.json")
    p.add_argument("--models", nargs="+", required=True, help="model folders or shipped names")
    p.add_argument("--untrained", action="store_true", help="add random weights of the first model's architecture")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from _diagnostics import panel_selection, random_weights, scores_with_halves, write_means

    from cellweave.models import CellWeave

    models = {m: CellWeave.load(m) for m in args.models}
    if args.untrained:
        first = models[args.models[0]]
        models["untrained"] = random_weights(first)
    t0 = time.perf_counter()
    per_dataset = {}
    for d in panel_selection(args.datasets):
        row = {}
        for label, model in models.items():
            row.update(scores_with_halves(label, model, d.model_input, d.labels, d.name))
        per_dataset[d.name] = row
        print(d.name, " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    command = ("benchmarks/embedding_halves.py --models " + " ".join(args.models)
               + (" --untrained" if args.untrained else ""))
    write_means(per_dataset, args.out, command=command, model=", ".join(args.models), seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    main()
