"""Fine-tuning the encoder on labelled cells (a classification head on the cell embedding)."""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch import nn

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import TokenDataset, collate_tokens

from ._engine import fit_plan, seed_fit

if TYPE_CHECKING:
    from cellweave.data import CellCorpus
    from cellweave.models import CellWeave
    from cellweave.nn import CellWeaveModule

logger = logging.getLogger(__name__)


class FinetunePlan(L.LightningModule):
    """Cross-entropy of a head on the pooled cell embedding, trained with every encoder weight.

    AdamW (``lr`` for the encoder, ``head_lr`` for the head, weight decay 0.01), linear warm-up
    over ``warmup_steps`` optimizer steps, gradients of the encoder clipped to norm 1 (the
    head's are not). ``labels`` holds the class code of every cell of the training corpus
    (batches name their cells by ``index``). ``history`` is the mean cross-entropy per epoch.
    """

    def __init__(self, module: CellWeaveModule, head: nn.Module, labels: torch.Tensor, *, lr: float, head_lr: float,
                 warmup_steps: int) -> None:
        super().__init__()
        self.module = module
        self.head = head
        self.labels = labels
        self.lr = lr
        self.head_lr = head_lr
        self.warmup_steps = max(1, int(warmup_steps))
        self.history: list[float] = []
        self._sum, self._n = 0.0, 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        emb = self.module.embed_cells(batch["token_ids"], batch["values"], batch["modality_ids"],
                                      batch["padding_mask"])
        y = self.labels[batch["index"]]
        loss = nn.functional.cross_entropy(self.head(emb).float(), y)  # bf16 logits under bf16-mixed
        self._sum += float(loss.detach()) * len(y)
        self._n += len(y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def on_train_epoch_start(self) -> None:
        self._sum, self._n = 0.0, 0

    def on_train_epoch_end(self) -> None:
        self.history.append(self._sum / max(self._n, 1))
        logger.info("fine-tune epoch %d: train cross-entropy %.4f", self.current_epoch + 1, self.history[-1])

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW([{"params": self.module.parameters(), "lr": self.lr},
                                 {"params": self.head.parameters(), "lr": self.head_lr}], weight_decay=0.01)
        warmup = self.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cellweave_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("cellweave_history", []))


def finetune_classifier(
    model: CellWeave,
    corpus: CellCorpus,
    labels: np.ndarray,
    *,
    max_epochs: int = 3,
    lr: float = 1e-4,
    head_lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    precision: str = "32-true",
) -> tuple[CellWeave, dict]:
    """Fine-tune a copy of ``model`` to classify ``labels`` from its cell embedding.

    A linear head (after a LayerNorm) on ``embed_cells`` (the pooled embedding users get) is trained with
    cross-entropy, together with every encoder weight (AdamW, ``lr`` for the encoder and
    ``head_lr`` for the head, linear warm-up over the first epoch). Training cells are
    tokenized as in pretraining (value noise, jittered selection) with a seeded generator, so a
    run is reproducible on the CPU. The original ``model`` is left unchanged. The fit runs as a
    Lightning plan (:class:`FinetunePlan`); with ``checkpoint_dir`` it writes ``last.ckpt`` there
    after every epoch, and ``resume=True`` continues from it to ``max_epochs`` (the result is the
    same as an uninterrupted run's). ``precision``: ``"32-true"`` or ``"bf16-mixed"`` (Lightning's
    bf16 mixed precision: linear layers in bf16, attention float32 on a CPU while training,
    weights and optimizer float32), recorded in the summary.

    Returns the fine-tuned model (a new :class:`~cellweave.CellWeave` whose card records the
    fine-tuning) and a summary dict (classes, epochs, loss per epoch, seconds).
    """
    from cellweave.models import CellWeave

    CellWeave.check_precision(precision)
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(corpus):
        raise CellWeaveInputError(f"{len(labels)} labels for {len(corpus)} cells.")
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise CellWeaveInputError("Fine-tuning a classifier needs at least 2 classes.")
    seed_fit(seed)
    module = copy.deepcopy(model.module)
    # LayerNorm first: the pooled embedding is two unit-norm halves, too small for a bare linear head.
    head = nn.Sequential(nn.LayerNorm(module.embedding_dim), nn.Linear(module.embedding_dim, len(classes)))
    dataset = TokenDataset([corpus], model.tokenizer, mode="train", seed=seed)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen,
                                         collate_fn=collate_tokens)
    y_all = torch.from_numpy(codes.astype(np.int64))
    plan = FinetunePlan(module, head, y_all, lr=lr, head_lr=head_lr, warmup_steps=len(loader))
    t0 = time.perf_counter()
    plan.train()  # Lightning keeps the modes it is given; the copied encoder may be in eval mode
    fit_plan(plan, loader, max_epochs=max_epochs, progress=progress, checkpoint_dir=checkpoint_dir, resume=resume,
             generators=[gen], draws_per_epoch=1,  # the batch order of the earlier hand-written loop
             precision=precision)
    history = plan.history
    module.eval()
    summary = {"classes": [str(c) for c in classes], "max_epochs": max_epochs, "lr": lr, "head_lr": head_lr,
               "batch_size": batch_size, "seed": seed, "precision": precision, "train_loss": history, "n_cells": len(labels),
               "seconds": round(time.perf_counter() - t0, 1), "base_model_sha256": model.model_hash}
    card = dict(model.card)
    card["finetune"] = summary
    tuned = CellWeave(copy.deepcopy(model.config), model.vocab, module=module, card=card)
    return tuned, summary
