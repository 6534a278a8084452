"""A pretraining run killed (SIGKILL) five times and resumed each time ends with exactly the weights
of an uninterrupted run: order and samples are functions of (seed, epoch), and checkpoints are
written atomically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cellweave.data import synthetic_adata

EPOCHS = 6
N_KILLS = 5


def _command(data, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cellweave.cli", "-q", "pretrain", str(data), "--out", str(out),
            "--max-epochs", str(EPOCHS), "--batch-size", "32", "--seed", "0", "--accelerator", "cpu", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path) -> None:
    data = tmp_path / "cells.h5ad"
    synthetic_adata(n_cells=360, n_genes=150, seed=3).write_h5ad(data)
    full = tmp_path / "full"
    subprocess.run(_command(data, full), check=True, env=_env(), timeout=600)

    killed = tmp_path / "killed"
    ckpt = killed / "checkpoints" / "last.ckpt"
    rng = np.random.default_rng(0)
    kills = 0
    resume: tuple[str, ...] = ()
    while kills < N_KILLS:
        seen = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        proc = subprocess.Popen(_command(data, killed, *resume), env=_env())
        deadline = time.time() + 300
        # Wait for a new checkpoint, then kill somewhere inside the next epoch.
        while time.time() < deadline and proc.poll() is None:
            if ckpt.exists() and ckpt.stat().st_mtime_ns != seen:
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            break  # finished before we could kill it again
        time.sleep(float(rng.uniform(0.05, 0.8)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        resume = ("--resume",)
    assert kills >= 3, f"only {kills} kills landed before the run finished"
    if not (killed / "model.safetensors").exists():
        subprocess.run(_command(data, killed, "--resume"), check=True, env=_env(), timeout=600)
    assert (killed / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
    # No temporary left behind by the kills.
    assert not [p for p in killed.rglob("*") if ".tmp" in p.name]


@pytest.fixture(autouse=True)
def _skip_without_sigkill():
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs POSIX signals")
