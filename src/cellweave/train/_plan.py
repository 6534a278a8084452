"""Lightning training plan for masked value pretraining, and the pieces around it."""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cellweave._io_utils import atomic_path
from cellweave.nn import CellWeaveModule, masked_value_loss


class PretrainPlan(L.LightningModule):
    """Masked value modelling over all modalities a cell carries.

    The loss is the mean squared error of hidden values, predicted both from each token's
    context (token head) and from the cell embedding alone (cell head).
    """

    def __init__(
        self,
        module: CellWeaveModule,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        total_steps: int = 1000,
    ) -> None:
        super().__init__()
        self.module = module
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, 1)

    def _step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.module(
            batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"], batch["value_mask"],
            batch.get("target_ids"), batch.get("target_modality_ids"),
        )
        return masked_value_loss(
            out, batch["values"], batch["value_mask"], batch.get("target_values"), batch.get("target_mask")
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self._step(batch)
        bs = batch["token_ids"].shape[0]
        self.log("train_loss", losses["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=bs,
                 sync_dist=True)
        self.log("train_token_mse", losses["token_mse"], on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val_sums: dict[str, float] = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Errors are averaged over masked values (not over batches), the same weighting as
        # ``evaluate_masked`` uses for epoch 0, so the loss curve is comparable end to end.
        losses = self._step(batch)
        weights = {"token_mse": batch["value_mask"].sum(), "cell_mse": batch["value_mask"].sum()}
        if "target_mse" in losses:
            weights["target_mse"] = batch["target_mask"].sum()
        for key, w in weights.items():
            self._val_sums[key] = self._val_sums.get(key, 0.0) + float(losses[key]) * float(w)
            self._val_sums[key + "_n"] = self._val_sums.get(key + "_n", 0.0) + float(w)

    def on_validation_epoch_end(self) -> None:
        keys = [k for k in self._val_sums if not k.endswith("_n")]
        metrics = {f"val_{k}": self._val_sums[k] / max(self._val_sums[k + "_n"], 1.0) for k in keys}
        metrics["val_loss"] = metrics["val_token_mse"] + metrics.get("val_target_mse", metrics["val_cell_mse"])
        for k, v in metrics.items():
            self.log(k, v, prog_bar=k == "val_loss", sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_warmup_cosine(self.module.named_parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                   warmup_steps=self.warmup_steps, total_steps=self.total_steps)


def adamw_warmup_cosine(named_parameters, *, lr: float, weight_decay: float, warmup_steps: int,
                        total_steps: int) -> dict[str, Any]:
    """AdamW (betas 0.9/0.98) with linear warm-up and a cosine down to 10% of ``lr``, stepped per batch;
    weight decay only on matrices of linear layers (not on biases, norms or embeddings)."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98),
    )
    warmup, total = max(int(warmup_steps), 1), max(int(total_steps), 1)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class HistoryCallback(L.Callback):
    """Records per-epoch losses; the record travels in checkpoints so a resumed run keeps it."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run before the module's hook of that name,
        # where the epoch's validation metrics are logged.
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self.history.append({"epoch": trainer.current_epoch + 1, "step": trainer.global_step, **m})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train_loss_epoch")
        if loss is not None and self.history and self.history[-1]["epoch"] == trainer.current_epoch + 1:
            self.history[-1]["train_loss"] = float(loss)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed into place.

    A run killed while saving leaves the previous ``last.ckpt`` intact, so ``--resume`` works.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
