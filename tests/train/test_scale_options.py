"""The scale knobs of pretraining on one process: refused values, mixed precision, gradient
accumulation with the learning-rate schedule it implies, gradient checkpointing. Tiny model,
synthetic cells."""

from __future__ import annotations

import json

import pytest
import torch

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import synthetic_adata
from cellweave.train import pretrain
from cellweave.train._pretrain import PRECISIONS

TINY = dict(d_model=16, n_layers=2, n_heads=2, d_ff=32,
            context_length={"rna": 32, "prot": 0, "atac": 0, "gene_activity": 0})


@pytest.fixture(scope="module")
def cells():
    return {"a": synthetic_adata(n_cells=100, n_genes=80, seed=5)}


@pytest.mark.parametrize(("kw", "match"), [
    ({"strategy": "dpp"}, "Unknown strategy 'dpp'"),
    ({"strategy": "fsdp"}, "use --strategy ddp"),
    ({"precision": "bf16-true"}, "precision 'bf16-true' is not supported"),
    ({"accumulate_grad_batches": 0}, "accumulate_grad_batches=0"),
    ({"num_nodes": 0}, "num_nodes=0"),
])
def test_refused_before_any_data_is_read(cells, tmp_path, kw, match) -> None:
    with pytest.raises(CellWeaveInputError, match=match):
        pretrain(cells, out=tmp_path / "m", config_overrides=TINY, progress=False, **kw)
    assert not (tmp_path / "m").exists()


def test_cli_offers_the_precisions_pretrain_accepts() -> None:
    from cellweave.cli import build_parser

    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["pretrain"]._actions
                  if a.dest == "precision")
    assert tuple(action.choices) == PRECISIONS


def test_bf16_mixed_accumulation_and_checkpointing_on_cpu(cells, tmp_path) -> None:
    """bf16 autocast runs on the CPU; 90 training cells in batches of 16 are 6 batches, 3 optimizer
    steps per epoch with accumulation 2, and the schedule spans exactly the run's 6 steps. The
    saved weights stay float32 and the returned model has checkpointing off."""
    model = pretrain(cells, out=tmp_path / "m", config_overrides=TINY, progress=False, max_epochs=2,
                     batch_size=16, precision="bf16-mixed", accumulate_grad_batches=2,
                     gradient_checkpointing=True, accelerator="cpu")
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    assert card["steps"] == 6
    dist = card["distributed"]
    assert dist["precision"] == "bf16-mixed" and dist["accumulate_grad_batches"] == 2
    assert dist["gradient_checkpointing"] is True and dist["lr_schedule_steps"] == 6
    assert dist["world_size"] == 1 and dist["effective_batch_size"] == 32
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    assert model.module.gradient_checkpointing is False
    assert "gradient_checkpointing" not in json.loads((tmp_path / "m" / "config.json").read_text())
    assert card["metrics"]["val_masked_mse"] < card["metrics"]["val_masked_mse_epoch0"]
