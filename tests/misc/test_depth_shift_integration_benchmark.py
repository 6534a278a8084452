"""benchmarks/depth_shift_integration.py: a panel dataset split into a full and a thinned half, the half as
the batch, and the integration records gathered per model."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellweave.bench._results import make_records
from cellweave.bench.tasks.panel import PanelData
from cellweave.data import log_normalize


@pytest.fixture()
def depth_shift(benchmark_script, monkeypatch):
    module = benchmark_script("depth_shift_integration")
    monkeypatch.syspath_prepend(str(Path(module.__file__).parent))  # depth_shift_set imports low_depth
    return module


def _panel_data(n_per_type=(40, 21)) -> PanelData:
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], n_per_type)
    x = sp.csr_matrix(rng.poisson(20.0, size=(len(labels), 30)).astype(np.float32))
    adata = ad.AnnData(x)
    adata.obs_names = [f"c{i}" for i in range(len(labels))]
    return PanelData("toy", adata, adata, labels, None, None, log_normalize(adata))


def test_one_half_of_each_type_is_thinned(depth_shift) -> None:
    d = _panel_data()
    shifted = depth_shift.depth_shift_set(d, 0.5, seed=0)
    half = shifted.adata.obs[depth_shift.HALF].to_numpy()
    assert shifted.batch_key == depth_shift.HALF and shifted.model_input is shifted.adata
    assert list(shifted.adata.obs_names) == list(d.adata.obs_names)  # every cell kept, in its order
    assert list(shifted.labels) == list(d.labels)
    for t, n in (("a", 40), ("b", 21)):  # stratified: half of each type, rounded down
        assert ((half == "thinned") & (shifted.labels == t)).sum() == n // 2
    before = np.asarray(d.adata.X.sum(axis=1)).ravel()
    after = np.asarray(shifted.adata.X.sum(axis=1)).ravel()
    full = half == "full"
    np.testing.assert_array_equal(after[full], before[full])  # the full half untouched
    ratio = after[~full].sum() / before[~full].sum()
    assert 0.45 < ratio < 0.55
    assert (after[~full] <= before[~full]).all()
    with pytest.raises(ValueError, match="fraction"):
        depth_shift.depth_shift_set(d, 1.0, seed=0)


def test_rows_name_each_models_methods_and_keep_baselines_once(depth_shift) -> None:
    recs = []
    for method, total in (("cellweave (harmony)", 0.6), ("cellweave (adapted) + harmony", 0.8),
                          ("scratch transformer (same adaptation) + harmony", 0.7), ("Harmony", 0.65)):
        recs += make_records("panel", "toy", "integration", 0, method,
                             {"scIB total": total, "scIB bio conservation": 0.9, "scIB batch correction": 0.5})
    recs += make_records("panel", "toy", "adaptation", 0, "cellweave (adapted)", {"seconds": 3.0})
    first = depth_shift.rows_of(recs, "m1", baselines=True)
    assert set(first) == {"m1: cellweave (harmony)", "m1: cellweave (adapted) + harmony",
                          "m1: scratch transformer (same adaptation) + harmony", "Harmony"}
    assert first["m1: cellweave (adapted) + harmony"]["scIB total"] == 0.8
    second = depth_shift.rows_of(recs, "m2", baselines=False)
    assert "Harmony" not in second and set(second) == {k.replace("m1", "m2") for k in first if k != "Harmony"}
