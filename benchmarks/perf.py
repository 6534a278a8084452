"""Performance against this machine's limits: throughput, data loading and memory as the corpus grows.

One run measures, on the machine it runs on:

1. the ceiling: fp32 matmul FLOP/s through torch (n x n matmuls, best of a few), and the bf16
   one with ``--precisions bf16-mixed``;
2. cellweave presets ``tiny`` and ``small`` (random weights; a vocabulary of 20,000 human genes):
   embedding and pretraining cells/s at their default context, achieved FLOP/s as a share of the
   ceiling, and the share of the time spent tokenizing and collating (the DataLoader iterated
   alone); from both, which term bounds each; with ``--precisions 32-true bf16-mixed`` each
   preset again under CPU bf16 autocast (``pretrain --precision bf16-mixed``), against the bf16
   ceiling;
3. the Geneformer-sized BERT of ``embed_throughput.py`` (6 x 256, 2,048 tokens): embedding cells/s;
4. token-store reads: cells/s of ``TokenDataset`` over a store (one process) beside anndata's
   backed random row access on the same cells, and the loader wait as a share of step time in a
   short pretraining loop reading the store;
5. peak memory of ``prepare``, ``pretrain`` (fixed steps, from the store) and ``embed``, each in a
   fresh subprocess, on synthetic corpora of N cells x 20,000 genes with about 2,000 nonzero genes
   per cell, written to ``.h5ad`` in chunks (the matrix is never whole in memory).

FLOPs are counted as 2 x non-embedding parameters x tokens for a forward pass (x3 for a training
step) plus attention, 4 x L^2 x d per layer and cell (L tokens per cell). Peak memory is the
child's own ``VmHWM`` (peak resident set of its address space), beside the peak of its anonymous
memory (``RssAnon``, sampled every 50 ms): resident memory also counts the pages of memory-mapped
files a process has touched (torch's libraries; the store is read with positional reads, not
mapped), which the kernel can drop; anonymous memory is what it cannot. ``ru_maxrss`` (what
``cellweave._system.peak_rss_mb`` reads) is kept in the JSON only: Linux carries it over fork and
exec, so in a child it is at least the parent's resident set at the time of the fork.

``embed`` is measured twice: from the store (``open_store`` + ``CellWeave.embed_corpus``, which
streams in batches) and as ``cellweave embed FILE.h5ad`` starts (``cellweave.io.read`` reads the file
whole, then every cell is prepared; the forward passes are left out). The second is run only where
the file plainly fits in memory, and marked ``skipped`` elsewhere.

Each size's .h5ad and store are deleted once measured (``--keep`` keeps them): at 1M cells they take
about 16 + 15 GiB. On 2 idle CPU cores the full run takes hours, most of it the embedding forward
passes over every cell; ``--embed-max-cells`` bounds those.

    python benchmarks/perf.py --quick --out perf_quick.json      # 2k and 5k cells, ~3 minutes
    python benchmarks/perf.py --skip-memory --precisions 32-true bf16-mixed --out perf_bf16.json
    python benchmarks/perf.py --out benchmarks/results/perf.json  # 100k, 300k and 1M cells
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

N_GENES = 20_000
NNZ_PER_CELL = 2_000
CHILD_TAG = "PERF_CHILD "

# --------------------------------------------------------------------------------------------
# Pure helpers (tested in tests/misc/test_perf_benchmark.py)


def matmul_flops(n: int) -> float:
    """FLOPs of one n x n by n x n matmul (a multiply and an add per term)."""
    return 2.0 * n**3


def transformer_flops_per_cell(n_params: int, tokens: int, n_layers: int, d_model: int, *,
                               training: bool = False) -> float:
    """FLOPs to run one cell of ``tokens`` tokens through an encoder.

    ``n_params`` are the parameters every token passes through (the non-embedding ones): each does
    a multiply and an add per token (2 x params x tokens). Attention adds QK^T and AV, each
    2 x L^2 x d per layer (4 x L^2 x d). A training step costs about three forward passes (the
    backward pass computes gradients of activations and of weights, each as costly as the forward).
    """
    forward = 2.0 * n_params * tokens + 4.0 * n_layers * tokens**2 * d_model
    return 3.0 * forward if training else forward


def bound_verdict(flop_fraction: float, data_share: float) -> str:
    """Which term bounds a measured throughput, from its share of the matmul ceiling and the share
    of its time spent producing batches (tokenizing and collating, measured alone)."""
    if data_share >= 0.3:
        return f"Python/data overhead (tokenize+collate {data_share:.0%} of the time)"
    if flop_fraction >= 0.5:
        return f"compute ({flop_fraction:.0%} of the matmul ceiling)"
    if flop_fraction >= 0.2:
        return (f"mostly compute ({flop_fraction:.0%} of the ceiling); the rest is non-matmul kernels "
                "(softmax, LayerNorm, GELU: memory bandwidth)")
    return (f"memory bandwidth / kernel overhead ({flop_fraction:.0%} of the ceiling, data only "
            f"{data_share:.0%}): small matmuls and elementwise kernels")


def synthetic_csr_rows(rng: np.random.Generator, n_cells: int, n_genes: int = N_GENES,
                       nnz_per_cell: int = NNZ_PER_CELL,
                       gene_mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR parts ``(data, indices, row_nnz)`` of ``n_cells`` rows of raw counts.

    Each gene is measured in a cell with probability ``nnz_per_cell / n_genes`` (a Bernoulli
    process drawn through its geometric gaps, so the cost is per nonzero, not per gene), which
    gives ``nnz_per_cell`` nonzero genes per cell on average (binomial spread) with sorted column
    indices. Nonzero counts are 1 + a geometric draw of mean ``gene_mean[gene]`` (default: a
    lognormal spread over genes, so genes differ in level as in real data).
    """
    p = min(1.0, nnz_per_cell / n_genes)
    if gene_mean is None:
        gene_mean = np.random.default_rng(12345).lognormal(0.0, 1.0, size=n_genes)
    if p >= 1.0:
        pos = np.broadcast_to(np.arange(n_genes), (n_cells, n_genes))
        keep = np.ones((n_cells, n_genes), dtype=bool)
    else:
        # Enough gaps that every row passes the last gene: mean + 8 sd of the gaps' sum, plus slack.
        k = int(n_genes * p + 8 * np.sqrt(n_genes * p * (1 - p)) + 64)
        while True:
            pos = np.cumsum(rng.geometric(p, size=(n_cells, k)), axis=1) - 1
            if n_cells == 0 or pos[:, -1].min() >= n_genes:
                break
            k *= 2
        keep = pos < n_genes
    indices = pos[keep].astype(np.int32)
    row_nnz = keep.sum(axis=1).astype(np.int64)
    mean = gene_mean[indices]
    data = rng.geometric(1.0 / (1.0 + mean)).astype(np.float32)
    return data, indices, row_nnz


def synthetic_gene_table(n_genes: int = N_GENES) -> pd.DataFrame:
    """``var`` of the synthetic corpora: human gene symbols (index) and Ensembl IDs (``gene_id``)."""
    from cellweave.data import synthetic_adata

    return synthetic_adata(n_cells=2, n_genes=n_genes, seed=0).var[["gene_id"]].copy()


def synthetic_adata_in_memory(n_cells: int, var: pd.DataFrame, *, seed: int = 0):
    """A small in-memory AnnData of the same kind as the on-disk corpora (for throughput timing)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    data, indices, row_nnz = synthetic_csr_rows(np.random.default_rng(seed), n_cells, len(var))
    indptr = np.concatenate([[0], np.cumsum(row_nnz)])
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, len(var)))
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]), var=var.copy())
    adata.uns["x_kind"] = "counts"
    return adata


def write_synthetic_h5ad(path: str | os.PathLike, n_cells: int, var: pd.DataFrame, *, seed: int = 0,
                         chunk_cells: int = 4096, nnz_per_cell: int = NNZ_PER_CELL) -> dict[str, Any]:
    """Write an ``.h5ad`` of ``n_cells`` synthetic cells x ``len(var)`` genes, ``chunk_cells`` rows at a time.

    anndata writes the skeleton (obs, var, uns and an empty CSR ``X`` of the final shape); h5py then
    replaces ``X/data``, ``X/indices`` and ``X/indptr`` by resizable datasets filled chunk by
    chunk, so memory is that of one chunk whatever ``n_cells`` is. The file reads back with
    ``anndata.read_h5ad(path, backed="r")``. Written to a temporary name and renamed at the end.
    """
    import anndata as ad
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    n_genes = len(var)
    skeleton = ad.AnnData(
        X=sp.csr_matrix((n_cells, n_genes), dtype=np.float32),
        obs=pd.DataFrame(index=pd.Index([f"cell{i}" for i in range(n_cells)], dtype=object)),
        var=var.copy(),
    )
    skeleton.uns["x_kind"] = "counts"
    skeleton.write_h5ad(tmp)
    del skeleton
    rng = np.random.default_rng(seed)
    nnz = 0
    with h5py.File(tmp, "r+") as f:
        X = f["X"]
        for key in ("data", "indices", "indptr"):
            del X[key]
        growth = max(1, chunk_cells * nnz_per_cell)
        data_ds = X.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(min(growth, 1 << 20),))
        ind_ds = X.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(min(growth, 1 << 20),))
        indptr_ds = X.create_dataset("indptr", shape=(n_cells + 1,), dtype=np.int64)
        indptr_ds[0] = 0
        for start in range(0, n_cells, chunk_cells):
            n = min(chunk_cells, n_cells - start)
            data, indices, row_nnz = synthetic_csr_rows(rng, n, n_genes, nnz_per_cell)
            data_ds.resize((nnz + data.size,))
            ind_ds.resize((nnz + indices.size,))
            data_ds[nnz:] = data
            ind_ds[nnz:] = indices
            indptr_ds[start + 1: start + n + 1] = nnz + np.cumsum(row_nnz)
            nnz += int(data.size)
    os.replace(tmp, path)
    return {"path": str(path), "n_cells": n_cells, "n_genes": n_genes, "nnz": nnz, "bytes": path.stat().st_size}


def size_label(n: int) -> str:
    """100000 -> '100k', 1000000 -> '1M'."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


# --------------------------------------------------------------------------------------------
# Memory of this process


class PeakMemory:
    """Peak memory of this process from /proc/self/status (Linux): ``VmHWM``, and the peaks of
    ``RssAnon`` / ``RssFile`` sampled every ``interval`` seconds; ``ru_maxrss`` beside them."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak: dict[str, float] = {"RssAnon": 0.0, "RssFile": 0.0, "VmRSS": 0.0, "VmHWM": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        with contextlib.suppress(OSError):
            with open("/proc/self/status") as fh:
                for line in fh:
                    key = line.split(":", 1)[0]
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(line.split()[1]) / 1024)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def result(self) -> dict[str, float]:
        from cellweave._system import peak_rss_mb

        hwm = self.peak["VmHWM"] or self.peak["VmRSS"]
        return {"peak_rss_mb": round(hwm, 1) if hwm else round(peak_rss_mb(), 1),
                "peak_anon_mb": round(self.peak["RssAnon"], 1), "peak_file_mb": round(self.peak["RssFile"], 1),
                "ru_maxrss_mb": round(peak_rss_mb(), 1)}


# --------------------------------------------------------------------------------------------
# 1. The ceiling


def matmul_ceiling(n: int, repeats: int, dtype: str = "float32") -> dict[str, Any]:
    import torch

    a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    a @ b  # warm-up (thread pool, allocation)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        runs.append(matmul_flops(n) / (time.perf_counter() - t))
    return {"n": n, "dtype": dtype, "flops_per_s": runs, "best_flops_per_s": max(runs)}


#: ``--precisions`` of the throughput rows: Lightning's names, as ``pretrain --precision`` takes them.
PRECISIONS = ("32-true", "bf16-mixed")


def autocast(precision: str):
    """The CPU autocast context ``pretrain --precision`` gives (Lightning's bf16-mixed on a CPU):
    bf16 matrix products, float32 weights; a no-op for ``32-true``."""
    from cellweave.nn import precision_autocast

    return precision_autocast(precision)


# --------------------------------------------------------------------------------------------
# 2. cellweave presets


def _loader(dataset, batch_size: int, shuffle_seed: int | None = None):
    import torch

    from cellweave.data import EpochShuffleSampler, collate_tokens

    sampler = EpochShuffleSampler(dataset, shuffle_seed) if shuffle_seed is not None else None
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_tokens)


def _data_seconds(loader, n_batches: int | None = None) -> tuple[float, int]:
    """Seconds to iterate ``loader`` alone (tokenize + collate), and the cells it gave."""
    t, n = time.perf_counter(), 0
    for k, batch in enumerate(loader):
        n += batch["token_ids"].shape[0]
        if n_batches is not None and k + 1 >= n_batches:
            break
    return time.perf_counter() - t, n


def _non_embedding_params(module) -> int:
    return module.num_parameters(exclude_embeddings=True) - module.modality_embedding.weight.numel()


def train_loop(module, loader, *, steps: int, warmup: int = 1, precision: str = "32-true") -> dict[str, Any]:
    """``warmup`` + ``steps`` optimizer steps of cellweave's pretraining loss (AdamW, clipping as
    ``pretrain``; the forward pass under ``precision``'s autocast, as Lightning runs it), timing the
    wait for each batch apart from the step itself."""
    import torch

    from cellweave.train import PretrainPlan

    plan = PretrainPlan(module, lr=1e-3, warmup_steps=1, total_steps=steps + warmup)
    opt = plan.configure_optimizers()["optimizer"]
    module.train()
    it = iter(loader)
    wait = compute = 0.0
    cells = tokens = 0
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        t1 = time.perf_counter()
        with autocast(precision):
            loss = plan.losses(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        t2 = time.perf_counter()
        if k >= warmup:
            wait += t1 - t0
            compute += t2 - t1
            cells += batch["token_ids"].shape[0]
            tokens += int(batch["token_ids"].shape[1]) + 1  # padded length + CLS, per cell
    module.eval()
    return {"steps": steps, "cells": cells, "wait_s": wait, "compute_s": compute,
            "seq_len": tokens / max(steps, 1)}


def time_preset(preset: str, vocab, adata, *, embed_cells: int, embed_batch: int, train_batch: int,
                train_steps: int, ceiling: float, precision: str = "32-true") -> list[dict[str, Any]]:
    """Embedding and pretraining throughput of a preset with random weights on ``adata``, under
    ``precision`` (``ceiling``: the matmul ceiling of that precision's products)."""
    import torch

    from cellweave.data import TokenDataset
    from cellweave.models import CellWeave

    torch.manual_seed(0)
    model = CellWeave.from_preset(preset, vocab)
    model.module.eval()
    cfg = model.config
    corpus = model.prepare(adata[:embed_cells].copy())
    n_params = _non_embedding_params(model.module)
    rows = []

    # Embedding: the whole path (tokenize, collate, forward) and the loader alone.
    with autocast(precision):
        model.embed_corpus(corpus.subset(np.arange(min(len(corpus), embed_batch))), batch_size=embed_batch,
                           progress=False)  # warm-up
        t = time.perf_counter()
        model.embed_corpus(corpus, batch_size=embed_batch, progress=False)
        embed_s = time.perf_counter() - t
    ds = TokenDataset([corpus], model.tokenizer, mode="embed")
    data_s, _ = _data_seconds(_loader(ds, embed_batch))
    tokens = float(np.mean([ds[i]["token_ids"].size for i in range(min(len(ds), 64))])) + 1  # + CLS
    cps = len(corpus) / embed_s
    flops = transformer_flops_per_cell(n_params, int(round(tokens)), cfg.n_layers, cfg.d_model) * cps
    share = data_s / embed_s
    rows.append({"model": f"cellweave {preset}", "task": "embed", "precision": precision, "cells": len(corpus), "tokens_per_cell": tokens,
                 "cells_per_s": cps, "flops_per_s": flops, "ceiling_fraction": flops / ceiling,
                 "data_share": share, "bound": bound_verdict(flops / ceiling, share),
                 "non_embedding_params": n_params, "d_model": cfg.d_model, "n_layers": cfg.n_layers,
                 "d_ff": cfg.d_ff, "context_length": dict(cfg.context_length)})

    # Pretraining steps (masked values + cell-head targets, as `pretrain`).
    train_ds = TokenDataset([corpus], model.tokenizer, mode="train", seed=0, n_targets=cfg.n_cell_targets)
    res = train_loop(model.module, _loader(train_ds, train_batch, shuffle_seed=0), steps=train_steps,
                     precision=precision)
    step_s = res["wait_s"] + res["compute_s"]
    cps = res["cells"] / step_s
    flops = transformer_flops_per_cell(n_params, int(round(res["seq_len"])), cfg.n_layers, cfg.d_model,
                                       training=True) * cps
    share = res["wait_s"] / step_s
    rows.append({"model": f"cellweave {preset}", "task": "pretrain", "precision": precision, "cells": res["cells"],
                 "tokens_per_cell": res["seq_len"], "cells_per_s": cps, "flops_per_s": flops,
                 "ceiling_fraction": flops / ceiling, "data_share": share,
                 "bound": bound_verdict(flops / ceiling, share), "batch_size": train_batch, "steps": train_steps,
                 "non_embedding_params": n_params})
    return rows


# --------------------------------------------------------------------------------------------
# 3. The Geneformer-sized BERT (the shape of benchmarks/embed_throughput.py)


def time_bert(n_cells: int, *, batch_size: int, ceiling: float, seq_len: int = 2048) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertModel

    # Geneformer V1: 6 layers, hidden 256, 4 heads, intermediate 512, 2,048 tokens, SDPA attention,
    # as embed_throughput.py builds it.
    cfg = BertConfig(vocab_size=25426, hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                     intermediate_size=512, max_position_embeddings=seq_len, attn_implementation="sdpa")
    torch.manual_seed(0)
    bert = BertModel(cfg).eval()
    emb = bert.embeddings
    n_params = sum(p.numel() for p in bert.parameters()) - sum(
        m.weight.numel() for m in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings))
    ids = torch.randint(5, cfg.vocab_size, (n_cells, seq_len))
    with torch.inference_mode():
        bert(input_ids=ids[:1])  # warm-up
        t = time.perf_counter()
        for s in range(0, n_cells, batch_size):
            bert(input_ids=ids[s:s + batch_size]).last_hidden_state[:, 0]
        cps = n_cells / (time.perf_counter() - t)
    flops = transformer_flops_per_cell(n_params, seq_len, cfg.num_hidden_layers, cfg.hidden_size) * cps
    return {"model": "Geneformer-sized BERT (6x256)", "task": "embed", "cells": n_cells,
            "tokens_per_cell": float(seq_len), "cells_per_s": cps, "flops_per_s": flops,
            "ceiling_fraction": flops / ceiling, "data_share": 0.0,
            "bound": bound_verdict(flops / ceiling, 0.0) + "; random token ids, no tokenizer",
            "non_embedding_params": n_params}


# --------------------------------------------------------------------------------------------
# 4. Store reads


def store_reads(h5ad: Path, store: Path, n_read: int, *, train_batch: int, train_steps: int) -> dict[str, Any]:
    """Random-access reads of the same cells from the token store and from the backed .h5ad, and
    the loader wait in a short pretraining loop over the store (tiny preset, as ``pretrain``)."""
    import anndata as ad
    import torch

    from cellweave.data import TokenDataset, open_store, store_vocabulary
    from cellweave.models import CellWeave

    vocab = store_vocabulary(store)
    corpora = open_store(store)
    model = CellWeave.from_preset("tiny", vocab, value_encoding=corpora[0].value_encoding)
    n = sum(len(c) for c in corpora)
    cells = np.random.default_rng(1).choice(n, size=min(n_read, n), replace=False)

    ds = TokenDataset(corpora, model.tokenizer, mode="train", seed=0, n_targets=model.config.n_cell_targets)
    t = time.perf_counter()
    for i in cells:
        ds[int(i)]
    store_tok = len(cells) / (time.perf_counter() - t)

    values = corpora[0].blocks[0].values  # one source: raw rows, no tokenizing
    t = time.perf_counter()
    for i in cells:
        a, b = values.indptr[i], values.indptr[i + 1]
        values.indices[a:b], values.data[a:b]
    store_raw = len(cells) / (time.perf_counter() - t)

    backed = ad.read_h5ad(h5ad, backed="r")
    try:
        t = time.perf_counter()
        for i in cells:
            row = backed.X[int(i):int(i) + 1]
            if hasattr(row, "to_memory"):
                row = row.to_memory()
        backed_rows = len(cells) / (time.perf_counter() - t)
    finally:
        backed.file.close()

    torch.manual_seed(0)
    res = train_loop(model.module, _loader(ds, train_batch, shuffle_seed=0), steps=train_steps)
    step_s = res["wait_s"] + res["compute_s"]
    return {"cells_read": int(len(cells)), "corpus_cells": int(n),
            "store_tokenized_cells_per_s": store_tok, "store_raw_rows_per_s": store_raw,
            "anndata_backed_rows_per_s": backed_rows,
            "loader_wait_share": res["wait_s"] / step_s, "loader_wait_s_per_step": res["wait_s"] / train_steps,
            "step_s": step_s / train_steps, "train_batch": train_batch, "train_steps": train_steps}


# --------------------------------------------------------------------------------------------
# 5. Peak memory, each step in a fresh process


def _child_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    from cellweave.data import prepare_store
    from cellweave.genes import Vocabulary

    vocab = Vocabulary.load(spec["vocab"])
    m = prepare_store([spec["h5ad"]], spec["store"], vocab=vocab, value_encoding=spec["value_encoding"],
                      chunk_size=spec["chunk_size"])
    return {"n_cells": m["n_cells"]}


def _child_pretrain(spec: dict[str, Any]) -> dict[str, Any]:
    from cellweave.train import pretrain

    n = spec["n_cells"]
    model = pretrain(None, store=spec["store"], out=spec["out"], preset="tiny", max_epochs=1,
                     max_steps=spec["steps"], batch_size=spec["batch_size"], progress=False,
                     val_fraction=min(0.1, spec["val_cells"] / n))
    return {"steps": int(model.card.get("steps", 0))}


def _child_embed_store(spec: dict[str, Any]) -> dict[str, Any]:
    from cellweave.data import open_store, store_vocabulary
    from cellweave.models import CellWeave

    corpora = open_store(spec["store"])
    model = CellWeave.from_preset("tiny", store_vocabulary(spec["store"]), value_encoding=corpora[0].value_encoding)
    n = 0
    for corpus in corpora:
        if spec.get("max_cells") and len(corpus) > spec["max_cells"]:
            corpus = corpus.subset(np.arange(spec["max_cells"]))
        emb = model.embed_corpus(corpus, batch_size=128, progress=False)
        n += emb.shape[0]
    return {"cells_embedded": n}


def _child_embed_read(spec: dict[str, Any]) -> dict[str, Any]:
    """What ``cellweave embed FILE.h5ad`` does before its forward passes: read the file whole and
    prepare every cell (the forward pass itself streams in batches and is left out here)."""
    from cellweave import io
    from cellweave.data import prepare_cells
    from cellweave.genes import Vocabulary

    data = io.read(spec["h5ad"])
    corpus = prepare_cells(data, Vocabulary.load(spec["vocab"]), value_encoding=spec["value_encoding"])
    return {"cells_prepared": len(corpus)}


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "prepare": _child_prepare, "pretrain": _child_pretrain, "embed_store": _child_embed_store,
    "embed_read": _child_embed_read,
}


def run_child(task: str, spec: dict[str, Any], *, threads: int | None, timeout: float | None = None) -> dict[str, Any]:
    """Run ``task`` in a fresh Python process; return its result, seconds and peak memory."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task, "--child-spec", json.dumps(spec)]
    if threads:
        cmd += ["--threads", str(threads)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_TAG):
            out = json.loads(line[len(CHILD_TAG):])
            out["wall_s"] = round(seconds, 1)
            return out
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {"error": f"exit {proc.returncode}: {tail}", "wall_s": round(seconds, 1)}


def child_main(task: str, spec: dict[str, Any]) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    with PeakMemory() as mem:
        t = time.perf_counter()
        out = CHILDREN[task](spec)
        out["seconds"] = round(time.perf_counter() - t, 1)
    out.update(mem.result())
    sys.stdout.write(CHILD_TAG + json.dumps(out) + "\n")
    return 0


def memory_by_size(sizes: list[int], workdir: Path, vocab_file: Path, var: pd.DataFrame, *, args,
                   log: Callable[[str], None], reads_hook: Callable[[Path, Path], None] | None) -> list[dict[str, Any]]:
    """Generate each corpus, then prepare / pretrain / embed it in fresh processes; record their peaks."""
    value_encoding = "quantile"  # the presets' default, so the store serves the tiny model as built
    rows = []
    for k, n in enumerate(sizes):
        label = size_label(n)
        h5ad = workdir / f"synthetic_{label}.h5ad"
        store = workdir / f"store_{label}"
        t = time.perf_counter()
        gen = write_synthetic_h5ad(h5ad, n, var, seed=k)
        log(f"[{label}] wrote {h5ad.name}: {gen['nnz'] / n:.0f} nonzero per cell, {gen['bytes'] / 2**30:.2f} GiB "
            f"in {time.perf_counter() - t:.0f} s")
        rec: dict[str, Any] = {"n_cells": n, "h5ad_gib": gen["bytes"] / 2**30, "nnz_per_cell": gen["nnz"] / n}
        steps = {
            "prepare": {"h5ad": str(h5ad), "store": str(store), "vocab": str(vocab_file),
                        "value_encoding": value_encoding, "chunk_size": args.chunk_size},
            "pretrain": {"store": str(store), "out": str(workdir / f"model_{label}"), "steps": args.rss_steps,
                         "batch_size": args.rss_batch, "n_cells": n, "val_cells": args.val_cells},
            "embed_store": {"store": str(store), "max_cells": args.embed_max_cells},
        }
        for task, spec in steps.items():
            res = run_child(task, spec, threads=args.threads)
            rec[task] = res
            log(f"[{label}] {task}: " + (res.get("error") or
                f"peak RSS {res['peak_rss_mb']:.0f} MB (anon {res['peak_anon_mb']:.0f} MB), {res['seconds']:.0f} s"))
            if task == "prepare":
                rec["store_gib"] = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**30
                if reads_hook is not None and k == 0 and "error" not in res:
                    reads_hook(h5ad, store)
        # `cellweave embed` reads the .h5ad whole: run it only where that plainly fits in memory.
        # `cellweave embed`'s own estimate (float32 values + int32 columns of X), with a margin.
        from cellweave._cli.embed import memory_to_embed_mb

        need_gib = memory_to_embed_mb(gen["nnz"] * 8) / 1024
        avail = _mem_available_gib()
        if avail is None or need_gib < 0.8 * avail:
            res = run_child("embed_read", {"h5ad": str(h5ad), "vocab": str(vocab_file),
                                           "value_encoding": value_encoding}, threads=args.threads)
            log(f"[{label}] embed_read: " + (res.get("error") or f"peak RSS {res['peak_rss_mb']:.0f} MB"))
        else:
            res = {"skipped": f"would need ~{need_gib:.0f} GiB (file read whole), {avail:.0f} GiB available"}
            log(f"[{label}] embed_read skipped: {res['skipped']}")
        rec["embed_read"] = res
        rows.append(rec)
        if not args.keep:
            h5ad.unlink(missing_ok=True)
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(workdir / f"model_{label}", ignore_errors=True)
    return rows


def _mem_available_gib() -> float | None:
    from cellweave._system import available_memory_mb

    mb = available_memory_mb()
    return None if mb is None else mb / 1024


# --------------------------------------------------------------------------------------------
# Tables


def throughput_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    table = pd.DataFrame([{
        "model": r["model"], "task": r["task"], "precision": r.get("precision", "32-true"), "tokens/cell": round(r["tokens_per_cell"]),
        "cells/s": round(r["cells_per_s"], 1), "GFLOP/s": round(r["flops_per_s"] / 1e9, 1),
        "of ceiling": f"{r['ceiling_fraction']:.0%}", "data share": f"{r['data_share']:.0%}",
        "bound by": r["bound"]} for r in rows])
    return table


def memory_table(rows: list[dict[str, Any]], key: str = "peak_rss_mb") -> pd.DataFrame:
    """Steps x corpus sizes, side by side: peak MB of each step at each size."""
    import pandas as pd

    steps = ["prepare", "pretrain", "embed_store", "embed_read"]
    names = {"prepare": "prepare (h5ad -> store)", "pretrain": "pretrain (store, fixed steps)",
             "embed_store": "embed (store, embed_corpus)", "embed_read": "embed CLI route (read whole + prepare)"}
    table = {}
    for r in rows:
        col = {}
        for s in steps:
            res = r.get(s, {})
            if "error" in res:
                col[names[s]] = "error"
            elif "skipped" in res:
                col[names[s]] = "skipped"
            else:
                col[names[s]] = f"{res.get('peak_rss_mb', float('nan')):.0f} (anon {res.get('peak_anon_mb', float('nan')):.0f})"
        table[f"{size_label(r['n_cells'])} cells"] = col
    return pd.DataFrame(table)


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and few cells/steps (a smoke run)")
    p.add_argument("--out", default="perf.json", help="JSON result file")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="corpus sizes in cells for the memory runs (default 100000 300000 1000000; --quick 2000 5000)")
    p.add_argument("--workdir", default=None, help="where corpora and stores are written (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep each size's .h5ad and store (default: deleted after use)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="prepare chunk size in cells (default: cellweave's, 10,000; --quick 1,000 so chunks are exercised)")
    p.add_argument("--rss-steps", type=int, default=None, help="pretraining steps in the memory runs")
    p.add_argument("--rss-batch", type=int, default=64)
    p.add_argument("--val-cells", type=int, default=None, help="validation cells of the memory-run pretraining")
    p.add_argument("--embed-max-cells", type=int, default=None,
                   help="embed at most this many cells of each store in the memory runs (default: all of them)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["32-true"],
                   help="autocast of the cellweave throughput rows, as `pretrain --precision` (default 32-true; "
                        "bf16-mixed pays on CPUs with bf16 matrix units, e.g. AMX)")
    p.add_argument("--skip-throughput", action="store_true", help="only the memory runs")
    p.add_argument("--skip-memory", action="store_true", help="only the throughput measurements")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.sizes = args.sizes or ([2000, 5000] if q else [100_000, 300_000, 1_000_000])
    if args.chunk_size is None:
        from cellweave.data import DEFAULT_CHUNK_SIZE

        args.chunk_size = 1000 if q else DEFAULT_CHUNK_SIZE
    args.rss_steps = args.rss_steps or (3 if q else 20)
    args.val_cells = args.val_cells or (200 if q else 1000)
    if q and args.embed_max_cells is None:  # a smoke run: the forward pass over every cell is what takes long
        args.embed_max_cells = 256
    args.matmul_n, args.matmul_repeats = 2048, 3 if q else 5
    args.tiny = dict(embed_cells=128 if q else 1024, embed_batch=64 if q else 128, train_batch=16 if q else 64,
                     train_steps=2 if q else 10)
    args.small = dict(embed_cells=8 if q else 256, embed_batch=8 if q else 64, train_batch=2 if q else 16,
                      train_steps=2 if q else 5)
    args.bert_cells = 4 if q else 32
    args.read_cells = 500 if q else 5000
    args.reads_batch, args.reads_steps = (8, 3) if q else (64, 10)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child_main(args.child, json.loads(args.child_spec))
    import pandas as pd

    from cellweave._io_utils import atomic_write_json
    from cellweave.genes import Vocabulary

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        sys.stderr.write(f"[{time.perf_counter() - t_start:6.0f} s] {msg}\n")
        sys.stderr.flush()

    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "memory_available_gib": _mem_available_gib()},
    }
    var = synthetic_gene_table()
    vocab = Vocabulary(var["gene_id"].tolist())

    ceiling = matmul_ceiling(args.matmul_n, args.matmul_repeats)
    result["ceiling"] = ceiling
    peak = ceiling["best_flops_per_s"]
    log(f"ceiling: fp32 matmul {args.matmul_n}^2 {peak / 1e9:.1f} GFLOP/s")
    peaks = {"32-true": peak}
    if "bf16-mixed" in args.precisions:
        result["ceiling_bf16"] = matmul_ceiling(args.matmul_n, args.matmul_repeats, dtype="bfloat16")
        peaks["bf16-mixed"] = result["ceiling_bf16"]["best_flops_per_s"]
        log(f"ceiling: bf16 matmul {args.matmul_n}^2 {peaks['bf16-mixed'] / 1e9:.1f} GFLOP/s "
            f"(CPU kernels: {torch.backends.cpu.get_cpu_capability()})")

    rows: list[dict[str, Any]] = []
    if not args.skip_throughput:
        adata = synthetic_adata_in_memory(max(args.tiny["embed_cells"], args.small["embed_cells"]), var, seed=99)
        for preset in ("tiny", "small"):
            for precision in args.precisions:
                rows += time_preset(preset, vocab, adata, ceiling=peaks[precision], precision=precision,
                                    **getattr(args, preset))
                log(f"{preset} {precision}: embed {rows[-2]['cells_per_s']:.1f} cells/s, "
                    f"pretrain {rows[-1]['cells_per_s']:.1f} cells/s")
        rows.append(time_bert(args.bert_cells, batch_size=4, ceiling=peak))
        log(f"BERT: embed {rows[-1]['cells_per_s']:.2f} cells/s")
    result["throughput"] = rows

    def reads_hook(h5ad: Path, store: Path) -> None:
        result["store_reads"] = store_reads(h5ad, store, args.read_cells, train_batch=args.reads_batch,
                                            train_steps=args.reads_steps)
        log(f"store reads: {result['store_reads']['store_tokenized_cells_per_s']:.0f} tokenized cells/s vs "
            f"{result['store_reads']['anndata_backed_rows_per_s']:.0f} backed rows/s")

    mem_rows: list[dict[str, Any]] = []
    if not args.skip_memory:
        workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cellweave-perf-"))
        workdir.mkdir(parents=True, exist_ok=True)
        vocab_file = workdir / "vocab.json"
        vocab.save(vocab_file)
        try:
            mem_rows = memory_by_size(args.sizes, workdir, vocab_file, var, args=args, log=log, reads_hook=reads_hook)
        finally:
            if not args.keep and not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    result["memory"] = mem_rows

    # The tables.
    out_lines = [f"ceiling: fp32 matmul {args.matmul_n}x{args.matmul_n}, best of {args.matmul_repeats}: "
                 f"{peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs)"]
    if "bf16-mixed" in peaks:
        out_lines[0] += f"; bf16 matmul {peaks['bf16-mixed'] / 1e9:.1f} GFLOP/s (the bf16-mixed rows' ceiling)"
    if rows:
        with pd.option_context("display.max_colwidth", 90, "display.width", 250):
            out_lines.append(throughput_table(rows).to_string(index=False))
    if "store_reads" in result:
        r = result["store_reads"]
        out_lines.append(
            f"token store reads ({r['cells_read']} random cells of {r['corpus_cells']}, one process): "
            f"{r['store_tokenized_cells_per_s']:.0f} tokenized cells/s, {r['store_raw_rows_per_s']:.0f} raw rows/s; "
            f"anndata backed random rows: {r['anndata_backed_rows_per_s']:.0f} rows/s; loader wait "
            f"{r['loader_wait_share']:.0%} of step time (tiny, batch {r['train_batch']}, {r['step_s']:.2f} s/step)")
    if mem_rows:
        with pd.option_context("display.width", 250):
            out_lines.append("peak RSS, MB (VmHWM; anon = peak RssAnon), each step in a fresh process:\n"
                             + memory_table(mem_rows).to_string())
        secs = {f"{size_label(r['n_cells'])}": {s: r[s].get("seconds") for s in ("prepare", "pretrain", "embed_store",
                                                                                  "embed_read")} for r in mem_rows}
        out_lines.append("seconds per step: " + json.dumps(secs))
    sys.stdout.write("\n\n".join(out_lines) + "\n")
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
