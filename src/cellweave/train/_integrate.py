"""The batch-adversarial adapter of ``tl.integrate(method="adversarial")`` as a Lightning plan."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from cellweave.nn import BatchAdversarialAdapter

from ._engine import fit_plan, seed_fit

logger = logging.getLogger(__name__)


class AdversarialPlan(L.LightningModule):
    """Reconstruction error plus batch cross-entropy of a :class:`~cellweave.nn.BatchAdversarialAdapter`
    (its discriminator behind gradient reversal, Ganin & Lempitsky 2015), AdamW at ``lr`` with weight
    decay 1e-4, no schedule. ``history`` is the mean loss per epoch."""

    def __init__(self, net: BatchAdversarialAdapter, *, lr: float = 1e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.net = net
        self.lr, self.weight_decay = lr, weight_decay
        self.history: list[float] = []
        self._sum, self._n = 0.0, 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, b = batch
        loss = self.net(x, b)["loss"]
        self._sum += float(loss.detach()) * len(x)
        self._n += len(x)
        if self.trainer.progress_bar_callback is not None:  # logging costs ~2 ms a step; only for the bar
            self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(x))
        return loss

    def on_train_epoch_start(self) -> None:
        self._sum, self._n = 0.0, 0

    def on_train_epoch_end(self) -> None:
        self.history.append(self._sum / max(self._n, 1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cellweave_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("cellweave_history", []))


class _RowBatches(torch.utils.data.Sampler):
    """Each epoch, one permutation of ``n`` rows drawn from ``generator``, cut into index batches."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.n, generator=self.generator)
        return iter([perm[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)])

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


class _Rows(torch.utils.data.Dataset):
    """``dataset[index_tensor]`` is the rows of ``x`` and ``b`` at once (no per-row collation)."""

    def __init__(self, x: torch.Tensor, b: torch.Tensor) -> None:
        self.x, self.b = x, b

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.b[idx]


def fit_batch_adapter(
    z: np.ndarray,
    batches: np.ndarray,
    *,
    max_epochs: int = 300,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> tuple[BatchAdversarialAdapter, dict[str, Any]]:
    """Train a :class:`~cellweave.nn.BatchAdversarialAdapter` on embeddings ``z`` (cells x dims, already
    standardized) with ``batches`` (one label per cell) as the nuisance; returns it in eval mode and a
    summary (``history``: mean loss per epoch; ``batches``: the batch order of the one-hot code).

    Every epoch is one seeded permutation of the cells in batches of ``batch_size`` (the order of the
    hand-written loop this plan replaced, so its results are unchanged). ``checkpoint_dir``/``resume``
    as in :func:`cellweave.train.finetune_classifier`.
    """
    codes, uniq = pd.factorize(np.asarray(batches).astype(str), sort=True)
    seed_fit(seed)
    x = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    b = torch.from_numpy(codes.astype(np.int64))
    net = BatchAdversarialAdapter(x.shape[1], len(uniq))
    gen = torch.Generator().manual_seed(seed)
    sampler = _RowBatches(len(x), min(batch_size, len(x)), gen)
    # The loader draws its own base seed each epoch: from a generator of its own, not gen or the global one.
    loader = torch.utils.data.DataLoader(_Rows(x, b), sampler=sampler, batch_size=None,
                                         generator=torch.Generator().manual_seed(seed))
    plan = AdversarialPlan(net, lr=lr)
    net.train()
    fit_plan(plan, loader, max_epochs=max_epochs, progress=progress, checkpoint_dir=checkpoint_dir, resume=resume,
             generators=[gen])
    net.eval()
    return net, {"history": list(plan.history), "batches": [str(u) for u in uniq]}
