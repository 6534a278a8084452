"""Embedding throughput of the shipped model on this CPU, beside a Geneformer-sized BERT.

Prints a table and writes JSON. The BERT is transformers' ``BertModel`` with Geneformer's V1 shape
(6 layers, hidden 256, 4 heads, intermediate 512) over 2,048 tokens per cell with SDPA attention;
it is timed on random token ids, since only its cost per cell matters here.

    python benchmarks/embed_throughput.py --out benchmarks/results/embed_throughput.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import cellweave
from cellweave.models import CellWeave


def time_cellweave(model: CellWeave, dataset: str, n_cells: int, repeats: int, batch_size: int) -> dict:
    data = cellweave.datasets.load(dataset)
    data = data[:n_cells].copy()
    corpus = model.prepare(data, dataset=dataset)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.embed_corpus(corpus, batch_size=batch_size, progress=False)
        runs.append(len(corpus) / (time.perf_counter() - t))
    tokens = [model.tokenizer.tokenize(corpus, i, np.random.default_rng(i))[0].size for i in range(len(corpus))]
    t = time.perf_counter()
    model.prepare(data, dataset=dataset)
    prep = len(corpus) / (time.perf_counter() - t)
    return {"cells": len(corpus), "cells_per_s": runs, "median_cells_per_s": statistics.median(runs),
            "mean_tokens_per_cell": float(np.mean(tokens)), "prepare_cells_per_s": prep}


def time_bert(n_cells: int, repeats: int, batch_size: int, seq_len: int = 2048) -> dict:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=25426, hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                     intermediate_size=512, max_position_embeddings=seq_len, attn_implementation="sdpa")
    bert = BertModel(cfg).eval()
    ids = torch.randint(5, cfg.vocab_size, (n_cells, seq_len))
    runs = []
    with torch.inference_mode():
        bert(input_ids=ids[:1])  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            for s in range(0, n_cells, batch_size):
                bert(input_ids=ids[s:s + batch_size]).last_hidden_state[:, 0]
            runs.append(n_cells / (time.perf_counter() - t))
    return {"cells": n_cells, "cells_per_s": runs, "median_cells_per_s": statistics.median(runs),
            "mean_tokens_per_cell": float(seq_len)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or shipped name (default: shipped default)")
    p.add_argument("--dataset", default="multibatch_cellbench_sc_mixology")
    p.add_argument("--cells", type=int, default=1408)
    p.add_argument("--bert-cells", type=int, default=32, help="cells for the (slow) BERT timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default="benchmarks/results/embed_throughput.json")
    args = p.parse_args(argv)
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    model = CellWeave.load(args.model)
    cw = time_cellweave(model, args.dataset, args.cells, args.repeats, args.batch_size)
    bert = time_bert(args.bert_cells, args.repeats, batch_size=8)
    speedup = cw["median_cells_per_s"] / bert["median_cells_per_s"]
    rows = [
        ("cellweave " + model.name, cw["cells"], cw["mean_tokens_per_cell"], cw["median_cells_per_s"]),
        ("Geneformer-sized BERT (6x256, 2048 tok)", bert["cells"], bert["mean_tokens_per_cell"], bert["median_cells_per_s"]),
    ]
    sys.stdout.write(f"{'model':45s} {'cells':>6s} {'tokens/cell':>12s} {'cells/s (median of ' + str(args.repeats) + ')':>26s}\n")
    for name, n, tok, cps in rows:
        sys.stdout.write(f"{name:45s} {n:6d} {tok:12.1f} {cps:26.1f}\n")
    sys.stdout.write(f"speed-up: {speedup:.1f}x; data preparation {cw['prepare_cells_per_s']:.0f} cells/s\n")
    result = {
        "dataset": args.dataset, "cellweave": cw, "bert": bert, "speedup": speedup,
        "model": model.name, "model_sha256": model.model_hash,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
