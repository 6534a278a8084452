"""``cellweave embed --devices 2``: two CPU processes (gloo) embed different cells and gather them
back in cell order; the result equals the one-device embedding, from a file and from a token store."""

from __future__ import annotations

import os
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

import cellweave


def _cli(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "cellweave.cli", "-q", *args], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_one_device_embedding_in_cell_order(tmp_path) -> None:
    cells = cellweave.datasets.load("multibatch_cellbench_sc_mixology")[:101].copy()  # odd: uneven shares
    cells.write_h5ad(tmp_path / "cells.h5ad")
    one = cellweave.tl.embed(cells, progress=False, copy=True).obsm["X_cellweave"]

    _cli("embed", str(tmp_path / "cells.h5ad"), "--out", str(tmp_path / "two.h5ad"),
         "--devices", "2", "--accelerator", "cpu")
    two = ad.read_h5ad(tmp_path / "two.h5ad")
    assert list(two.obs_names) == list(cells.obs_names)
    np.testing.assert_allclose(two.obsm["X_cellweave"], one, rtol=1e-4, atol=1e-5)

    # A token store of two shards: one predict over all its cells, back in store order.
    _cli("prepare", str(tmp_path / "cells.h5ad"), "--out", str(tmp_path / "store"), "--chunk-size", "60")
    _cli("embed", str(tmp_path / "store"), "--out", str(tmp_path / "store_two.h5ad"),
         "--devices", "2", "--accelerator", "cpu")
    from_store = ad.read_h5ad(tmp_path / "store_two.h5ad")
    single = cellweave.tl.embed_store(tmp_path / "store", progress=False)
    assert list(from_store.obs_names) == list(single.obs_names) == list(cells.obs_names)
    np.testing.assert_allclose(from_store.obsm["X_cellweave"], single.obsm["X_cellweave"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(from_store.obsm["X_cellweave"], one, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_store_embeds_as_its_file(tmp_path) -> None:
    """The shipped model gives 45% of this dataset's genes generated codes; a store prepared for it
    keeps them (as `cellweave prepare` does), so it embeds as the file does."""
    from cellweave.data import prepare_store

    cells = cellweave.datasets.load("multibatch_cellbench_sc_mixology")[:101].copy()
    cells.write_h5ad(tmp_path / "cells.h5ad")
    model = cellweave.models.CellWeave.load(None)
    prepare_store([tmp_path / "cells.h5ad"], tmp_path / "store", vocab=model.stored_vocab,
                  value_encoding=model.config.value_encoding, generate_codes=model.code_modalities, chunk_size=60)
    from_store = cellweave.tl.embed_store(tmp_path / "store", model=model, progress=False).obsm["X_cellweave"]
    one = cellweave.tl.embed(cells, model=model, progress=False, copy=True).obsm["X_cellweave"]
    np.testing.assert_allclose(from_store, one, rtol=1e-4, atol=1e-5)
