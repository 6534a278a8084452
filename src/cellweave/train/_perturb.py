"""Fine-tuning for perturbation-response prediction.

The pretrained encoder stays frozen: it gives each control cell its embedding and each perturbed
gene its token vector. A small head (:class:`cellweave.nn.PerturbationHead`) learns, from the
observed mean change of every perturbation (per group of cells: replicate or cell type), to map
(perturbation, control cell) to a change of every gene's log-normalized expression. Training on
pseudo-bulk targets keeps it cheap on a CPU and matches what the benchmarks score.

The fitted object, :class:`cellweave.models.PerturbationModel` (and its folder format), lives in
:mod:`cellweave.models`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from cellweave._exceptions import CellWeaveInputError
from cellweave.models import (
    CellWeave,
    PerturbationIdentity,
    PerturbationModel,
    environment_versions,
    identity_vectors,
    perturbation_expression,
    zero_shot_features,
)
from cellweave.nn import PerturbationHead

from ._engine import fit_plan, seed_fit

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- fitting
def fit_head(
    *,
    gene_tokens: np.ndarray,
    perturbation_vectors: np.ndarray,
    label_index: np.ndarray,
    n_labels: int,
    targets: np.ndarray,
    target_perturbation: np.ndarray,
    target_group: np.ndarray,
    control_embedding: np.ndarray,
    control_group: np.ndarray,
    extra: np.ndarray | None = None,
    d_hidden: int = 64,
    dropout: float = 0.1,
    steps: int = 500,
    batch_size: int = 256,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    progress: bool = False,
) -> tuple[PerturbationHead, dict[str, float]]:
    """Train a :class:`PerturbationHead` on observed mean changes (arrays in, head out).

    Each training example is a (perturbation, group) pair with its observed mean change
    ``targets[k]`` (n_genes,); a step draws examples and, for each, a control cell of the same
    group, so the head sees the spread of control states. The per-gene bias starts at the mean
    of the targets (the training-mean baseline), so the head learns departures from it.
    """
    seed_fit(seed)
    rng = np.random.default_rng(seed)
    head = PerturbationHead(torch.as_tensor(gene_tokens), control_embedding.shape[1], n_labels,
                            d_hidden=d_hidden, n_extra=0 if extra is None else extra.shape[1], dropout=dropout)
    with torch.no_grad():
        head.gene_bias.copy_(torch.as_tensor(targets.mean(axis=0)))
    groups = {g: np.where(control_group == g)[0] for g in np.unique(target_group)}
    for g, idx in groups.items():
        if idx.size == 0:
            raise CellWeaveInputError(f"Group {g!r} has perturbed cells but no control cells to pair them with.")
    draws = ExampleDraws(rng, len(targets), groups, target_group, steps=steps, batch_size=batch_size)
    # Batches are drawn above; the loader's own generator keeps its seed draw off the global one (dropout).
    loader = torch.utils.data.DataLoader(draws, batch_size=None, generator=torch.Generator().manual_seed(seed))
    plan = PerturbationPlan(head, targets=targets, perturbation_vectors=perturbation_vectors, label_index=label_index,
                            target_perturbation=target_perturbation, control_embedding=control_embedding,
                            extra=extra, lr=lr, weight_decay=weight_decay, total_steps=steps)
    head.train()
    # The head's ops are tiny: on a CPU, synchronizing intra-op threads costs more than it saves
    # (10x slower on a busy 2-core machine), so train on one thread.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit_plan(plan, loader, max_epochs=1, progress=progress)
    finally:
        torch.set_num_threads(n_threads)
    head.eval()
    losses = plan.losses
    return head, {"train_mse_first": losses[0], "train_mse_last": float(np.mean(losses[-20:]))}


class ExampleDraws(torch.utils.data.Dataset):
    """The examples of every step of a head fit, drawn up front from ``rng`` in the order the
    steps use them: per step, ``batch_size`` (perturbation, group) targets, each with a random
    control cell of its group. Item ``i`` is step ``i``'s ``{"examples", "cells"}``."""

    def __init__(self, rng: np.random.Generator, n_targets: int, groups: dict[Any, np.ndarray],
                 target_group: np.ndarray, *, steps: int, batch_size: int) -> None:
        self.steps: list[tuple[np.ndarray, np.ndarray]] = []
        for _ in range(steps):
            k = rng.integers(0, n_targets, size=batch_size)
            cells = np.array([groups[g][rng.integers(0, groups[g].size)] for g in target_group[k]])
            self.steps.append((k, cells))

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        k, cells = self.steps[i]
        return {"examples": k, "cells": cells}


class PerturbationPlan(L.LightningModule):
    """Squared error of a :class:`PerturbationHead`'s predicted change against the observed mean changes.

    Batches (:class:`ExampleDraws`) name examples (rows of ``targets``) and the control cell
    (row of ``control_embedding``) each is paired with. AdamW with a one-cycle schedule over
    ``total_steps`` steps (10% warm-up). ``losses`` records every step's loss.
    """

    def __init__(self, head: PerturbationHead, *, targets: np.ndarray, perturbation_vectors: np.ndarray,
                 label_index: np.ndarray, target_perturbation: np.ndarray, control_embedding: np.ndarray,
                 extra: np.ndarray | None, lr: float, weight_decay: float, total_steps: int) -> None:
        super().__init__()
        self.head = head
        self.T = torch.as_tensor(targets, dtype=torch.float32)
        self.P = torch.as_tensor(perturbation_vectors, dtype=torch.float32)
        self.Lb = torch.as_tensor(label_index, dtype=torch.long)
        self.C = torch.as_tensor(control_embedding, dtype=torch.float32)
        self.X = None if extra is None else torch.as_tensor(extra, dtype=torch.float32)
        self.target_perturbation = torch.as_tensor(np.asarray(target_perturbation), dtype=torch.long)
        self.lr, self.weight_decay, self.total_steps = lr, weight_decay, int(total_steps)
        self.losses: list[float] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        k, cells = batch["examples"], batch["cells"]
        p = self.target_perturbation[k]
        pred = self.head(self.P[p], self.Lb[p], self.C[cells], None if self.X is None else self.X[p])
        loss = torch.mean((pred - self.T[k]) ** 2)
        self.losses.append(float(loss.detach()))
        self.log("train_mse", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(k))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=self.total_steps, pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ---------------------------------------------------------------------- the user-facing fit
def finetune_perturbation(
    data: AnnData,
    *,
    model: CellWeave | str | None = None,
    perturbation_key: str = "perturbation",
    control: str = "control",
    group_key: str | None = None,
    exclude: list[str] | None = None,
    layer: str | None = None,
    zero_shot: bool = False,
    n_control_cells: int = 512,
    min_cells: int = 10,
    steps: int = 500,
    d_hidden: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    precision: str = "32-true",
    _cache: dict | None = None,
) -> PerturbationModel:
    """Fine-tune a perturbation-response head on a perturbation screen or a condition experiment.

    Parameters
    ----------
    data
        AnnData with counts (or log-normalized values) and ``obs[perturbation_key]``. A MuData
        is accepted: its ``rna`` modality is used with ``mdata.obs`` columns.
    model
        Base model (frozen): a :class:`~cellweave.CellWeave`, folder, shipped name or ``None``.
    perturbation_key, control
        Column naming each cell's perturbation, and its value for control cells.
    group_key
        Column of ``obs`` (replicate, cell type) within which perturbed and control cells are
        compared; the head learns how the response depends on the control cell. Default: one group.
    exclude
        Perturbations left out of training (held out to test prediction of unseen ones).
    layer
        Layer holding counts (default ``X``).
    zero_shot
        Add the pretrained model's zero-shot in silico knock-out profile of each perturbed gene
        as a feature of the perturbation.
    n_control_cells
        Control cells embedded and kept (a random subsample, stratified by nothing).
    min_cells
        Perturbation/group pairs with fewer cells are not used as targets.
    steps, d_hidden, lr, weight_decay, seed
        Training of the head (AdamW, one-cycle schedule, ``steps`` batches of 256 examples).
    out
        Folder to save the fine-tuned model to (see :meth:`cellweave.models.PerturbationModel.save`).
    precision
        ``"32-true"`` (default) or ``"bf16-mixed"``: the frozen model's forward passes (the control
        cells' embedding, ``zero_shot``'s in silico knock-outs) under bf16 autocast, as
        :func:`cellweave.tl.embed` takes it; the head trains in float32 either way. Recorded in
        the model folder's metadata.

    Returns
    -------
    The :class:`~cellweave.models.PerturbationModel` (also saved to ``out`` when given).
    """
    t0 = time.perf_counter()
    CellWeave.check_precision(precision)
    adata = rna_with_cell_obs(data)
    base = model if isinstance(model, CellWeave) else CellWeave.load(model)
    for key in [perturbation_key] + ([group_key] if group_key else []):
        if key not in adata.obs.columns:
            raise CellWeaveInputError(
                f"obs has no column {key!r}; columns: {', '.join(map(str, adata.obs.columns))}."
            )
    labels_all = adata.obs[perturbation_key].astype(str).to_numpy()
    if not (labels_all == control).any():
        values = pd.Series(labels_all).value_counts().index[:10].tolist()
        raise CellWeaveInputError(
            f"No cell has {perturbation_key}=={control!r}; pass --control one of: {', '.join(values)}."
        )
    groups_all = adata.obs[group_key].astype(str).to_numpy() if group_key else np.full(adata.n_obs, "all")
    exclude = set(exclude or [])
    genes = list(map(str, adata.var_names))
    X = perturbation_expression(adata, layer=layer)

    # Observed mean change per (perturbation, group) against the controls of that group.
    names, target_rows, t_pert, t_group = [], [], [], []
    ctrl_mean = {g: X[(labels_all == control) & (groups_all == g)].mean(axis=0)
                 for g in np.unique(groups_all) if ((labels_all == control) & (groups_all == g)).sum() >= min_cells}
    for name in pd.unique(labels_all):
        if name == control or name in exclude:
            continue
        used = False
        for g, mu_c in ctrl_mean.items():
            m = (labels_all == name) & (groups_all == g)
            if m.sum() >= min_cells:
                if not used:
                    names.append(name)
                    used = True
                target_rows.append(X[m].mean(axis=0) - mu_c)
                t_pert.append(len(names) - 1)
                t_group.append(g)
    if not names:
        raise CellWeaveInputError(
            f"Fine-tuning needs at least 1 perturbation with >= {min_cells} cells (and >= {min_cells} control "
            f"cells in the same {group_key or 'data'}); found {len(names)}. Lower min_cells or add data."
        )
    targets = np.stack(target_rows).astype(np.float32)
    t_pert, t_group = np.asarray(t_pert), np.asarray(t_group)

    var = adata.var

    labels: list[str] = []
    identities = []
    for name in names:
        parts = [p.strip() for p in name.split("+") if p.strip()]
        ids = base.gene_token_ids(parts, var)
        if parts and (ids >= 0).all():
            identities.append(PerturbationIdentity(name, "gene", [int(i) for i in ids], 0))
        else:
            labels.append(name)
            identities.append(PerturbationIdentity(name, "label", [], len(labels)))
    logger.info("Training perturbations: %d genes, %d condition labels", sum(i.kind == "gene" for i in identities),
                len(labels))

    # Control cells: a seeded subsample, embedded once by the frozen encoder.
    rng = np.random.default_rng(seed)
    ctrl_idx = np.where(np.isin(groups_all, list(ctrl_mean)) & (labels_all == control))[0]
    keep = np.sort(rng.choice(ctrl_idx, size=min(n_control_cells, ctrl_idx.size), replace=False))
    control_cells = adata[keep].copy()
    emb_key = ("control_embedding", tuple(keep[:20]), keep.size, seed, precision)
    if _cache is not None and emb_key in _cache:
        emb = _cache[emb_key]
    else:
        with base.autocast(precision):
            emb, _ = base.embed(control_cells, seed=seed, progress=progress, layer=layer)
        if _cache is not None:
            _cache[emb_key] = emb

    readout = base.gene_token_ids(genes, var)
    token_table = base.module.feature_embedding.weight.detach().cpu().numpy()
    gene_tokens = np.where((readout >= 0)[:, None], token_table[np.maximum(readout, 0)], 0.0).astype(np.float32)
    extra, zs_scale = None, 1.0
    if zero_shot:
        extra = zero_shot_features(base, control_cells, identities, readout, seed=seed, cache=_cache,
                                   precision=precision)
        zs_scale = float(np.abs(extra[[i.kind == "gene" for i in identities]]).mean()) or 1.0
        extra = extra / zs_scale
    head, metrics = fit_head(
        gene_tokens=gene_tokens, perturbation_vectors=identity_vectors(base, identities),
        label_index=np.array([i.label_index for i in identities]), n_labels=len(labels),
        targets=targets, target_perturbation=t_pert, target_group=t_group,
        control_embedding=emb, control_group=groups_all[keep], extra=extra,
        d_hidden=d_hidden, steps=steps, lr=lr, weight_decay=weight_decay, seed=seed, progress=progress,
    )
    observed = np.stack([targets[t_pert == k].mean(axis=0) for k in range(len(names))])
    meta: dict[str, Any] = {
        "perturbation_key": perturbation_key,
        "control": control,
        "group_key": group_key or "",
        "genes": genes,
        "gene_token_ids": [int(i) for i in readout],
        "training_perturbations": names,
        "perturbation_kinds": {i.name: i.kind for i in identities},
        "labels": labels,
        "excluded": sorted(exclude),
        "observed_delta": observed.round(5).tolist(),
        "n_cells": {n: int((labels_all == n).sum()) for n in names + [control]},
        "zero_shot": bool(zero_shot),
        "zero_shot_cells": 64,
        "zero_shot_scale": zs_scale,
        "seed": seed,
        "precision": precision,
        "steps": steps,
        "lr": lr,
        "weight_decay": weight_decay,
        "metrics": {**metrics, "train_seconds": round(time.perf_counter() - t0, 1)},
        "versions": environment_versions(),
    }
    if "gene_id" in var.columns:
        meta["gene_id"] = var["gene_id"].astype(str).tolist()
    control_cells.obs = control_cells.obs[[c for c in control_cells.obs.columns
                                           if c in (perturbation_key, group_key)]].copy()
    pm = PerturbationModel(base, head, meta, control_cells)
    pm._cache = _cache if _cache is not None else {}
    if out is not None:
        pm.save(out)
    logger.info("Fine-tuned on %d perturbations (%d targets) in %.1f s; train MSE %.4f -> %.4f", len(names),
                len(targets), time.perf_counter() - t0, metrics["train_mse_first"], metrics["train_mse_last"])
    return pm


def rna_with_cell_obs(data) -> AnnData:
    """AnnData as is; a MuData's ``rna`` modality with the container's obs columns
    (:func:`cellweave.io.rna_modality`)."""
    from cellweave.io import rna_modality

    return rna_modality(data, purpose="perturbation", with_container_obs=True)
