"""The fine-tuning fits run as Lightning plans: seeded fits repeat bit for bit, and resume exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellweave.models import CellWeave


def _weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in module.state_dict().values()])


@pytest.fixture(scope="module")
def base_and_corpus(tiny_vocab_and_data):
    vocab, adata = tiny_vocab_and_data
    torch.manual_seed(0)
    base = CellWeave.from_preset("tiny", vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                 context_length={"rna": 32, "prot": 0, "atac": 0, "gene_activity": 0})
    return base, base.prepare(adata, dataset="synthetic"), adata


def test_finetune_plan_repeats_and_resumes_exactly(base_and_corpus, tmp_path) -> None:
    from cellweave.train import finetune_classifier

    base, corpus, adata = base_and_corpus
    labels = adata.obs["cell_type"].to_numpy()
    kw = dict(lr=1e-3, seed=3, progress=False)
    straight, summary = finetune_classifier(base, corpus, labels, max_epochs=4, **kw)
    again, _ = finetune_classifier(base, corpus, labels, max_epochs=4, **kw)
    assert torch.equal(_weights(straight.module), _weights(again.module))
    # 2 epochs with checkpoints, then resumed to 4: the same weights and loss curve as 4 straight.
    finetune_classifier(base, corpus, labels, max_epochs=2, checkpoint_dir=tmp_path, **kw)
    assert (tmp_path / "last.ckpt").is_file()
    resumed, resumed_summary = finetune_classifier(base, corpus, labels, max_epochs=4, checkpoint_dir=tmp_path,
                                                   resume=True, **kw)
    assert torch.equal(_weights(resumed.module), _weights(straight.module))
    assert resumed_summary["train_loss"] == summary["train_loss"]
    assert not torch.equal(_weights(straight.module), _weights(base.module))


def test_resume_without_a_checkpoint_names_the_fix(base_and_corpus, tmp_path) -> None:
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.train import finetune_classifier

    base, corpus, adata = base_and_corpus
    with pytest.raises(CellWeaveInputError, match="run without resume first"):
        finetune_classifier(base, corpus, adata.obs["cell_type"].to_numpy(), max_epochs=1, progress=False,
                            checkpoint_dir=tmp_path, resume=True)


def test_cross_modal_plan_repeats_and_stops_early() -> None:
    from cellweave.data import build_vocabulary, synthetic_mudata
    from cellweave.train import finetune_cross_modal

    md = synthetic_mudata(n_cells=120, n_genes=100, n_proteins=6, n_peaks=20, seed=0)
    vocab, _ = build_vocabulary({"s": md}, min_cells=1)
    torch.manual_seed(0)
    base = CellWeave.from_preset("tiny", vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                 context_length={"rna": 32, "prot": 8, "atac": 8, "gene_activity": 0})
    corpus = base.prepare(md)
    prot = md.mod["prot"].X
    prot = np.log1p(prot.toarray() if hasattr(prot, "toarray") else np.asarray(prot))
    names = [str(v) for v in md.mod["prot"].var_names]
    runs = [finetune_cross_modal(base, corpus, prot, target="prot", feature_names=names, input_modalities=["rna"],
                                 max_epochs=6, patience=2, freeze_encoder=False, lr=1e-3, seed=1, progress=False)
            for _ in range(2)]
    assert torch.equal(_weights(runs[0].decoder), _weights(runs[1].decoder))
    assert torch.equal(_weights(runs[0].model.module), _weights(runs[1].model.module))
    history = runs[0].summary["history"]
    assert 1 <= len(history) <= 6 and runs[0].summary["best_epoch"] <= len(history)
    # The kept weights are the best epoch's: predictions score its held-out error, not the last one's.
    assert runs[0].summary["best_val_mse"] <= min(h["val_mse"] for h in history) + 1e-4


def test_perturbation_plan_repeats() -> None:
    from cellweave.train import fit_head

    r = np.random.default_rng(0)
    t_pert = np.repeat(np.arange(6), 2)
    kw = dict(gene_tokens=r.normal(size=(30, 8)).astype(np.float32),
              perturbation_vectors=r.normal(size=(6, 8)).astype(np.float32), label_index=np.zeros(6, int), n_labels=0,
              targets=r.normal(size=(12, 30)).astype(np.float32), target_perturbation=t_pert,
              target_group=np.tile(np.array(["a", "b"]), 6), control_embedding=r.normal(size=(20, 10)).astype(np.float32),
              control_group=np.where(np.arange(20) % 2, "a", "b"), steps=40, batch_size=16, seed=2)
    (a, ma), (b, mb) = fit_head(**kw), fit_head(**kw)
    assert torch.equal(_weights(a), _weights(b)) and ma == mb
    assert mb["train_mse_last"] < mb["train_mse_first"]


def test_adversarial_plan_repeats_and_resumes_exactly(tmp_path) -> None:
    from cellweave.train import fit_batch_adapter

    r = np.random.default_rng(1)
    batch = r.integers(0, 3, 300).astype(str)
    z = (r.normal(size=(300, 12)) + 2.0 * (batch == "1")[:, None]).astype(np.float32)
    kw = dict(batch_size=64, seed=5)
    straight, summary = fit_batch_adapter(z, batch, max_epochs=6, **kw)
    again, _ = fit_batch_adapter(z, batch, max_epochs=6, **kw)
    assert torch.equal(_weights(straight), _weights(again)) and summary["batches"] == ["0", "1", "2"]
    assert len(summary["history"]) == 6
    fit_batch_adapter(z, batch, max_epochs=3, checkpoint_dir=tmp_path, **kw)
    resumed, resumed_summary = fit_batch_adapter(z, batch, max_epochs=6, checkpoint_dir=tmp_path, resume=True, **kw)
    assert torch.equal(_weights(resumed), _weights(straight))
    assert resumed_summary["history"] == summary["history"]
