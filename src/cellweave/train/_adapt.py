"""Context-specific adaptation: self-supervised fine-tuning of a pretrained model on the user's cells.

No labels are used. The encoder keeps its pretraining objective (masked value modelling) and
gains a count likelihood: a negative-binomial decoder reconstructs each cell's counts of the
data's highly variable genes from its CLS state, with the batch as a covariate of the decoder
(scVI's generative model, Lopez et al. 2018), so the embedding is pulled towards what
distinguishes the user's cells and away from their batches. The decoder is specific to the data
and is not saved; the adapted encoder is saved as a model folder every command accepts.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import scipy.sparse as sp
import torch

from cellweave._exceptions import CellWeaveInputError
from cellweave.data import EpochShuffleSampler, TokenDataset
from cellweave.nn import CellWeaveModule, CountDecoder

from ._plan import CountTokenDataset, PretrainPlan, collate_count_tokens

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from cellweave.models import CellWeave

logger = logging.getLogger(__name__)

#: Default budget: passes over the cells, capped by steps (200 steps: about 8 minutes on 2 CPU cores for deeply sequenced cells; 60 steps took 15-169 s per panel dataset).
DEFAULT_EPOCHS = 3
DEFAULT_MAX_STEPS = 200
#: Genes decoded by the count likelihood.
N_DECODED_GENES = 2000
#: Weight of the VICReg term (its invariance part then weighs 1, like the other losses).
VICREG_WEIGHT = 0.04
#: Where adaptation starts: the pretrained weights; random weights of the same architecture (the
#: control for pretraining); random weights except the pretrained per-feature tables (the gene
#: embeddings, and the profile path's gene weights where the model has the path).
STARTS = ("pretrained", "random", "genes")
#: Parameters ``start="genes"`` keeps from the pretrained model: one row per vocabulary entry (the
#: feature embeddings, the profile path's and the per-feature offsets, where the model has them).
GENE_TABLES = ("feature_embedding.weight", "profile_embedding.weight", "feature_offset.weight")


def _check_start(start: str) -> None:
    if start not in STARTS:
        raise CellWeaveInputError(f"start={start!r}: give one of {', '.join(STARTS)}.")


def start_module(base: CellWeave, start: str, seed: int | None = None) -> CellWeaveModule:
    """The module adaptation trains, a new object (``base`` is not changed): see :data:`STARTS`.
    ``seed`` seeds the random weights (``None``: torch's current random state, as :func:`adapt`
    uses it after seeding everything).

    ``"genes"`` follows the usual transfer of pretrained word embeddings into a freshly initialized
    network (as scGPT and Geneformer fine-tuning keep the gene table; here every other weight is
    re-drawn): it tests whether pretraining's value lies in what it learned about genes rather than
    in the transformer's weights.
    """
    _check_start(start)
    if start == "pretrained":
        return copy.deepcopy(base.module)
    if seed is not None:
        torch.manual_seed(seed)
    module = CellWeaveModule(base.config)
    if start == "genes":
        pretrained = base.module.state_dict()
        kept = {k: pretrained[k].clone() for k in GENE_TABLES if k in pretrained}
        missing, unexpected = module.load_state_dict(kept, strict=False)
        assert not unexpected and len(missing) == len(module.state_dict()) - len(kept)
    return module


class AdaptPlan(PretrainPlan):
    """:class:`PretrainPlan` with adaptation's defaults (a lower learning rate, a short warm-up)."""

    def __init__(self, module: CellWeaveModule, decoder: CountDecoder | None, *, lr: float = 3e-4,
                 weight_decay: float = 0.01, warmup_steps: int = 20, total_steps: int = 100,
                 count_weight: float = 1.0, vicreg_weight: float = 0.0) -> None:
        super().__init__(module, decoder, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                         total_steps=total_steps, count_weight=count_weight, vicreg_weight=vicreg_weight)

    # Adaptation fits every cell and has no validation split: without a validation step Lightning
    # does not warn "You defined a validation_step but have no val_dataloader" on every run.
    validation_step = L.LightningModule.validation_step


def _decoded_counts(data: AnnData | MuData, layer: str | None, n_genes: int) -> tuple[sp.csr_matrix | None, str]:
    """Counts of the ``n_genes`` most variable genes (Seurat-like, on log-normalized values) of the
    RNA modality, or ``None`` with the reason when the data holds no RNA counts."""
    from cellweave.data import log_normalize
    from cellweave.io import as_modalities, detect_x_kind

    mods = as_modalities(data)
    if "rna" not in mods:
        return None, "the data has no RNA modality"
    rna = mods["rna"]
    X = rna.layers[layer] if layer else rna.X
    if detect_x_kind(X) != "counts":
        return None, "the RNA values are not raw counts (give --layer with counts to use the count likelihood)"
    X = sp.csr_matrix(X, dtype=np.float32)
    lognorm = log_normalize(rna, layer=layer)
    mean = np.asarray(lognorm.mean(0)).ravel()
    var = np.asarray(lognorm.multiply(lognorm).mean(0)).ravel() - mean**2
    dispersion = np.log(np.divide(var, mean, out=np.zeros_like(var), where=mean > 0) + 1e-12)
    # Seurat-like: log dispersion of log-normalized values z-scored within 20 quantile bins of the
    # mean (scanpy's flavor="seurat", data.hvg_features, bins on expm1 values by equal width; this
    # choice is what the published adaptation numbers were measured with).
    bins = np.digitize(mean, np.quantile(mean[mean > 0], np.linspace(0, 1, 21)[1:-1])) if (mean > 0).any() else mean
    z = np.full_like(dispersion, -np.inf)
    for b in np.unique(bins):
        sel = (bins == b) & (mean > 0)
        if sel.sum() > 1:
            d = dispersion[sel]
            z[sel] = (d - d.mean()) / (d.std() + 1e-12)
        elif sel.any():
            z[sel] = 0.0
    k = int(min(n_genes, (mean > 0).sum()))
    if k < 10:
        return None, f"only {k} genes are detected"
    genes = np.sort(np.argsort(-z)[:k])
    return X[:, genes].tocsr(), f"{k} genes"


def _obs_column(data: AnnData | MuData, key: str) -> np.ndarray:
    """``obs[key]`` as strings, from the MuData's own obs or else one of its modalities' obs."""
    frames = [data.obs] + [m.obs for m in getattr(data, "mod", {}).values()]
    for obs in frames:
        if key in obs.columns and len(obs) == data.n_obs:
            values = obs[key]
            missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
            if missing.any():
                logger.warning("%d of %d cells have no value in obs[%r]; they are adapted as one more batch, "
                               "'missing'. Fill in their batch to use it.", int(missing.sum()), len(values), key)
            return np.where(missing, "missing", values.astype(str).to_numpy())
    raise CellWeaveInputError(
        f"batch_key {key!r} is not a column of obs (columns: {', '.join(map(str, data.obs.columns[:10]))}); "
        "give an existing column, or no batch key.")


def adapt(
    data: AnnData | MuData,
    *,
    model: CellWeave | str | None = None,
    batch_key: str | None = None,
    layer: str | None = None,
    organism: str | None = None,
    max_epochs: int = DEFAULT_EPOCHS,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    batch_size: int = 64,
    lr: float = 3e-4,
    count_likelihood: bool = True,
    count_weight: float = 1.0,
    vicreg_weight: float = VICREG_WEIGHT,
    n_decoded_genes: int = N_DECODED_GENES,
    start: str = "pretrained",
    from_scratch: bool = False,
    train_feature_tables: bool = True,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    command: str | None = None,
) -> CellWeave:
    """Adapt a pretrained model to ``data`` without labels; return the adapted copy.

    Parameters
    ----------
    data
        AnnData (RNA counts) or MuData: the cells to adapt to (for annotation, reference and query
        together). No label is read.
    model
        The model to start from (object, folder, shipped name or ``None`` for the default).
    batch_key
        ``obs`` column of batches, given to the count decoder as a covariate (technical variation
        is then explained by the decoder rather than embedded).
    max_epochs, max_steps
        The budget: passes over the cells, capped at ``max_steps`` optimizer steps (``None``: no cap).
    count_likelihood
        Add the negative-binomial decoder of the top ``n_decoded_genes`` highly variable genes'
        counts (needs raw RNA counts; without them only masked value modelling is used).
    vicreg_weight
        Weight of VICReg between two masked views of each cell (0 turns it off; each step then
        runs the encoder once instead of twice).
    start
        ``"pretrained"`` (the model's weights), ``"random"`` (random weights of the same
        architecture: the control that says whether pretraining adds anything) or ``"genes"``
        (random weights except the pretrained gene embeddings; :func:`start_module`).
    from_scratch
        The same as ``start="random"`` (kept for earlier callers).
    train_feature_tables
        Train the per-feature tables (gene embeddings, the profile path's) with the rest of the
        network, also in a model pretrained with ``CellWeaveConfig.fixed_feature_tables``; ``False``
        keeps them as the model has them (scGPT's fine-tuning option to freeze the gene encoder
        is the same choice). Issue 12 measured it on a model pretrained with fixed tables (60
        steps, lr 1e-3, kNN macro-F1 of the cell-state half): tables kept fixed, adaptation barely
        moved the embedding (endocrinogenesis 0.45 -> 0.47, Baron 0.90 -> 0.87); trained, 0.62
        and 0.99. The adapted model's config records the choice (``fixed_feature_tables`` is
        ``not train_feature_tables``).
    out
        Save the adapted model to this folder (``config.json``, ``model.safetensors``, vocabulary,
        card with the adaptation record).

    Returns
    -------
    The adapted :class:`~cellweave.CellWeave` (the input model is not changed). Its card's
    ``adaptation`` entry records the base model, cells, steps, seconds and the losses before and
    after.
    """
    from cellweave.models import CellWeave, environment_versions

    base = model if isinstance(model, CellWeave) else CellWeave.load(model)
    if int(max_epochs) < 1:
        raise CellWeaveInputError(f"max_epochs={max_epochs}: adaptation needs at least 1 epoch.")
    if max_steps is not None and int(max_steps) < 1:
        raise CellWeaveInputError(f"max_steps={max_steps}: give at least 1 step, or None for no cap.")
    if from_scratch:
        if start not in ("pretrained", "random"):
            raise CellWeaveInputError(f"from_scratch=True and start={start!r} contradict each other; give only start.")
        start = "random"
    _check_start(start)  # before the data are prepared
    batch_values = _obs_column(data, batch_key) if batch_key is not None else None
    t0 = time.perf_counter()
    L.seed_everything(seed, workers=True, verbose=False)
    corpus = base.prepare(data, layer=layer, organism=organism)
    if len(corpus) < 2 * batch_size and len(corpus) < 20:
        raise CellWeaveInputError(f"Only {len(corpus)} cells: adaptation needs at least 20.")
    counts, why = _decoded_counts(data, layer, n_decoded_genes) if count_likelihood else (None, "turned off")
    if count_likelihood and counts is None:
        logger.warning("Count likelihood not used: %s; adapting with masked value modelling only.", why)
    batches = (np.unique(batch_values, return_inverse=True)[1] if batch_values is not None
               else np.zeros(len(corpus), dtype=np.int64))
    n_batches = int(batches.max()) + 1

    module = start_module(base, start)
    module.set_fixed_feature_tables(not train_feature_tables)
    module.train()
    decoder = CountDecoder(base.config.d_model, counts.shape[1], n_batches) if counts is not None else None
    tokens = TokenDataset([corpus], base.tokenizer, mode="train", seed=seed, n_targets=base.config.n_cell_targets)
    cells = CountTokenDataset(tokens, counts, batches, two_views=vicreg_weight > 0)
    loader = torch.utils.data.DataLoader(
        cells, batch_size=batch_size, sampler=EpochShuffleSampler(cells, seed), collate_fn=collate_count_tokens,
        drop_last=len(corpus) > batch_size,
    )
    steps = len(loader) * int(max_epochs)
    if max_steps is not None:
        steps = min(steps, int(max_steps))
    plan = AdaptPlan(module, decoder, lr=lr, warmup_steps=max(1, min(50, steps // 10)), total_steps=steps,
                     count_weight=count_weight, vicreg_weight=vicreg_weight)
    before = _mean_losses(plan, loader, seed)
    trainer = L.Trainer(
        max_epochs=int(max_epochs), max_steps=steps, accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=progress,
        enable_model_summary=False, num_sanity_val_steps=0, gradient_clip_val=1.0, deterministic=False,
        log_every_n_steps=max(1, min(50, len(loader))),
    )
    trainer.fit(plan, loader)
    module = plan.module.cpu().eval()
    after = _mean_losses(plan, loader, seed)
    seconds = time.perf_counter() - t0

    adapted = CellWeave(module.config, base.vocab, module=module, card=copy.deepcopy(base.card))
    record = {
        "base_model": base.name,
        "base_model_sha256": None if start == "random" else base.model_hash,
        "start": start,
        "from_scratch": start == "random",
        "n_cells": len(corpus),
        "batch_key": batch_key,
        "n_batches": n_batches,
        "count_likelihood": decoder is not None,
        "vicreg_weight": vicreg_weight,
        "feature_tables": "trained" if train_feature_tables else "fixed",
        "decoded_genes": int(counts.shape[1]) if counts is not None else 0,
        "steps": int(trainer.global_step),
        "epochs": round(trainer.global_step / max(len(loader), 1), 2),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "seconds": round(seconds, 1),
        "losses_before": before,
        "losses_after": after,
        "command": command or "cellweave.train.adapt(...)",
        "versions": environment_versions(),
    }
    adapted.card["name"] = {"pretrained": f"{base.name}-adapted", "random": f"{base.name}-scratch-adapted",
                            "genes": f"{base.name}-genes-adapted"}[start]
    adapted.card["adaptation"] = record
    logger.info("Adapted %s on %d cells: %d steps in %.0f s; count NLL %s -> %s, masked loss %.4f -> %.4f",
                base.name, len(corpus), record["steps"], seconds, before.get("count_nll"), after.get("count_nll"),
                before["masked_loss"], after["masked_loss"])
    if out is not None:
        adapted.save(Path(out))
        logger.info("Saved the adapted model to %s", out)
    return adapted


@torch.no_grad()
def _mean_losses(plan: AdaptPlan, loader: torch.utils.data.DataLoader, seed: int, max_batches: int = 4) -> dict[str, float]:
    """Mean losses over the first ``max_batches`` batches of a fixed seeded pass (for the card)."""
    was = plan.training
    plan.eval()
    sums: dict[str, float] = {}
    n = 0
    tokens = loader.dataset.tokens
    epoch = tokens.epoch
    tokens.set_epoch(10**9)  # samples of their own, never drawn in training
    idx = np.random.default_rng(seed + 7).permutation(len(loader.dataset))[: max_batches * loader.batch_size]
    for start in range(0, len(idx), loader.batch_size):
        batch = collate_count_tokens([loader.dataset[int(i)] for i in idx[start:start + loader.batch_size]])
        losses = plan.losses(batch)
        masked = losses["token_mse"] + losses.get("target_mse", losses["cell_mse"])
        sums["masked_loss"] = sums.get("masked_loss", 0.0) + float(masked)
        for key in ("count_nll", "vicreg"):
            if key in losses:
                sums[key] = sums.get(key, 0.0) + float(losses[key])
        n += 1
    tokens.set_epoch(epoch)
    plan.train(was)
    return {k: round(v / max(n, 1), 5) for k, v in sums.items()}
