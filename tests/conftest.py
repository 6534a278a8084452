"""Shared fixtures and the slow/gpu/internet markers (skipped unless asked for)."""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# The data mirror beside the checkout, as the Makefile sets it (so `pytest` alone finds it too).
_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get("CELLWEAVE_DATA_DIR") and (_SHARED_DATA / "README.md").is_file():
    os.environ["CELLWEAVE_DATA_DIR"] = str(_SHARED_DATA)
#: Without a mirror, tests that need a real dataset or a referenced gene table are skipped with
#: the reason (not failed): a fresh clone without ../shared/data and offline has no way to get them.
_NO_MIRROR = not os.environ.get("CELLWEAVE_DATA_DIR")


def _data_missing(exc: BaseException | None) -> BaseException | None:
    """The CellWeaveDataError behind ``exc`` (itself or in its context chain), if any."""
    from cellweave._exceptions import CellWeaveDataError

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, CellWeaveDataError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if _NO_MIRROR and call.excinfo is not None and report.failed:
        missing = _data_missing(call.excinfo.value)
        if missing is None and "(no mirror ($CELLWEAVE_DATA_DIR unset)" in report.capstderr:
            missing = report.capstderr.strip().splitlines()[-1]  # the CLI printed the data error and exited 2
        if missing is not None:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0,
                               "Skipped: needs the data mirror (../shared/data beside the checkout, or "
                               f"CELLWEAVE_DATA_DIR): {str(missing)[:160]}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")
    parser.addoption("--rungpu", action="store_true", default=False, help="run tests that need a CUDA GPU")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = {
        "slow": (config.getoption("--runslow"), "slow: run with --runslow"),
        "gpu": (config.getoption("--rungpu"), "needs a GPU: run with --rungpu"),
        "internet": (False, "needs the internet"),
    }
    for item in items:
        for marker, (enabled, reason) in skips.items():
            if marker in item.keywords and not enabled:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_arch():
    """The architecture of the unit tests' tiny models (RNA context only), as preset overrides.

    Read-only: take a copy to change it (``{**tiny_arch, "value_encoding": "log1p"}``).
    """
    return MappingProxyType(dict(d_model=16, n_layers=2, n_heads=2, d_ff=32,
                                 context_length={"rna": 48, "prot": 0, "atac": 0, "gene_activity": 0}))


@pytest.fixture(scope="session")
def tiny_vocab_and_data():
    """A synthetic AnnData and a vocabulary built from it."""
    from cellweave.data import build_vocabulary, synthetic_adata

    adata = synthetic_adata(n_cells=120, n_genes=200, seed=0)
    vocab, _ = build_vocabulary({"synthetic": adata}, min_cells=1)
    return vocab, adata


@pytest.fixture(scope="module")
def tiny_rna_model(tiny_vocab_and_data, tiny_arch):
    """A tiny untrained, seeded CellWeave (RNA context only) over ``tiny_vocab_and_data``'s vocabulary."""
    import torch

    from cellweave.models import CellWeave

    torch.manual_seed(0)
    model = CellWeave.from_preset("tiny", tiny_vocab_and_data[0], **tiny_arch)
    model.module.eval()
    return model


def _record_attention(monkeypatch, record) -> None:
    """Call ``record(queries)`` on every ``torch.nn.functional.scaled_dot_product_attention`` call
    (which CellWeave's blocks make) for the rest of the test."""
    import torch.nn.functional as F

    sdpa = F.scaled_dot_product_attention

    def recording_sdpa(q, *args, **kwargs):
        record(q)
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)


@pytest.fixture
def attention_dtypes(monkeypatch):
    """A list that gathers the dtype of the queries every attention call receives during the test."""
    seen = []
    _record_attention(monkeypatch, lambda q: seen.append(q.dtype))
    return seen


@pytest.fixture
def attention_calls(monkeypatch):
    """``(query dtype, gradients recorded)`` of every attention call during the test: passes without
    gradients are the embedding passes, passes with them the training steps."""
    import torch

    seen = []
    _record_attention(monkeypatch, lambda q: seen.append((q.dtype, torch.is_grad_enabled())))
    return seen


@pytest.fixture
def row_cosines():
    """The cosine between each row of two arrays of one shape (a cell's two embeddings)."""
    import numpy as np

    def cosines(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    return cosines


@pytest.fixture
def training_linear_dtypes():
    """A set that gathers the output dtype of every ``torch.nn.Linear`` called while gradients are
    recorded during the test (the linear layers of a training step: bf16 under bf16-mixed)."""
    import torch
    from torch.nn.modules.module import register_module_forward_hook

    seen = set()

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Linear) and torch.is_grad_enabled():
            seen.add(output.dtype)

    handle = register_module_forward_hook(record)
    yield seen
    handle.remove()


@pytest.fixture(scope="session")
def benchmark_script():
    """A loader of ``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package):
    ``benchmark_script("perf")``."""
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"cellweave_benchmark_{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
