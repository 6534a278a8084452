"""``precision="bf16-mixed"`` on the verbs of perturbations and networks: ``perturb``, ``grn``,
``finetune_perturbation`` and ``predict_perturbation`` (library and command line; ``impute`` is in
``test_impute.py``, beside its trained model). The forward passes run under bf16 autocast, the
results stay close to float32's and come back in float32, the choice is recorded, and a wrong
precision is refused before any forward pass."""

from __future__ import annotations

import numpy as np
import pytest

import cellweave
from cellweave._exceptions import CellWeaveInputError
from cellweave.train import finetune_perturbation

PRECISIONS = (("32-true", "float32"), ("bf16-mixed", "bfloat16"))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _ran_in(seen: list, dtype: str) -> bool:
    """Whether attention ran at all and only in ``dtype`` (``attention_dtypes``' record)."""
    return bool(seen) and {str(d).removeprefix("torch.") for d in seen} == {dtype}


def test_perturb_runs_its_passes_in_bf16_when_asked(tiny_rna_model, tiny_vocab_and_data, attention_dtypes) -> None:
    adata = tiny_vocab_and_data[1]
    genes = [str(g) for g in adata.var_names[:3]]
    out = {}
    for precision, dtype in PRECISIONS:
        attention_dtypes.clear()
        out[precision] = cellweave.tl.perturb(adata, genes=genes, model=tiny_rna_model, progress=False,
                                              precision=precision, copy=True)
        assert _ran_in(attention_dtypes, dtype)
        assert out[precision].uns["cellweave"]["perturb"]["precision"] == precision
    a, b = out["32-true"], out["bf16-mixed"]
    shift_a, shift_b = a.obs["cellweave_shift"].to_numpy(), b.obs["cellweave_shift"].to_numpy()
    delta_a, delta_b = a.layers["cellweave_perturb_delta"], b.layers["cellweave_perturb_delta"]
    assert shift_b.dtype == np.float32 and delta_b.dtype == np.float32
    assert not np.array_equal(shift_a, shift_b)  # bf16 did run
    assert _corr(shift_a, shift_b) > 0.99 and _corr(delta_a, delta_b) > 0.95


@pytest.mark.parametrize("method", ["attention", "perturbation"])
def test_grn_runs_its_passes_in_bf16_when_asked(method, tiny_rna_model, tiny_vocab_and_data,
                                                attention_dtypes) -> None:
    adata = tiny_vocab_and_data[1]
    out = {}
    for precision, dtype in PRECISIONS:
        attention_dtypes.clear()
        out[precision] = cellweave.tl.grn(adata, model=tiny_rna_model, method=method, regulators="all", n_cells=60,
                                          progress=False, precision=precision, copy=True)
        assert _ran_in(attention_dtypes, dtype)
        assert out[precision].uns["cellweave"]["cellweave_grn"]["precision"] == precision
    a = out["32-true"].varp["cellweave_grn"].toarray()
    b = out["bf16-mixed"].varp["cellweave_grn"]
    assert b.dtype == np.float32 and not np.array_equal(a, b.toarray())
    assert _corr(a, b.toarray()) > 0.95


def test_grn_embedding_makes_no_forward_pass_at_either_precision(tiny_rna_model, tiny_vocab_and_data,
                                                                  attention_dtypes) -> None:
    adata = tiny_vocab_and_data[1]
    nets = [cellweave.tl.grn(adata, model=tiny_rna_model, method="embedding", regulators="all", progress=False,
                             precision=p, copy=True).varp["cellweave_grn"].toarray() for p, _ in PRECISIONS]
    assert attention_dtypes == []
    np.testing.assert_array_equal(nets[0], nets[1])


def test_finetune_and_predict_perturbation_embed_in_bf16_when_asked(tiny_rna_model, tiny_vocab_and_data, tmp_path,
                                                                   attention_dtypes) -> None:
    import torch

    adata = tiny_vocab_and_data[1]
    preds = {}
    for precision, dtype in PRECISIONS:
        attention_dtypes.clear()
        torch.manual_seed(0)
        pm = finetune_perturbation(adata, model=tiny_rna_model, zero_shot=True, steps=30, n_control_cells=32,
                                   min_cells=3, progress=False, precision=precision, out=tmp_path / precision)
        assert _ran_in(attention_dtypes, dtype)
        assert pm.meta["precision"] == precision
        assert all(p.dtype == torch.float32 for p in pm.head.parameters())  # the head trains in float32
        attention_dtypes.clear()
        pred = cellweave.tl.predict_perturbation(model=tmp_path / precision, perturbation=pm.meta[
            "training_perturbations"][0], progress=False, precision=precision)
        # The loaded folder's zero-shot features are made at the precision it was fine-tuned at.
        assert _ran_in(attention_dtypes, dtype)
        assert pred.uns["cellweave"]["predict_perturbation"]["precision"] == precision
        assert pred.layers["cellweave_predicted"].dtype == np.float32
        preds[precision] = pred.layers["cellweave_predicted"]
    assert _corr(preds["32-true"], preds["bf16-mixed"]) > 0.99


def test_a_wrong_precision_is_refused_before_any_forward_pass(tiny_rna_model, tiny_vocab_and_data,
                                                              attention_dtypes) -> None:
    adata = tiny_vocab_and_data[1]
    gene = str(adata.var_names[0])
    calls = [
        lambda: cellweave.tl.perturb(adata, genes=[gene], model=tiny_rna_model, precision="16-mixed", copy=True),
        lambda: cellweave.tl.grn(adata, model=tiny_rna_model, method="attention", precision="16-mixed", copy=True),
        lambda: finetune_perturbation(adata, model=tiny_rna_model, precision="16-mixed", progress=False),
        lambda: cellweave.tl.predict_perturbation(model="no/such/folder", perturbation=gene, precision="16-mixed"),
    ]
    for call in calls:
        with pytest.raises(CellWeaveInputError, match="32-true, bf16-mixed"):
            call()
    assert attention_dtypes == []


def test_cli_perturb_grn_and_the_fine_tuned_pair_pass_the_precision_on(tiny_rna_model, tiny_vocab_and_data,
                                                                       tmp_path) -> None:
    import anndata as ad
    import pandas as pd

    from cellweave.cli import main

    adata = tiny_vocab_and_data[1]
    tiny_rna_model.save(tmp_path / "model")
    adata.write_h5ad(tmp_path / "cells.h5ad")
    model, cells, gene = str(tmp_path / "model"), str(tmp_path / "cells.h5ad"), str(adata.var_names[0])
    assert main(["-q", "perturb", cells, "--model", model, "--genes", gene, "--precision", "bf16-mixed",
                 "--out", str(tmp_path / "p.h5ad")]) == 0
    assert ad.read_h5ad(tmp_path / "p.h5ad").uns["cellweave"]["perturb"]["precision"] == "bf16-mixed"
    assert main(["-q", "grn", cells, "--model", model, "--method", "attention", "--regulators", "all",
                 "--n-cells", "40", "--precision", "bf16-mixed", "--out", str(tmp_path / "g.tsv"),
                 "--out-h5ad", str(tmp_path / "g.h5ad")]) == 0
    assert ad.read_h5ad(tmp_path / "g.h5ad").uns["cellweave"]["cellweave_grn"]["precision"] == "bf16-mixed"
    assert len(pd.read_csv(tmp_path / "g.tsv", sep="\t")) > 0
    assert main(["-q", "finetune-perturb", cells, "--model", model, "--max-steps", "20", "--n-control-cells", "16",
                 "--precision", "bf16-mixed", "--out", str(tmp_path / "ft")]) == 0
    pert = next(p for p in adata.obs["perturbation"].cat.categories if p != "control")
    assert main(["-q", "predict-perturb", "--model", str(tmp_path / "ft"), "--perturbation", pert,
                 "--precision", "bf16-mixed", "--out", str(tmp_path / "pred.h5ad")]) == 0
    rec = ad.read_h5ad(tmp_path / "pred.h5ad").uns["cellweave"]["predict_perturbation"]
    assert rec["precision"] == "bf16-mixed"
