"""Data-parallel pretraining on the CPU: 2 processes, gloo backend (slow: `make test-all`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import cellweave


@pytest.mark.slow
def test_pretrain_with_two_cpu_processes(tmp_path) -> None:
    adata = cellweave.datasets.load("multibatch_cellbench_sc_mixology")[:400].copy()
    adata.write_h5ad(tmp_path / "cells.h5ad")
    cmd = [sys.executable, "-m", "cellweave.cli", "-q", "pretrain", str(tmp_path / "cells.h5ad"),
           "--preset", "tiny", "--out", str(tmp_path / "model"), "--max-epochs", "2",
           "--accelerator", "cpu", "--devices", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert card["metrics"]["val_masked_mse"] < card["metrics"]["val_masked_mse_epoch0"]
    # 360 training cells, batch 64, split over 2 ranks: 3 steps per epoch per rank.
    assert card["steps"] == 6


def test_ddp_from_a_token_store_shards_cells_and_keeps_weights_equal(tmp_path) -> None:
    """Two CPU processes (gloo) pretrain from a sharded token store: in every epoch the ranks train
    on disjoint cells that together are the training set, reshuffled across shards between
    epochs, and they end with identical weights. Also: gradient accumulation and the learning-rate
    schedule's length under DDP."""
    cells = cellweave.datasets.load("multibatch_cellbench_sc_mixology")[:300].copy()
    cells.write_h5ad(tmp_path / "cells.h5ad")
    store, out = tmp_path / "store", tmp_path / "model"
    cli = [sys.executable, "-m", "cellweave.cli", "-q"]
    prepared = subprocess.run([*cli, "prepare", str(tmp_path / "cells.h5ad"), "--out", str(store),
                               "--chunk-size", "100"], capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    cmd = [*cli, "pretrain", str(store), "--preset", "tiny", "--rna-context", "64", "--out", str(out),
           "--max-epochs", "2", "--batch-size", "32", "--accumulate-grad-batches", "2",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--log-cells"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    n_train = sum(d["n_train"] for d in card["data"])
    assert n_train == 270  # 300 cells, 10% held out
    ranks = [json.loads((out / "cells_seen" / f"rank{r}.json").read_text()) for r in (0, 1)]
    orders = []
    for epoch in ("0", "1"):
        seen = [r["cells_per_epoch"][epoch] for r in ranks]
        assert [len(s) for s in seen] == [135, 135]  # each rank: half of the cells, each once
        assert len(set(seen[0])) == 135 and not set(seen[0]) & set(seen[1])
        assert set(seen[0]) | set(seen[1]) == set(range(n_train))
        orders.append(seen[0])
    assert orders[0] != orders[1]  # a new permutation every epoch
    assert set(orders[0]) != set(orders[1])  # ... across the whole store, not within a rank's fixed part
    # 135 cells per rank in batches of 32: 5 batches, 3 optimizer steps with accumulation 2, per epoch
    assert ranks[0]["steps"] == ranks[1]["steps"] == card["steps"] == 6
    assert card["distributed"]["world_size"] == 2 and card["distributed"]["lr_schedule_steps"] == 6
    assert card["distributed"]["effective_batch_size"] == 32 * 2 * 2
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    print(f"DDP from a store: {n_train} training cells; per rank per epoch "
          f"{[[len(r['cells_per_epoch'][e]) for e in ('0', '1')] for r in ranks]}; overlap "
          f"{[len(set(ranks[0]['cells_per_epoch'][e]) & set(ranks[1]['cells_per_epoch'][e])) for e in ('0', '1')]}; "
          f"steps {card['steps']}; weights sha256 {ranks[0]['weights_sha256'][:16]} / {ranks[1]['weights_sha256'][:16]}")
