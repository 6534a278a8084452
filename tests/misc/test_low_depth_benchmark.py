"""benchmarks/low_depth.py: binomial thinning keeps a fraction of each cell's molecules, and a
protein-only dataset is thinned and embedded through its protein modality (the panel's
``protein_model_input``, which low_depth.py calls)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def low_depth(benchmark_script):
    return benchmark_script("low_depth")


def test_thinning_keeps_about_the_fraction_and_never_adds(low_depth) -> None:
    from cellweave.data import synthetic_adata

    a = synthetic_adata(n_cells=150, n_genes=120, seed=0)
    thin = low_depth.thinned(a, 0.2, seed=0)
    before, after = a.X.toarray(), thin.X.toarray()
    assert 0.17 < after.sum() / before.sum() < 0.23
    assert (after <= before).all() and np.array_equal(after, np.round(after))
    assert low_depth.thinned(a, 1.0, seed=0).X.sum() == a.X.sum()


def test_a_thinned_protein_dataset_is_embedded_through_its_protein_modality(low_depth) -> None:
    import torch

    from cellweave.bench.tasks.panel import protein_model_input
    from cellweave.data import build_vocabulary, synthetic_mudata
    from cellweave.models import CellWeave

    mdata = synthetic_mudata(n_cells=80, modalities=("prot",), n_proteins=12, seed=0)
    prot = mdata.mod["prot"]
    vocab, _ = build_vocabulary({"synthetic": mdata}, min_cells=1)
    torch.manual_seed(0)
    model = CellWeave.from_preset("tiny", vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                  context_length={"rna": 0, "prot": 12, "atac": 0, "gene_activity": 0})
    model.module.eval()
    full = protein_model_input(low_depth.thinned(prot, 1.0, seed=0))
    thin = protein_model_input(low_depth.thinned(prot, 0.05, seed=0))
    assert list(thin.mod) == ["prot"] and thin.n_obs == prot.n_obs
    assert thin.mod["prot"].X.sum() < 0.1 * prot.X.sum()
    e_full = model.embed(full, seed=0, progress=False)[0]
    e_thin = model.embed(thin, seed=0, progress=False)[0]
    assert e_full.shape[0] == e_thin.shape[0] == prot.n_obs
    # the model reads the thinned protein values, not some other input: the embeddings differ
    assert not np.allclose(e_full, e_thin, atol=1e-3)
