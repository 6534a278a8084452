"""Fine-tuning for perturbation-response prediction, and the saved fine-tuned model.

The pretrained encoder stays frozen: it gives each control cell its embedding and each perturbed
gene its token vector. A small head (:class:`cellweave.nn.PerturbationHead`) learns, from the
observed mean change of every perturbation (per group of cells: replicate or cell type), to map
(perturbation, control cell) to a change of every gene's log-normalized expression. Training on
pseudo-bulk targets keeps it cheap on a CPU and matches what the benchmarks score.

The folder written by :meth:`PerturbationModel.save` is self-describing and safe: the base
CellWeave files, ``perturb_head.safetensors``, ``perturbation.json`` and ``control_cells.h5ad``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError, CellWeaveModelError
from cellweave._io_utils import atomic_write_bytes, atomic_write_json
from cellweave.data import log_normalize
from cellweave.models import CellWeave, environment_versions
from cellweave.nn import PerturbationHead

from ._engine import fit_plan, seed_fit

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

HEAD_FILE = "perturb_head.safetensors"
META_FILE = "perturbation.json"
CONTROL_FILE = "control_cells.h5ad"


# ---------------------------------------------------------------------- expression helpers
def log_normalized(adata: AnnData, *, layer: str | None = None) -> np.ndarray:
    """Dense float32 log1p(counts per 10k) of ``adata`` (log-normalized input is used as is)."""
    try:
        return log_normalize(adata, layer=layer).toarray()
    except CellWeaveInputError as err:
        raise CellWeaveInputError(
            f"Perturbation models need counts or log-normalized expression; {err}"
        ) from None


def align_genes(adata: AnnData, genes: list[str], *, layer: str | None = None) -> tuple[sp.csr_matrix, list[str]]:
    """``adata``'s matrix with columns reordered to ``genes`` (missing genes are zero columns)."""
    X = sp.csr_matrix(adata.layers[layer] if layer is not None else adata.X, dtype=np.float32)
    pos = pd.Index(map(str, adata.var_names)).get_indexer(genes)
    missing = [g for g, p in zip(genes, pos) if p < 0]
    if len(missing) == len(genes):
        raise CellWeaveInputError(
            "None of the model's genes are in these cells' var_names; give cells measured on the same genes "
            f"(the model knows e.g. {', '.join(genes[:5])})."
        )
    cols = np.where(pos >= 0, pos, 0)
    out = X[:, cols].tocsc()
    if missing:
        keep = sp.diags((pos >= 0).astype(np.float32))
        out = out @ keep
    return sp.csr_matrix(out), missing


# ---------------------------------------------------------------------- perturbation identities
@dataclass
class PerturbationIdentity:
    """How a perturbation is represented: summed gene tokens and/or a learned label."""

    name: str
    kind: str  # "gene" or "label"
    token_ids: list[int]
    label_index: int  # 0 for genes, 1 + label id for labels


def resolve_perturbation(model: CellWeave, name: str, labels: list[str], var: pd.DataFrame | None = None
                         ) -> PerturbationIdentity:
    """A perturbation name -> its representation; a label wins over a gene of the same name."""

    if name in labels:
        return PerturbationIdentity(name, "label", [], 1 + labels.index(name))
    parts = [p.strip() for p in str(name).split("+") if p.strip()]
    ids = model.gene_token_ids(parts, var) if parts else np.zeros(0, dtype=np.int64)
    if parts and (ids >= 0).all():
        return PerturbationIdentity(name, "gene", [int(i) for i in ids], 0)
    raise CellWeaveInputError(
        f"Perturbation {name!r} is neither a gene (or G1+G2 combination) in the model's vocabulary nor a "
        f"condition label seen in fine-tuning ({', '.join(labels) or 'none'}). An unseen label that is not a "
        "gene has no representation: fine-tune on data that contains it, or name the perturbed gene(s)."
    )


def identity_vectors(model: CellWeave, identities: list[PerturbationIdentity]) -> np.ndarray:
    emb = model.module.feature_embedding.weight.detach().cpu().numpy()
    out = np.zeros((len(identities), emb.shape[1]), dtype=np.float32)
    for k, ident in enumerate(identities):
        if ident.token_ids:
            out[k] = emb[ident.token_ids].sum(axis=0)
    return out


def zero_shot_features(model: CellWeave, control: AnnData, identities: list[PerturbationIdentity],
                       readout_ids: np.ndarray, *, n_cells: int = 64, seed: int = 0, progress: bool = False,
                       cache: dict | None = None) -> np.ndarray:
    """Per perturbation, the pretrained model's zero-shot in silico knock-out profile over the readout
    genes (mean over ``n_cells`` control cells; zeros for labels and genes outside the vocabulary)."""
    from cellweave.models import in_silico_profiles

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(control.n_obs, size=min(n_cells, control.n_obs), replace=False))
    corpus = model.prepare(control[pick], modalities=None)
    ok = readout_ids >= 0
    out = np.zeros((len(identities), len(readout_ids)), dtype=np.float32)
    for k, ident in enumerate(identities):
        if ident.kind != "gene":
            continue
        key = ("zero_shot", tuple(ident.token_ids), n_cells, seed)
        if cache is not None and key in cache:
            out[k] = cache[key]
            continue
        res = in_silico_profiles(model, corpus, np.asarray(ident.token_ids), mode="knockout",
                                 readout_ids=readout_ids[ok], seed=seed, progress=progress)
        out[k, ok] = res["delta"].mean(axis=0)
        if cache is not None:
            cache[key] = out[k].copy()
    return out


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


# ---------------------------------------------------------------------- the fine-tuned model
class PerturbationModel:
    """A pretrained CellWeave plus a fitted perturbation head and what is needed to use it."""

    def __init__(self, base: CellWeave, head: PerturbationHead, meta: dict[str, Any],
                 control: AnnData | None = None) -> None:
        self.base, self.head, self.meta, self.control = base, head, meta, control
        self.path: Path | None = None
        self._cache: dict = {}

    @property
    def genes(self) -> list[str]:
        return list(self.meta["genes"])

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    # -------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the base model, the head (safetensors), the metadata (JSON) and the control cells."""
        from safetensors.torch import save

        from cellweave import io

        path = Path(path)
        base_path = self.base.path
        self.base.save(path)
        self.base.path = base_path  # the base model object still describes where it came from
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        atomic_write_bytes(path / HEAD_FILE, save(state, metadata={"format": "pt"}))
        atomic_write_json(path / META_FILE, {**self.meta, "head": self.head.config(),
                                             "base_model_sha256": self.base.model_hash})
        if self.control is not None:
            io.write(self.control, path / CONTROL_FILE)
        self.path = path
        logger.info("Wrote perturbation model to %s", path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PerturbationModel:
        """Load a folder written by :meth:`save` (safetensors and JSON only; no pickle)."""
        import anndata
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / META_FILE).is_file() or not (path / HEAD_FILE).is_file():
            raise CellWeaveModelError(
                f"{path} is not a fine-tuned perturbation model (it needs {META_FILE} and {HEAD_FILE}). "
                "Create one with `cellweave finetune-perturb --out DIR`."
            )
        base = CellWeave.load(path)
        meta = json.loads((path / META_FILE).read_text())
        state = load_file(str(path / HEAD_FILE))
        cfg = meta["head"]
        head = PerturbationHead(state["gene_tokens"], int(cfg["d_cell"]), int(cfg["n_labels"]),
                                d_hidden=int(cfg["d_hidden"]), n_extra=int(cfg["n_extra"]),
                                dropout=float(cfg["dropout"]))
        head.load_state_dict(state)
        head.eval()
        control = anndata.read_h5ad(path / CONTROL_FILE) if (path / CONTROL_FILE).is_file() else None
        out = cls(base, head, meta, control)
        out.path = path
        return out

    # -------------------------------------------------------------- prediction
    def _inputs(self, name: str) -> tuple[PerturbationIdentity, np.ndarray, np.ndarray | None]:
        ident = resolve_perturbation(self.base, name, self.labels)
        vec = identity_vectors(self.base, [ident])
        extra = None
        if self.head.n_extra:
            if self.control is None:
                raise CellWeaveModelError("This model uses zero-shot features but its folder has no control cells.")
            extra = zero_shot_features(self.base, self.control, [ident], np.asarray(self.meta["gene_token_ids"]),
                                       n_cells=int(self.meta["zero_shot_cells"]), seed=int(self.meta["seed"]),
                                       cache=self._cache) / float(self.meta["zero_shot_scale"])
        return ident, vec, extra

    @torch.inference_mode()
    def predict_delta(self, name: str, cell_embedding: np.ndarray) -> np.ndarray:
        """Predicted change (n_cells, n_genes) of log-normalized expression for each control cell."""
        ident, vec, extra = self._inputs(name)
        n = cell_embedding.shape[0]
        g = torch.as_tensor(vec).expand(n, -1)
        lab = torch.full((n,), ident.label_index, dtype=torch.long)
        x = None if extra is None else torch.as_tensor(extra).expand(n, -1)
        return self.head(g, lab, torch.as_tensor(cell_embedding, dtype=torch.float32), x).numpy()

    def predict(self, adata: AnnData | None, perturbation: str, *, layer: str | None = None,
                batch_size: int = 256, seed: int = 0, progress: bool = True) -> AnnData:
        """See :func:`cellweave.tl.predict_perturbation`."""
        import anndata

        from cellweave._io_utils import h5_safe

        if adata is None:
            if self.control is None:
                raise CellWeaveInputError("This model folder has no control cells; pass control cells as INPUT "
                                          "(`cellweave predict-perturb CELLS.h5ad --model ...`).")
            adata = self.control
        genes = self.genes
        counts, missing = align_genes(adata, genes, layer=layer)
        if missing:
            logger.warning("%d of the model's %d genes are missing from the cells and were set to 0 (e.g. %s)",
                           len(missing), len(genes), ", ".join(missing[:5]))
        aligned = anndata.AnnData(X=counts, obs=pd.DataFrame(index=adata.obs_names.copy()),
                                  var=pd.DataFrame(index=pd.Index(genes)))
        if "gene_id" in self.meta:
            aligned.var["gene_id"] = self.meta["gene_id"]
        x = log_normalized(aligned)
        emb, _ = self.base.embed(aligned, batch_size=batch_size, seed=seed, progress=progress)
        delta = self.predict_delta(perturbation, emb)
        pred = np.clip(x + delta, 0.0, None).astype(np.float32)
        out = anndata.AnnData(X=x, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(genes)))
        out.layers["cellweave_predicted"] = pred
        out.obs["cellweave_predicted_shift"] = np.linalg.norm(delta, axis=1).astype(np.float32)
        out.var["cellweave_predicted_delta"] = delta.mean(axis=0).astype(np.float32)
        ident = resolve_perturbation(self.base, perturbation, self.labels)
        seen = perturbation in self.meta["training_perturbations"]
        record = {
            "perturbation": perturbation,
            "kind": f"{'seen' if seen else 'unseen'} {ident.kind}",
            "model": str(self.path) if self.path else "unsaved",
            "model_sha256": self.base.model_hash,
            "perturbation_key": self.meta["perturbation_key"],
            "control": self.meta["control"],
            "seed": seed,
            "n_missing_genes": len(missing),
            "missing_genes": missing[:50],
            "units": "log1p(counts per 1e4)",
            **self.collapse_diagnostic(emb, extra_names=[perturbation]),
            "versions": environment_versions(),
        }
        out.uns[UNS_KEY] = {"predict_perturbation": h5_safe(record)}
        logger.info("Predicted %s (%s) for %d cells; mean |change| %.4f; spread ratio %.3f",
                    perturbation, record["kind"], out.n_obs, float(np.abs(delta).mean()), record["spread_ratio"])
        return out

    def collapse_diagnostic(self, cell_embedding: np.ndarray, extra_names: list[str] = ()) -> dict[str, Any]:
        """Spread of predicted mean changes across perturbations vs the observed spread (training data)."""
        names = list(self.meta["training_perturbations"])
        observed = np.asarray(self.meta["observed_delta"], dtype=np.float32)
        predicted = np.stack([self.predict_delta(n, cell_embedding).mean(axis=0) for n in names])
        ratio = spread_ratio(predicted, observed)
        out = {"spread_ratio": ratio, "spread_predicted": float(predicted.std(axis=0).mean()),
               "spread_observed": float(observed.std(axis=0).mean()),
               "collapsed": bool(ratio < 0.25)}
        if extra_names:
            new = np.stack([self.predict_delta(n, cell_embedding).mean(axis=0) for n in extra_names])
            dist = np.linalg.norm(new[:, None] - predicted[None], axis=-1)[0]
            out["nearest_training_perturbation"] = names[int(dist.argmin())]
        if out["collapsed"]:
            logger.warning("Predictions barely differ between perturbations (spread ratio %.3f < 0.25): "
                           "the model is close to predicting one mean response.", ratio)
        return out


def spread_ratio(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Mean over genes of the std across perturbations of predicted changes, over that of observed ones."""
    obs = float(observed.std(axis=0).mean())
    return float(predicted.std(axis=0).mean() / obs) if obs > 0 else float("nan")


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
        Folder to save the fine-tuned model to (see :meth:`PerturbationModel.save`).

    Returns
    -------
    The :class:`PerturbationModel` (also saved to ``out`` when given).
    """
    t0 = time.perf_counter()
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
    X = log_normalized(adata, layer=layer)

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
    emb_key = ("control_embedding", tuple(keep[:20]), keep.size, seed)
    if _cache is not None and emb_key in _cache:
        emb = _cache[emb_key]
    else:
        emb, _ = base.embed(control_cells, seed=seed, progress=progress, layer=layer)
        if _cache is not None:
            _cache[emb_key] = emb

    readout = base.gene_token_ids(genes, var)
    token_table = base.module.feature_embedding.weight.detach().cpu().numpy()
    gene_tokens = np.where((readout >= 0)[:, None], token_table[np.maximum(readout, 0)], 0.0).astype(np.float32)
    extra, zs_scale = None, 1.0
    if zero_shot:
        extra = zero_shot_features(base, control_cells, identities, readout, seed=seed, cache=_cache)
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
    """AnnData as is; a MuData's ``rna`` modality with the container's obs columns."""
    if hasattr(data, "mod"):
        from cellweave.io import as_modalities

        mods = as_modalities(data)  # unknown modality names are refused here, as by every other verb
        if "rna" not in mods:
            raise CellWeaveInputError(
                f"The MuData has no 'rna' modality (it has {', '.join(data.mod)}); perturbation needs RNA counts. "
                "If one of these holds RNA, rename it: mdata.mod['rna'] = mdata.mod.pop(NAME); mdata.update(). "
                "Or pass the RNA AnnData itself.")
        adata = mods["rna"].copy()
        for col in data.obs.columns:
            if ":" not in str(col) and col not in adata.obs.columns:
                adata.obs[col] = data.obs.loc[adata.obs_names, col].values
        return adata
    return data
