"""Issue 12, points 2 and 4: which part of the novelty score tells each left-out type, on the panel's splits.

On the chosen panel datasets, for each seed's novel-type splits (each of the 4 largest types left out of a
stratified 70% reference, as the panel's novel-type protocol and ``benchmarks/novelty_scores.py`` make
them), the zero-shot embedding of the seed (all cells together, as the panel embeds them), and
:class:`cellweave.tl.LabelTransfer`'s defaults: the AUROC among the query of the default score and of
each part alone (``novelty_score="distance"``, ``"softmax"``, ``"composition"``, each with the other
defaults), the part weights the default fit estimated on the reference, and the panel's baselines on the
same split (logistic-regression max-softmax, kNN distance on PCA and after Harmony, the composition on
PCA). Prints the means by left-out type over the seeds and writes ``--out`` (JSON, every split). A
diagnostic, not a protocol: it reads the same splits the panel scores and chooses nothing. About 4
minutes for the Haber intestine and 5 seeds on one thread::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/novelty_type_parts.py \\
        --datasets scrna_mouse_intestine_haber2017_scdesign2 --seeds 0 1 2 3 4 --out parts.json
"""

from __future__ import annotations

import shlex
import sys
import time
from collections import defaultdict

import numpy as np

PARTS = ("distance", "softmax", "composition")


def part_aurocs(ref: np.ndarray, labels: np.ndarray, query: np.ndarray, is_novel: np.ndarray, *, seed: int = 0) -> dict:
    """AUROC of ``LabelTransfer``'s default novelty score and of each part alone for one split, and the
    weights the default fit gave the parts."""
    from sklearn.metrics import roc_auc_score

    from cellweave.tl import LabelTransfer

    default = LabelTransfer(seed=seed).fit(ref, labels)
    row = {"default": float(roc_auc_score(is_novel, default.predict(query).novelty)),
           "weights": {k: round(float(v), 3) for k, v in default.part_weights_.items()}}
    for part in PARTS:
        alone = LabelTransfer(novelty_score=part, seed=seed).fit(ref, labels)
        row[part] = float(roc_auc_score(is_novel, alone.predict(query).novelty))
    return row


def by_type(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Means over seeds per (dataset, left-out type) of every AUROC column, and over all splits."""
    groups = defaultdict(list)
    for row in rows:
        groups[f"{row['dataset']}: {row['type']}"].append(row)
        groups[f"{row['dataset']}: all"].append(row)
    columns = [k for k in rows[0] if isinstance(rows[0][k], float)]
    return {name: {c: float(np.mean([r[c] for r in group])) for c in columns} | {"splits": len(group)}
            for name, group in groups.items()}


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="novelty_type_parts.json")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the splits and the embedding")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()

    from _diagnostics import panel_selection
    from sklearn.metrics import roc_auc_score

    from cellweave._io_utils import atomic_write_json
    from cellweave.bench.tasks.panel import baseline_novelty_scores, novel_type_splits
    from cellweave.models import CellWeave

    model = CellWeave.load(args.model)
    t0, rows = time.perf_counter(), []
    for d in panel_selection(args.datasets):
        y = np.asarray(d.labels).astype(str)
        for seed in args.seeds:
            emb = model.embed(d.model_input, seed=seed, progress=False, dataset=d.name)[0]
            for held_out, tr, query in novel_type_splits(d, seed=seed, quick=True):
                is_novel = y[query] == held_out
                row = {"dataset": d.name, "seed": seed, "type": held_out, "novel cells": int(is_novel.sum()),
                       "query cells": len(query), **part_aurocs(emb[tr], y[tr], emb[query], is_novel, seed=seed)}
                for name, s in baseline_novelty_scores(d, tr, query, seed=seed).items():
                    row[name] = float(roc_auc_score(is_novel, s))
                rows.append(row)
        print(d.name, f"{time.perf_counter() - t0:.0f} s", flush=True)
    if not rows:
        sys.exit("no panel dataset matched --datasets; `cellweave datasets` lists the names")
    table = by_type(rows)
    columns = [k for k in next(iter(table.values())) if k != "splits"]
    print(f"\nnovel-type AUROC by left-out type, mean over seeds {args.seeds} (zero-shot, {model.name})")
    dataset = None
    for name, row in table.items():
        if name.split(": ")[0] != dataset:
            dataset = name.split(": ")[0]
            print(f"{dataset[:36]:36s}" + "".join(f"{c[:16]:>17s}" for c in columns))
        print(f"  {name.split(': ', 1)[1][:34]:34s}" + "".join(f"{row[c]:17.3f}" for c in columns))
    atomic_write_json(args.out, {"command": shlex.join(["benchmarks/novelty_type_parts.py", *sys.argv[1:]]),
                                 "model": model.name, "seeds": args.seeds, "seconds": round(time.perf_counter() - t0, 1),
                                 "by_type": table, "splits": rows})


if __name__ == "__main__":
    main()
