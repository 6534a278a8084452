"""Vocabulary coverage of every registered dataset: features mapped to a key and features in the
shipped model's vocabulary, with and without NCBI Gene aliases for old human symbols.

Prints a table and writes JSON:

    .venv/bin/python benchmarks/gene_coverage.py --out benchmarks/results/gene_coverage.json

Datasets that are neither in the mirror (``$CELLWEAVE_DATA_DIR``) nor in the cache are listed as
not available. Mouse genes have no alias table (org.Mm.eg.db is not packaged where we can reach it),
so their two columns agree.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from cellweave import datasets, modalities
from cellweave.genes import infer_organism, map_features
from cellweave.io import as_modalities
from cellweave.models import CellWeave

def coverage_rows(model: CellWeave) -> list[dict]:
    rows = []
    for entry in datasets.REGISTRY.values():
        if not datasets.is_available(entry.name):
            rows.append({"dataset": entry.name, "modality": "-", "available": False})
            continue
        data = datasets.load(entry.name)
        for mod, adata in as_modalities(data).items():
            if mod not in model.config.modalities:  # registered, but the model has no embedding for it
                continue
            needs_organism = modalities.get(mod).needs_organism  # genomic bins do not
            org = infer_organism(adata.var_names, adata.var.get("gene_id")) if needs_organism else None
            row = {"dataset": entry.name, "modality": mod, "available": True, "organism": org,
                   "features": adata.n_vars}
            for label, aliases in (("", False), (" +aliases", True)):
                fmap = map_features(adata.var, modality=mod, organism=org, aliases=aliases)
                in_vocab = model.vocab.lookup(fmap.keys) >= 0
                row[f"mapped{label}"] = round(float(fmap.mapped_mask.mean()), 4)
                row[f"in vocab{label}"] = round(float(in_vocab.mean()), 4)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/gene_coverage.json")
    args = parser.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    t = time.perf_counter()
    model = CellWeave.load()
    rows = coverage_rows(model)
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.drop(columns=["available"]).to_string(index=False))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model.name, "model_sha256": model.model_hash, "rows": rows,
                               "seconds": round(time.perf_counter() - t, 1)}, indent=2) + "\n")
    print(f"\nwrote {out} ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
