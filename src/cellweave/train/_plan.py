"""The Lightning training plan of pretraining and adaptation, and the pieces around it."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cellweave._io_utils import atomic_path
from cellweave.data import TokenDataset, collate_tokens
from cellweave.nn import CellWeaveModule, CountDecoder, masked_value_loss, nb_nll, vicreg_loss

#: The label term's cosine classifier (``PretrainPlan(label_cosine=True)``): logits are this times the
#: cosine between the cell state and a class proxy (NormFace's s; at 16 a class whose proxy the cell
#: matches reaches p > 0.99 against 19 orthogonal ones).
LABEL_COSINE_SCALE = 16.0


class CountTokenDataset(torch.utils.data.Dataset):
    """A :class:`TokenDataset` item plus what the count likelihood and VICReg terms need.

    ``counts`` (cells x decoded genes, CSR): the cell's raw counts of the decoded genes;
    ``batches``: the cell's covariate code (batch, or dataset in pretraining); ``gene_masks``
    (codes x decoded genes, bool): which decoded genes each code measured (a corpus of several
    datasets decodes the union of their genes); ``two_views``: add a second, independently
    sampled and masked view of the cell (``item(idx, view=1)``); ``partners`` (cells x k): draw
    that second view from one of the k cells in the cell's row instead (its neighbours, see
    :func:`~cellweave.train.neighbour_partners`), one drawn per ``(seed, epoch, cell)``;
    ``pc_targets`` (cells x components, float, NaN rows for cells without one): the targets of
    the principal-component term (:func:`~cellweave.train.principal_targets`); ``labels`` (cells,
    int, -1 for a cell without one): the class of the cell within its dataset, the target of the
    label term (:func:`~cellweave.train.cell_labels`).
    """

    def __init__(self, tokens: TokenDataset, counts: sp.csr_matrix | None, batches: np.ndarray, *,
                 two_views: bool = False, gene_masks: np.ndarray | None = None,
                 partners: np.ndarray | None = None, pc_targets: np.ndarray | None = None,
                 labels: np.ndarray | None = None) -> None:
        self.tokens = tokens
        self.counts = counts
        self.batches = np.asarray(batches, dtype=np.int64)
        self.two_views = two_views
        self.gene_masks = gene_masks
        if partners is not None and (partners.ndim != 2 or len(partners) != len(tokens)):
            raise ValueError(f"partners must have one row per cell ({len(tokens)}), not shape {partners.shape}.")
        self.partners = partners
        if pc_targets is not None and len(pc_targets) != len(tokens):
            raise ValueError(f"pc_targets must have one row per cell ({len(tokens)}), not {len(pc_targets)}.")
        self.pc_targets = pc_targets
        if labels is not None and len(labels) != len(tokens):
            raise ValueError(f"labels must have one entry per cell ({len(tokens)}), not {len(labels)}.")
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.tokens)

    def set_epoch(self, epoch: int) -> None:
        self.tokens.set_epoch(epoch)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.tokens[idx]
        item["batch"] = int(self.batches[idx])
        if self.pc_targets is not None:
            item["pcs"] = np.asarray(self.pc_targets[idx], dtype=np.float32)
        if self.labels is not None:
            item["label"] = int(self.labels[idx])
        if self.counts is not None:
            item["counts"] = np.asarray(self.counts[idx].toarray(), dtype=np.float32).ravel()
            if self.gene_masks is not None:
                item["gene_mask"] = self.gene_masks[item["batch"]]
        if self.two_views:
            other = idx
            if self.partners is not None:
                rng = np.random.default_rng([self.tokens.seed, self.tokens.epoch, int(idx), 2])
                other = int(self.partners[idx, rng.integers(self.partners.shape[1])])
            item["view2"] = self.tokens.item(other, view=1)
        return item


def collate_count_tokens(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """:func:`collate_tokens` plus the fields of :class:`CountTokenDataset` items."""
    out = collate_tokens(items)
    if "view2" in items[0]:
        out["view2"] = collate_tokens([it["view2"] for it in items])
    if "batch" in items[0]:
        out["batch"] = torch.tensor([it["batch"] for it in items], dtype=torch.long)
    if "counts" in items[0]:
        out["counts"] = torch.from_numpy(np.stack([it["counts"] for it in items]))
    if "pcs" in items[0]:
        out["pcs"] = torch.from_numpy(np.stack([it["pcs"] for it in items]))
    if "label" in items[0]:
        out["label"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
    if "gene_mask" in items[0]:
        out["gene_mask"] = torch.from_numpy(np.stack([it["gene_mask"] for it in items]))
    return out


class PretrainPlan(L.LightningModule):
    """Masked value modelling over all modalities a cell carries, optionally with a count
    likelihood and a VICReg term: the one plan behind pretraining and adaptation.

    ``loss = masked-value MSE (token head on hidden values, cell head on features outside the
    input) + count_weight x NB negative log-likelihood per decoded gene + vicreg_weight x VICReg``.

    - The count term (``decoder``, a :class:`~cellweave.nn.CountDecoder`) reconstructs the cell's
      raw counts of a set of genes from its CLS state, with the observed library and a one-hot
      covariate (batch, or dataset in pretraining): scVI's generative model (Lopez et al. 2018).
      Batches without ``counts`` skip it.
    - With a latent readout in the module (``config.readout_latent`` > 0, ``pretrain(count_latent=)``)
      the count term is a variational autoencoder's negative ELBO, as in scVI (Lopez et al. 2018):
      the readout (:class:`~cellweave.nn.LatentReadout`) maps the pooled embedding of the visible
      tokens to a Gaussian posterior, the decoder reads a sample of it (its mean outside training),
      and the KL divergence from N(0, I), divided by the cell's decoded genes so it keeps its ELBO
      ratio to the per-gene likelihood, is warmed up linearly over the first third of the steps.
      The saved model embeds cells as the posterior mean, a bottleneck of ``readout_latent``
      dimensions trained with the encoder. CellPLM (Wen et al. 2024) pretrains a transformer
      through such a latent (a Gaussian-mixture prior there, N(0, I) here, as in scVI).
    - VICReg (Bardes et al. 2022) between the CLS states of two independently sampled and masked
      views of each cell (batches with ``view2``), through a projector; scSSL-Bench (Richter et
      al. 2025) found VICReg and SimCLR with random masking the best of 19 self-supervised
      methods for cell typing. The second view may be of a neighbouring cell instead
      (``CountTokenDataset(partners=...)``).
    - The principal-component term (``n_pc_targets`` > 0, batches with ``pcs``): a linear map per
      covariate code (the dataset, in pretraining) from the CLS state to the cell's scores on its
      dataset's first principal components, squared error weighted by ``pc_weight``. PCA of the
      variable genes is the panel's strongest simple embedding because it keeps the profile's
      high-variance directions and drops the rest (``benchmarks/embedding_pca.py``); this term asks
      the cell state to carry those directions of every dataset linearly. It is this project's
      test of that idea, not a published method; the count term is the closest published one.
    - The label term (``label_classes``, batches with ``label``): a linear classifier per covariate
      code (the dataset) from the CLS state to the cell's annotated type, cross-entropy over that
      dataset's classes, weighted by ``label_weight``; ``label_classes[c]`` is the number of classes
      of code ``c`` (0: unlabelled). Supervised pretraining on curated labels beside a
      self-supervised objective, as SCimilarity (Heimberg et al. 2024: triplet loss on cell-ontology
      labels plus reconstruction) and scTab (Fischer et al. 2024: a classifier over one ontology)
      do; here each dataset keeps its own label set, so no ontology mapping is needed, and the
      classifiers are thrown away after pretraining. With ``label_cosine`` the logits are the
      cosines between the cell state and one learned proxy per class, times ``LABEL_COSINE_SCALE``
      (no bias): a normalized softmax (NormFace, Wang et al. 2017; proxy-based metric learning,
      ProxyNCA, Movshovitz-Attias et al. 2017), which pulls a type's cells toward one direction and
      so shapes the neighbourhoods a kNN reads, as SCimilarity's triplet loss does, without needing
      same-type pairs in a batch that mixes datasets.
    """

    def __init__(
        self,
        module: CellWeaveModule,
        decoder: CountDecoder | None = None,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int | None = 100,
        total_steps: int | None = 1000,
        count_weight: float = 1.0,
        vicreg_weight: float = 0.0,
        n_pc_targets: int = 0,
        n_codes: int = 1,
        pc_weight: float = 1.0,
        label_classes: list[int] | None = None,
        label_weight: float = 1.0,
        label_cosine: bool = False,
    ) -> None:
        super().__init__()
        self.module = module
        self.decoder = decoder
        self.count_weight = count_weight
        self.vicreg_weight = vicreg_weight
        d = module.config.d_model
        self.projector = (torch.nn.Sequential(torch.nn.Linear(d, 256), torch.nn.BatchNorm1d(256), torch.nn.ReLU(),
                                              torch.nn.Linear(256, 256)) if vicreg_weight > 0 else None)
        self.pc_weight = pc_weight
        if n_pc_targets > 0:  # one linear map per code: components of different datasets share no axes
            self.pc_maps = torch.nn.Parameter(torch.randn(n_codes, n_pc_targets, d) / math.sqrt(d))
            self.pc_bias = torch.nn.Parameter(torch.zeros(n_codes, n_pc_targets))
        else:
            self.pc_maps, self.pc_bias = None, None
        self.label_weight = label_weight
        self.label_cosine = label_cosine
        if label_classes and max(label_classes) > 0:
            n_classes = max(label_classes)
            self.label_maps = torch.nn.Parameter(torch.randn(len(label_classes), n_classes, d) / math.sqrt(d))
            self.label_bias = torch.nn.Parameter(torch.zeros(len(label_classes), n_classes))
            # Which class slots each code has: the others never get probability.
            valid = torch.arange(n_classes)[None, :] < torch.as_tensor(label_classes)[:, None]
            self.register_buffer("label_valid", valid, persistent=False)
        else:
            self.label_maps, self.label_bias, self.label_valid = None, None, None
        self.lr = lr
        self.weight_decay = weight_decay
        # ``None``: from the trainer when the optimizer is built (see ``configure_optimizers``).
        self.warmup_steps = warmup_steps
        self.total_steps = None if total_steps is None else max(total_steps, 1)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every loss term of ``batch`` and their weighted sum (``"loss"``)."""
        out = self.module(
            batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"], batch["value_mask"],
            batch.get("target_ids"), batch.get("target_modality_ids"),
        )
        losses = masked_value_loss(out, batch["values"], batch["value_mask"], batch.get("target_values"),
                                   batch.get("target_mask"))
        loss = losses["loss"]
        if self.decoder is not None and "counts" in batch:
            x = batch["counts"]
            mask = batch.get("gene_mask")
            measured = x if mask is None else x * mask
            library = measured.sum(1, keepdim=True).clamp_min(1.0)
            z, kl = out["cell_embedding"], None
            if self.module.config.readout_latent:
                z, kl = self._latent(out, batch)
            mu, theta = self.decoder(z, batch["batch"], library, gene_mask=mask)
            nll = nb_nll(x, mu, theta)
            m = None if mask is None else mask.to(nll.dtype)
            per_cell = nll.sum(1) if m is None else (nll * m).sum(1)
            n_genes = (torch.full_like(per_cell, x.shape[1]) if m is None else m.sum(1)).clamp_min(1.0)
            losses["count_nll"] = (per_cell / n_genes).mean()
            loss = loss + self.count_weight * losses["count_nll"]
            if kl is not None:  # per decoded gene, like the likelihood: the ELBO's ratio of the two
                losses["count_kl"] = (kl / n_genes).mean()
                loss = loss + self.count_weight * self._kl_weight() * losses["count_kl"]
        if self.pc_maps is not None and "pcs" in batch:
            target, codes = batch["pcs"], batch["batch"]
            has = torch.isfinite(target[:, 0])
            if bool(has.any()):
                cell = out["cell_embedding"][has]
                pred = torch.einsum("bkd,bd->bk", self.pc_maps[codes[has]], cell) + self.pc_bias[codes[has]]
                losses["pc_mse"] = ((pred - target[has]) ** 2).mean()
                loss = loss + self.pc_weight * losses["pc_mse"]
        if self.label_maps is not None and "label" in batch:
            target, codes = batch["label"], batch["batch"]
            has = target >= 0
            if bool(has.any()):
                cell, c = out["cell_embedding"][has], codes[has]
                if self.label_cosine:
                    logits = LABEL_COSINE_SCALE * torch.einsum(
                        "bkd,bd->bk", F.normalize(self.label_maps[c], dim=-1), F.normalize(cell, dim=-1))
                else:
                    logits = torch.einsum("bkd,bd->bk", self.label_maps[c], cell) + self.label_bias[c]
                logits = logits.masked_fill(~self.label_valid[c], float("-inf"))
                losses["label_ce"] = F.cross_entropy(logits, target[has])
                loss = loss + self.label_weight * losses["label_ce"]
        if self.projector is not None and "view2" in batch:
            v = batch["view2"]
            other = self.module.encode(v["token_ids"], v["values"], v["modality_ids"], v["padding_mask"],
                                       v["value_mask"])[0]
            losses["vicreg"] = vicreg_loss(self.projector(out["cell_embedding"]), self.projector(other))
            loss = loss + self.vicreg_weight * losses["vicreg"]
        losses["loss"] = loss
        return losses

    def _latent(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A sample of the latent posterior (its mean outside training) and each cell's KL divergence
        from N(0, I), from the pooled embedding of the cell's visible tokens."""
        visible = batch["padding_mask"] & ~batch["value_mask"]
        pooled = self.module.pool(out["cell_embedding"], out["token_states"], batch["token_ids"], batch["values"],
                                  visible, readout=False)
        readout = self.module.readout
        mu, logvar = readout.posterior(pooled)
        return (readout.sample(mu, logvar) if self.training else mu), readout.kl(mu, logvar)

    def _kl_weight(self) -> float:
        """The KL term's warm-up: linear from 0 over the first third of the run's steps, then 1."""
        if self._trainer is None or not self.total_steps:
            return 1.0
        return min(1.0, self.global_step / max(1, self.total_steps // 3))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch)
        bs = batch["token_ids"].shape[0]
        self.log("train_loss", losses["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=bs,
                 sync_dist=True)
        for key in ("token_mse", "count_nll", "count_kl", "vicreg", "pc_mse", "label_ce"):
            if key in losses:
                self.log(f"train_{key}", losses[key], on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val_sums: dict[str, float] = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Errors are averaged over masked values (not over batches), the same weighting as
        # ``evaluate_masked`` uses for epoch 0, so the loss curve is comparable end to end.
        losses = self.losses(batch)
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
        if self.total_steps is None:
            # Lightning's count of optimizer steps of this run: batches per rank (after the
            # distributed sampler splits the cells), divided by gradient accumulation, capped by
            # max_steps. The schedule then ends where training ends, on any number of devices.
            self.total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        if self.warmup_steps is None:
            self.warmup_steps = min(200, max(1, self.total_steps // 10))
        return adamw_warmup_cosine(self.named_parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                   warmup_steps=self.warmup_steps, total_steps=self.total_steps)


def adamw_warmup_cosine(named_parameters, *, lr: float, weight_decay: float, warmup_steps: int,
                        total_steps: int) -> dict[str, Any]:
    """AdamW (betas 0.9/0.98) with linear warm-up and a cosine down to 10% of ``lr``, stepped per batch;
    weight decay only on matrices of linear layers (not on biases, norms, embeddings or the per-feature
    offsets of ``CellWeaveConfig.feature_offset``); frozen
    parameters (``requires_grad`` False, e.g. ``CellWeaveConfig.fixed_feature_tables``) are left out."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embedding" not in name and "feature_offset" not in name else no_decay).append(p)
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
        # The epoch means of every training term the plan logs (``train_loss``, and e.g.
        # ``train_count_nll`` or ``train_pc_mse``), so a term seen only in training is in the record too.
        if not (self.history and self.history[-1]["epoch"] == trainer.current_epoch + 1):
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train_") and not key.endswith("_step"):
                self.history[-1][key.removesuffix("_epoch")] = float(value)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


class SnapshotCallback(L.Callback):
    """Writes a loadable model folder every ``every`` epochs, so a run's checkpoints can be compared.

    At the end of epoch ``k`` (``k`` a multiple of ``every``; after that epoch's validation) calls
    ``save(folder / f"epoch{k:03d}", record)``, where ``record`` holds the epoch, the optimizer step
    and the epoch's validation metrics. Only the global-zero rank writes (every rank holds the same
    weights). A resumed run writes the epochs it repeats again. Lightning's own checkpoints hold the
    optimizer and the plan's heads and cannot be given to ``--model``; these can (litgpt's
    ``save_interval`` and scGPT's saved epochs serve the same end: choosing a checkpoint by a held-out
    score rather than by the training loss).
    """

    def __init__(self, folder: str | os.PathLike, every: int, save: Callable[[Path, dict[str, Any]], None]) -> None:
        if int(every) < 1:
            raise ValueError(f"every={every}: give a number of epochs >= 1.")
        self.folder = Path(folder)
        self.every = int(every)
        self.save = save

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every or not trainer.is_global_zero:
            return
        record = {"epoch": epoch, "step": int(trainer.global_step),
                  **{k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}}
        self.save(self.folder / f"epoch{epoch:03d}", record)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed into place.

    A run killed while saving leaves the previous ``last.ckpt`` intact, so ``--resume`` works.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class CellLogCallback(L.Callback):
    """What each data-parallel rank trained on, to check the sharding of a run (``--log-cells``).

    Records the training-set positions of the cells of every batch a rank trains on, per epoch,
    and at the end of fitting the SHA-256 of the rank's weights; writes them to
    ``folder/rank{global_rank}.json``. Under DDP the ranks should see disjoint cells that together
    cover the training set, and end with equal hashes. Memory grows with the cells seen, so this
    is for checking small runs, not for a run over millions of cells.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = os.fspath(folder)
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.seen.setdefault(int(trainer.current_epoch), []).extend(batch["index"].tolist())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import hashlib
        import json

        digest = hashlib.sha256()
        for name, tensor in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "steps": trainer.global_step,
                  "weights_sha256": digest.hexdigest(), "cells_per_epoch": {str(k): v for k, v in self.seen.items()}}
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"rank{trainer.global_rank}.json")
        with atomic_path(path) as tmp:
            with open(tmp, "w") as fh:
                json.dump(record, fh)
