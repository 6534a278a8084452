"""Fixtures of the cell-level tl tests: the shipped model and the embedded cell-line mixture."""

from __future__ import annotations

import pytest

import cellweave
from cellweave.models import CellWeave


@pytest.fixture(scope="module")
def model() -> CellWeave:
    return CellWeave.load(None)


@pytest.fixture(scope="module")
def cellbench(model):
    """The cell-line mixture, embedded once so that every test reuses ``obsm['X_cellweave']``."""
    adata = cellweave.datasets.load("multibatch_cellbench_sc_mixology")
    cellweave.tl.embed(adata, model=model, progress=False)
    return adata
