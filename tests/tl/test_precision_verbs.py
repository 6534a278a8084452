"""``precision="bf16-mixed"`` on the verbs that embed cells besides ``embed``: ``annotate``,
``map_query`` and ``integrate`` (library and command line). The embedding passes run under bf16
autocast, the result stays close to float32's, the choice is recorded, and a wrong precision is
refused before any embedding."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import cellweave
from cellweave._exceptions import CellWeaveInputError

VERBS = ("annotate", "map_query", "integrate")


def _run(verb: str, adata, model, precision: str):
    """Run ``verb`` on copies of ``adata`` (batch_0 the labelled reference, batch_1 the query; the
    whole data for integrate) and return the object it wrote into and its record's key."""
    if verb == "integrate":
        data = adata.copy()
        cellweave.tl.integrate(data, batch_key="batch", model=model, progress=False, precision=precision)
        return data, "integrate"
    ref = adata[adata.obs["batch"] == "batch_0"].copy()
    query = adata[adata.obs["batch"] == "batch_1"].copy()
    getattr(cellweave.tl, verb)(query, reference=ref, label_key="cell_type", model=model, progress=False,
                                precision=precision)
    return query, verb


@pytest.mark.parametrize("verb", VERBS)
def test_the_verb_embeds_in_bf16_when_asked_and_records_it(verb, tiny_rna_model, tiny_vocab_and_data,
                                                          attention_dtypes, row_cosines) -> None:
    import torch

    adata = tiny_vocab_and_data[1]
    out = {}
    for precision, dtype in (("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)):
        attention_dtypes.clear()
        data, key = _run(verb, adata, tiny_rna_model, precision)
        assert attention_dtypes and set(attention_dtypes) == {dtype}, precision  # every embedding pass
        assert data.uns["cellweave"][key]["precision"] == precision
        assert data.uns["cellweave"]["X_cellweave"]["precision"] == precision  # the embedding it wrote
        out[precision] = data
    a, b = out["32-true"].obsm["X_cellweave"], out["bf16-mixed"].obsm["X_cellweave"]
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    assert row_cosines(a, b).min() > 0.99


@pytest.mark.parametrize("verb", VERBS)
def test_a_wrong_precision_is_refused_before_any_embedding(verb, tiny_rna_model, tiny_vocab_and_data,
                                                          attention_dtypes) -> None:
    with pytest.raises(CellWeaveInputError, match="32-true, bf16-mixed"):
        _run(verb, tiny_vocab_and_data[1], tiny_rna_model, "16-mixed")
    assert attention_dtypes == []


def test_every_verb_that_runs_the_model_offers_the_library_precisions() -> None:
    from cellweave._cli.adapt import add_adapt
    from cellweave._cli.annotate import add_annotate
    from cellweave._cli.benchmark import add_benchmark
    from cellweave._cli.embed import add_embed
    from cellweave._cli.grn import add_grn
    from cellweave._cli.impute import add_impute
    from cellweave._cli.integrate import add_integrate
    from cellweave._cli.map_query import add_map_query
    from cellweave._cli.perturb import add_finetune_perturb, add_perturb, add_predict_perturb
    from cellweave.models import CellWeave

    for add in (add_embed, add_annotate, add_map_query, add_integrate, add_adapt, add_impute, add_grn, add_perturb,
                add_finetune_perturb, add_predict_perturb, add_benchmark):
        parser = argparse.ArgumentParser()
        add(parser, "model")
        action = next(a for a in parser._actions if a.dest == "precision")
        assert tuple(action.choices) == CellWeave.PRECISIONS and action.default == "32-true", add.__name__


def test_cli_annotate_and_integrate_pass_the_precision_on(tiny_rna_model, tiny_vocab_and_data, tmp_path) -> None:
    import anndata as ad

    from cellweave.cli import main

    adata = tiny_vocab_and_data[1]
    tiny_rna_model.save(tmp_path / "model")
    adata[adata.obs["batch"] == "batch_0"].copy().write_h5ad(tmp_path / "ref.h5ad")
    adata[adata.obs["batch"] == "batch_1"].copy().write_h5ad(tmp_path / "query.h5ad")
    adata.write_h5ad(tmp_path / "all.h5ad")
    model = str(tmp_path / "model")
    assert main(["-q", "annotate", str(tmp_path / "query.h5ad"), "--reference", str(tmp_path / "ref.h5ad"),
                 "--label-key", "cell_type", "--model", model, "--precision", "bf16-mixed",
                 "--out", str(tmp_path / "a.h5ad")]) == 0
    assert ad.read_h5ad(tmp_path / "a.h5ad").uns["cellweave"]["annotate"]["precision"] == "bf16-mixed"
    assert main(["-q", "integrate", str(tmp_path / "all.h5ad"), "--batch-key", "batch", "--model", model,
                 "--precision", "bf16-mixed", "--out", str(tmp_path / "i.h5ad")]) == 0
    assert ad.read_h5ad(tmp_path / "i.h5ad").uns["cellweave"]["integrate"]["precision"] == "bf16-mixed"


def test_annotate_finetunes_in_bf16_mixed_when_asked(tiny_rna_model, tiny_vocab_and_data, attention_dtypes,
                                                     training_linear_dtypes) -> None:
    """``finetune=True`` with ``precision="bf16-mixed"``: the fine-tuning runs as Lightning's bf16 mixed
    precision (linear layers bf16, attention float32 on a CPU while training), then the embedding
    passes in bf16; the fine-tuned weights stay float32 and the summary records it."""
    import torch

    adata = tiny_vocab_and_data[1]
    ref = adata[adata.obs["batch"] == "batch_0"].copy()
    query = adata[adata.obs["batch"] == "batch_1"].copy()
    cellweave.tl.annotate(query, reference=ref, label_key="cell_type", model=tiny_rna_model, finetune=True,
                          finetune_epochs=1, progress=False, precision="bf16-mixed")
    assert training_linear_dtypes == {torch.bfloat16}
    assert set(attention_dtypes) == {torch.float32, torch.bfloat16}  # training float32, embedding bf16
    rec = query.uns["cellweave"]["annotate"]
    assert rec["precision"] == "bf16-mixed" and rec["finetune"]["precision"] == "bf16-mixed"
    assert query.obsm["X_cellweave_finetuned"].dtype == np.float32
