"""Issue 12, point 4: ``annotate`` as a user runs it, on a reference file and a query file.

The panel embeds each dataset once, all cells together, and then splits it, so reference and query
share one tokenization (the same HVGs, the same gene means). A user's reference and query are two
files, and ``tl.annotate`` embeds each; with HVG tokens and deviation selection each side then
chose its own genes. This script runs the panel's across-shift splits (every group of the shift key
held out in turn: cell lines across protocols, ADT across studies, pancreas across species) as two
separate AnnData objects through ``cellweave.tl.annotate`` (the query without labels), seed 0, with
the query tokenized in its own space or in the reference's (``reference_token_space``), each with
and without ``shift_adjust``, the default without ``sharpen_when_shifted`` (the rule before the
thirty-fifth session) and the default with one held-out split instead of ``cross_fit`` (the rule before
the thirty-sixth). ``--adapt`` first adapts the model to each split's reference and query cells
together, as ``annotate --adapt`` does, and runs only the default and the two rules before it. Every row
runs today's defaults apart from what its name changes. Scores:
macro-F1 of the raw prediction (before "unknown"), the share
of query cells (all of reference types) called "unknown", and the same logistic regression on the
reference's standardized HVGs as the panel's baseline.

Prints one line per split and the means over datasets, and writes ``--out`` (JSON)::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/annotate_files.py --out annotate_files.json
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

VARIANTS = {
    "own tokens": dict(reference_token_space=False, shift_adjust=False),
    "own tokens + shift adjustment": dict(reference_token_space=False),
    "reference tokens": dict(shift_adjust=False),
    "reference tokens + shift adjustment, not sharpened when shifted": dict(sharpen_when_shifted=False),
    "reference tokens + shift adjustment, one held-out split": dict(cross_fit=False),
    "reference tokens + shift adjustment (default)": dict(),
}
#: With ``--adapt``: the default and the rules before ``sharpen_when_shifted`` and before ``cross_fit``.
ADAPTED_VARIANTS = {name: VARIANTS[name] for name in list(VARIANTS)[-3:]}


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="annotate_files.json")
    p.add_argument("--adapt", action="store_true",
                   help="adapt the model to each split's reference and query cells together first, reference / "
                        "query as the batch covariate, as `annotate --adapt` does, and score only the default "
                        "rows (the default, and the rules before sharpen_when_shifted and before cross_fit)")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from _diagnostics import two_object_splits
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    import cellweave
    from cellweave.bench.tasks.panel import standardized_hvgs
    from cellweave.models import CellWeave

    model = CellWeave.load(args.model)
    t0 = time.perf_counter()
    per_dataset = defaultdict(list)
    for d, y, group, tr, te, ref, query, split_model in two_object_splits(args.datasets, model, adapt=args.adapt):
        # The reference is embedded in its own space whatever the variant: once, reused by annotate.
        cellweave.tl.embed(ref, model=split_model, seed=0, progress=False, spatial=False)
        row, embedded = {}, {}
        for name, options in (ADAPTED_VARIANTS if args.adapt else VARIANTS).items():
            # The shift adjustment acts after embedding: its variant reuses the query embedded
            # (in the same token space) by the variant without it.
            space = options.get("reference_token_space", True)
            out = cellweave.tl.annotate(embedded.get(space, query), reference=ref, label_key="panel_label",
                                        model=split_model, progress=False, copy=True, seed=0, **options)
            embedded.setdefault(space, out)
            raw = out.obs["cellweave_prediction"].astype(str).to_numpy()
            transfer = out.uns["cellweave"]["annotate"]
            row[f"{name}: unknown"] = float((raw == "unknown").mean())
            # Macro-F1 of the classifier's label, "unknown" included as a wrong answer.
            row[f"{name}: macro-F1 (unknown wrong)"] = float(f1_score(y[te], raw, average="macro",
                                                                      labels=sorted(set(y[te]))))
            row[f"{name}: shift factor"] = float(transfer["shift_factor"])
        ztr, zte = standardized_hvgs(d, tr, te)
        lr = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(ztr, y[tr])
        row["logreg-L2 (HVG): macro-F1"] = float(f1_score(y[te], lr.predict(zte), average="macro"))
        per_dataset[d.name].append(row)
        print(d.name, group, " ".join(f"{k}={v:.3f}" for k, v in row.items() if "factor" not in k), flush=True)
    means = {name: {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
             for name, rows in per_dataset.items()}
    overall = {k: round(float(np.mean([m[k] for m in means.values()])), 4) for k in next(iter(means.values()))}
    print("\nmean over datasets")
    for k, v in overall.items():
        print(f"  {k:55s} {v:.3f}")
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {
        "command": "benchmarks/annotate_files.py" + (f" --model {args.model}" if args.model else "")
                   + (" --adapt" if args.adapt else ""),
        "model": model.name, "seed": 0, "seconds": round(time.perf_counter() - t0, 1),
        "per_split": per_dataset, "per_dataset": means, "mean": overall})


if __name__ == "__main__":
    main()
