"""Data-parallel pretraining on the CPU: 2 processes, gloo backend (slow: `make test-all`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cellweave


@pytest.mark.slow
def test_pretrain_with_two_cpu_processes(tmp_path) -> None:
    adata = cellweave.datasets.load("multibatch_cellbench_sc_mixology")[:400].copy()
    adata.write_h5ad(tmp_path / "cells.h5ad")
    cmd = [sys.executable, "-m", "cellweave.cli", "-q", "pretrain", "--data", str(tmp_path / "cells.h5ad"),
           "--preset", "tiny", "--out", str(tmp_path / "model"), "--max-epochs", "2",
           "--accelerator", "cpu", "--devices", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert card["metrics"]["val_masked_mse"] < card["metrics"]["val_masked_mse_epoch0"]
    # 360 training cells, batch 64, split over 2 ranks: 3 steps per epoch per rank.
    assert card["steps"] == 6
