"""Issue 12 diagnostic: which part of a pretrained model costs its zero-shot embedding?

An untrained model (random weights) of the deviation-token architecture embeds the panel better
zero-shot than the same architecture pretrained. This splits the pretrained weights in two: the
per-feature tables (the input gene embedding and the profile path's, ``GENE_TABLES`` of
``cellweave.train._adapt``) and everything else (the transformer, heads, norms). On every
development-panel dataset, kNN macro-F1 (k=15, stratified 5-fold, seed 0) of the embedding
(``cls+bag``) and of each half of it (``[cls]``: the cell state, ``[bag]``: the value-weighted bag
of input gene embeddings) for:

- ``pretrained``: the model as trained;
- ``untrained``: random weights of its architecture (``start_module(model, "random", seed=0)``);
- ``untrained + pretrained gene tables``: random weights except the pretrained tables
  (``start_module(model, "genes", seed=0)``, adapt's ``start="genes"`` without the adaptation).

If the third scores like the first, the tables carry the loss; if it scores like the second, the
transformer does. Prints one line per dataset and the means, and writes ``--out`` (JSON). About
12 minutes on one core::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/gene_tables.py --model M --out gene_tables.json
"""

from __future__ import annotations

import time

VARIANTS = (("pretrained", "pretrained"), ("untrained", "random"), ("untrained + pretrained gene tables", "genes"))


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="gene_tables.json")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from _diagnostics import halves, knn_f1, panel_selection, write_means

    from cellweave.models import CellWeave
    from cellweave.train import start_module

    base = CellWeave.load(args.model)
    if base.config.pooling != "cls+bag":
        raise SystemExit(f"{args.model}: pooling is {base.config.pooling!r}; this diagnostic splits a cls+bag embedding.")
    t0 = time.perf_counter()
    per_dataset = {}
    for d in panel_selection(args.datasets):
        row = {}
        for name, start in VARIANTS:
            model = CellWeave(base.config, base.vocab, module=start_module(base, start, seed=0).eval())
            emb = model.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0]
            cls, bag = halves(emb, model)
            row[name] = knn_f1(emb, d.labels)
            row[f"{name} [cls]"] = knn_f1(cls, d.labels)
            row[f"{name} [bag]"] = knn_f1(bag, d.labels)
        per_dataset[d.name] = row
        print(d.name, " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    write_means(per_dataset, args.out, command="benchmarks/gene_tables.py" + (f" --model {args.model}" if args.model else ""),
                model=base.name, seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    main()
