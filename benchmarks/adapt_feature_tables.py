"""Issue 12 diagnostic: a model pretrained with fixed feature tables, adapted with its tables trained.

``CellWeaveConfig.fixed_feature_tables`` keeps the gene tables fixed in pretraining; kept fixed in
``adapt`` too (``train_feature_tables=False``) they cap what adaptation can change, so ``adapt``
trains them by default. This script adapts such a model, tables trained, to each panel dataset
named (60 steps, lr 1e-3, at most 20 passes, seed 0; the dataset's batch key, else its shift key, as
the count decoder's covariate), beside the same adaptation from random weights of that architecture
(tables trained too). Scores: kNN macro-F1 (k=15, 5-fold, seed 0) of the embedding (cls+bag) and
of its cell-state half (cls). Writes OUT (JSON)::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/adapt_feature_tables.py MODEL OUT DATASET...
"""

from __future__ import annotations

import sys
import time


def main() -> None:
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    from _diagnostics import knn_f1, panel_selection

    from cellweave.models import CellWeave
    from cellweave.train import adapt

    base = CellWeave.load(sys.argv[1])
    out = {}
    for d in panel_selection(sys.argv[3:]):
        row = {}
        for start in ("pretrained", "random"):
            t = time.perf_counter()
            model = adapt(d.model_input, model=base, batch_key=d.batch_key or d.shift_key, start=start, seed=0,
                          max_epochs=20, max_steps=60, lr=1e-3, train_feature_tables=True,
                          progress=False)
            emb = model.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0]
            half = emb.shape[1] // 2
            row[f"{start}: cls+bag"] = knn_f1(emb, d.labels)
            row[f"{start}: cls"] = knn_f1(emb[:, :half], d.labels)
            row[f"{start}: steps"] = model.card["adaptation"]["steps"]
            row[f"{start}: seconds"] = round(time.perf_counter() - t, 1)
            print(d.name, row, flush=True)
        out[d.name] = row
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(sys.argv[2], out)


if __name__ == "__main__":
    main()
