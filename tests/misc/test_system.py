"""Process facts recorded in model cards."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import scipy.sparse as sp

from cellweave.data import synthetic_mudata


def test_peak_rss_is_the_child_own_not_its_parents() -> None:
    """A small child started from a process that holds ~600 MB reports its own peak (ru_maxrss
    would carry the parent's over fork and exec)."""
    code = (
        "import subprocess, sys\n"
        "big = bytearray(600 * 2**20)\n"
        "for i in range(0, len(big), 4096): big[i] = 1\n"
        "out = subprocess.run([sys.executable, '-c', 'from cellweave._system import peak_rss_mb; "
        "print(peak_rss_mb())'], capture_output=True, text=True, check=True).stdout\n"
        "print(out.strip())\n"
    )
    child_peak = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.strip())
    assert 5 < child_peak < 400, child_peak


_FIRST_HVG = (
    "import numpy as np, scipy.sparse as sp, anndata as ad, scanpy as sc, torch\n"
    "{setup}"
    "a = ad.AnnData(sp.random(300, 400, density=0.1, format='csr', dtype=np.float32, random_state=0) * 10)\n"
    "sc.pp.highly_variable_genes(a, n_top_genes=50)\n"
    "print(torch.get_num_threads())\n"
)
# numba's pool, once started, sets the OpenMP thread count to NUMBA_NUM_THREADS: 2 here, whatever the cores
_LIMITED = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}


def _threads_after_first_hvg(setup: str, **env: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FIRST_HVG.format(setup=setup)], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}).stdout
    return int(out.strip().splitlines()[-1])


def test_torch_keeps_its_thread_limit_through_numbas_first_parallel_call() -> None:
    """numba's OpenMP pool, started by scanpy's sparse HVG statistics, set the OpenMP thread count to
    NUMBA_NUM_THREADS, which torch shares: a limit of 1 (by the environment, or set in code) became 2.
    After keep_torch_threads it stays 1."""
    keep = "from cellweave._system import keep_torch_threads\n"
    assert _threads_after_first_hvg(keep + "keep_torch_threads()\n", **_LIMITED) == 1
    in_code = keep + "torch.set_num_threads(1)\nkeep_torch_threads()\n"
    assert _threads_after_first_hvg(in_code, OMP_NUM_THREADS="2", NUMBA_NUM_THREADS="2") == 1


def test_pretrain_from_the_command_line_keeps_the_thread_limit(tmp_path) -> None:
    """End to end: `cellweave pretrain --hvg-tokens` selects HVGs on sparse counts (numba's first
    parallel call) before training; its card records the 1 torch thread it was started with."""
    md = synthetic_mudata(n_cells=100, n_genes=80, modalities=("rna",), seed=1)
    md.mod["rna"].X = sp.csr_matrix(md.mod["rna"].X)
    md.write(tmp_path / "rna.h5mu")
    cli = "import sys; from cellweave.cli import main; sys.exit(main())"
    subprocess.run([sys.executable, "-c", cli, "-q", "pretrain", str(tmp_path / "rna.h5mu"), "--max-epochs", "1",
                    "--batch-size", "32", "--hvg-tokens", "30", "--out", str(tmp_path / "m")],
                   capture_output=True, text=True, check=True, env={**os.environ, **_LIMITED})
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    assert card["hardware"].endswith("torch threads 1"), card["hardware"]


def test_records_name_the_cpu_kernels_and_the_baselines_packages() -> None:
    """A re-run that differs from a published one must be traceable to the machine or a package: the
    recorded hardware names torch's CPU kernel set and the versions cover the baselines' libraries."""
    from importlib.metadata import version

    import torch

    from cellweave._system import hardware
    from cellweave.models._cellweave import BASELINE_PACKAGES, environment_versions

    assert f"({torch.backends.cpu.get_cpu_capability()} kernels)" in hardware()
    assert f"torch threads {torch.get_num_threads()}" in hardware()
    versions = environment_versions()
    assert {"scikit-learn", "scipy", "scvi-tools"} <= set(BASELINE_PACKAGES)
    for name in BASELINE_PACKAGES:
        assert versions[name] == version(name)
