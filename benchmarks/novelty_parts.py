"""Issue 12, point 4: which part of the novelty score calls a shifted query's known cells unknown, by type.

For each across-shift split of the chosen panel datasets (every group of the shift key held out in
turn), reference and query are embedded as ``benchmarks/annotate_files.py`` embeds them (two objects,
the query in the reference's token space, seed 0), and ``tl.annotate``'s label transfer
(:class:`cellweave.tl.LabelTransfer`, its defaults) is fit on the reference. For the query it prints
and writes, overall and by true type, each part's conformal rank among the held-out reference cells
after the shift adjustments (median, and the share above the ``novelty_quantile`` rank; the softmax
part also as the rule before ranked it), the share called unknown, and the same with
``sharpen_when_shifted=False`` (the rule before the thirty-fifth
session), beside the temperature applied and the part weights. A diagnostic, not a protocol: it reads
the query's labels only to group the cells. ``--adapt`` first adapts the model to each split's reference
and query cells together, as ``annotate --adapt`` does. About a minute for the pancreas dataset::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/novelty_parts.py \\
        --datasets scrna_pancreas_baron2016_human_mouse_cider --out novelty_parts.json
"""

from __future__ import annotations

import time

import numpy as np


def part_table(transfer, query_embedding: np.ndarray, labels: np.ndarray) -> dict:
    """Each part's conformal rank for the query (after ``predict``'s adjustments), unknown calls with and
    without ``sharpen_when_shifted``, overall and by label."""
    result = transfer.predict(query_embedding)  # sets the adjustments' state (temperature, far)
    z = transfer.scaler_.transform(query_embedding)
    parts = transfer._adjust_for_shift(transfer._components(z, query=True), z)
    q = transfer.novelty_quantile
    ranks = {name: np.searchsorted(transfer.calibration_[name], s, side="right") / len(transfer.calibration_[name])
             for name, s in parts.items()}
    flag = transfer.sharpen_when_shifted
    transfer.sharpen_when_shifted = False
    before = transfer.predict(query_embedding).unknown
    if "softmax" in parts:  # the softmax part as the rule before ranked it
        unsharpened = transfer._adjust_for_shift(transfer._components(z, query=True), z)["softmax"]
        ranks["softmax, not sharpened when shifted"] = np.searchsorted(
            transfer.calibration_["softmax"], unsharpened, side="right") / len(transfer.calibration_["softmax"])
    transfer.sharpen_when_shifted = flag
    transfer.predict(query_embedding)  # the state of the default again, for the record below

    def summary(mask: np.ndarray) -> dict:
        row = {"cells": int(mask.sum()), "unknown": float(result.unknown[mask].mean()),
               "unknown, not sharpened when shifted": float(before[mask].mean())}
        for name, r in ranks.items():
            row[f"{name}: median rank"] = float(np.median(r[mask]))
            row[f"{name}: share above {q:g}"] = float((r[mask] > q).mean())
        return row

    return {"temperature": float(transfer.temperature_), "distance_ignored": bool(transfer.distance_ignored_),
            "threshold": float(transfer.applied_threshold_),
            "part_weights": {k: float(v) for k, v in transfer.part_weights_.items()},
            "all": summary(np.ones(len(labels), bool)),
            "by_type": {str(t): summary(labels == t) for t in np.unique(labels)}}


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="novelty_parts.json")
    p.add_argument("--adapt", action="store_true",
                   help="adapt the model to each split's reference and query cells together first, as "
                        "`annotate --adapt` does (and `annotate_files.py --adapt`)")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from _diagnostics import two_object_splits

    import cellweave
    from cellweave._io_utils import atomic_write_json
    from cellweave.models import CellWeave
    from cellweave.tl import LabelTransfer

    model = CellWeave.load(args.model)
    t0 = time.perf_counter()
    out = {}
    for d, y, group, tr, te, ref, query, split_model in two_object_splits(args.datasets, model, adapt=args.adapt):
        cellweave.tl.embed(ref, model=split_model, seed=0, progress=False, spatial=False)
        embedded = cellweave.tl.annotate(query, reference=ref, label_key="panel_label", model=split_model,
                                         progress=False, copy=True, seed=0)
        transfer = LabelTransfer(seed=0).fit(ref.obsm["X_cellweave"], y[tr])
        table = part_table(transfer, embedded.obsm["X_cellweave"], y[te])
        out[f"{d.name} / {group}"] = {"reference_cells": len(tr), **table}
        print(f"\n{d.name}, query {group} ({len(tr)} reference cells): temperature "
              f"{table['temperature']:.3f}, threshold {table['threshold']:.3f}, weights "
              + ", ".join(f"{k} {v:.2f}" for k, v in table["part_weights"].items()))
        for name, row in {"all": table["all"], **table["by_type"]}.items():
            print(f"  {name:24s} " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in row.items()), flush=True)
    atomic_write_json(args.out, {"command": "benchmarks/novelty_parts.py"
                                 + (f" --model {args.model}" if args.model else "")
                                 + (" --adapt" if args.adapt else "")
                                 + (f" --datasets {' '.join(args.datasets)}" if args.datasets else ""),
                                 "model": model.name, "seed": 0, "seconds": round(time.perf_counter() - t0, 1),
                                 "splits": out})


if __name__ == "__main__":
    main()
