"""Fine-tuning the encoder on labelled cells (a classification head on the cell embedding)."""

from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import TokenDataset, collate_tokens

if TYPE_CHECKING:
    from cellweave.data import CellCorpus
    from cellweave.models import CellWeave

logger = logging.getLogger(__name__)


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
) -> tuple[CellWeave, dict]:
    """Fine-tune a copy of ``model`` to classify ``labels`` from its cell embedding.

    A linear head (after a LayerNorm) on ``embed_cells`` (the pooled embedding users get) is trained with
    cross-entropy, together with every encoder weight (AdamW, ``lr`` for the encoder and
    ``head_lr`` for the head, linear warm-up over the first epoch). Training cells are
    tokenized as in pretraining (value noise, jittered selection) with a seeded generator, so a
    run is reproducible on the CPU. The original ``model`` is left unchanged.

    Returns the fine-tuned model (a new :class:`~cellweave.CellWeave` whose card records the
    fine-tuning) and a summary dict (classes, epochs, loss per epoch, seconds).
    """
    from tqdm.auto import tqdm

    from cellweave.models import CellWeave

    labels = np.asarray(labels).astype(str)
    if len(labels) != len(corpus):
        raise CellWeaveInputError(f"{len(labels)} labels for {len(corpus)} cells.")
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise CellWeaveInputError("Fine-tuning a classifier needs at least 2 classes.")
    torch.manual_seed(seed)
    module = copy.deepcopy(model.module)
    # LayerNorm first: the pooled embedding is two unit-norm halves, too small for a bare linear head.
    head = nn.Sequential(nn.LayerNorm(module.embedding_dim), nn.Linear(module.embedding_dim, len(classes)))
    dataset = TokenDataset([corpus], model.tokenizer, mode="train", seed=seed)
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen,
                                         collate_fn=collate_tokens)
    opt = torch.optim.AdamW([{"params": module.parameters(), "lr": lr},
                             {"params": head.parameters(), "lr": head_lr}], weight_decay=0.01)
    warmup = max(1, len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    y_all = torch.from_numpy(codes.astype(np.int64))
    history = []
    t0 = time.perf_counter()
    module.train()
    for epoch in range(max_epochs):
        dataset.set_epoch(epoch)  # fresh token samples every epoch
        total, n = 0.0, 0
        for batch in tqdm(loader, desc=f"fine-tune epoch {epoch + 1}/{max_epochs}", disable=not progress, leave=False):
            emb = module.embed_cells(batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"])
            y = y_all[batch["index"]]
            loss = nn.functional.cross_entropy(head(emb), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        history.append(total / max(n, 1))
        logger.info("fine-tune epoch %d: train cross-entropy %.4f", epoch + 1, history[-1])
    module.eval()
    summary = {"classes": [str(c) for c in classes], "max_epochs": max_epochs, "lr": lr, "head_lr": head_lr,
               "batch_size": batch_size, "seed": seed, "train_loss": history, "n_cells": len(labels),
               "seconds": round(time.perf_counter() - t0, 1), "base_model_sha256": model.model_hash}
    card = dict(model.card)
    card["finetune"] = summary
    tuned = CellWeave(copy.deepcopy(model.config), model.vocab, module=module, card=card)
    return tuned, summary
