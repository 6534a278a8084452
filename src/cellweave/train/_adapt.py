"""Context-specific adaptation of a pretrained model to the user's cells, without labels.

Two methods, both with scVI's generative model (Lopez et al. 2018): a negative-binomial decoder
reconstructs each cell's counts of the data's highly variable genes, with the batch as a
covariate of the decoder, so the representation is pulled towards what distinguishes the user's
cells and away from their batches. The decoder is specific to the data and is not saved.

* ``method="head"`` (the default): the pretrained model stays frozen; a small variational
  encoder (:class:`~cellweave.nn.LatentReadout`) reads its embedding and is trained with the
  decoder, scVI's VAE with the foundation model's embedding as the encoder's input. The adapted
  model embeds cells as that latent's posterior mean. Seconds to minutes on a CPU after one
  embedding pass.
* ``method="encoder"``: the transformer itself is fine-tuned, keeping its pretraining objective
  (masked value modelling, VICReg between two masked views) plus the decoder reading its CLS
  state. Minutes per 200 steps on a CPU.

Issue 12 measured both on the development panel (``benchmarks/published/HISTORY.md``); the
adapted model is saved as a model folder every command accepts.
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
from cellweave._system import hardware, keep_torch_threads
from cellweave.data import EpochShuffleSampler, TokenDataset
from cellweave.nn import CellWeaveModule, CountDecoder, LatentReadout, nb_nll_sum

from ._plan import CountTokenDataset, PretrainPlan, collate_count_tokens

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from cellweave.models import CellWeave

logger = logging.getLogger(__name__)

#: Adaptation methods (see the module docstring): a latent readout on the frozen model, or fine-tuning of the encoder.
METHODS = ("head", "encoder")
#: Default budget of ``method="encoder"``: passes over the cells, capped by steps (200 steps: about 8 minutes on 2 CPU cores for deeply sequenced cells; 60 steps took 15-169 s per panel dataset).
DEFAULT_EPOCHS = 3
DEFAULT_MAX_STEPS = 200
#: Default budget of ``method="head"``: passes over the cells (no step cap), at this batch size and learning rate
#: (scVI trains its VAE for up to 400 passes at 1e-3 with 128 cells a batch; on the panel, 100 passes took
#: 40-334 s per dataset on shared cores, the embedding pass included).
HEAD_EPOCHS = 100
HEAD_BATCH_SIZE = 128
HEAD_LR = 1e-3
#: Latent width and hidden width of the readout (scVI's defaults: 10 and 128).
HEAD_LATENT = 10
HEAD_HIDDEN = 128
#: Fewest decoded features the count likelihood accepts.
MIN_DECODED = 5
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


def decoded_counts(data: AnnData | MuData, layer: str | None, n_genes: int = N_DECODED_GENES,
                    any_modality: bool = False) -> tuple[sp.csr_matrix | None, str]:
    """Counts of the ``n_genes`` most variable genes (Seurat-like, on log-normalized values) of the
    RNA modality, or ``None`` with the reason when the data holds no RNA counts. ``any_modality``:
    without RNA, the first other modality holding counts (e.g. CITE-seq proteins) instead."""
    from cellweave.data import log_normalize
    from cellweave.io import as_modalities, detect_x_kind

    mods = as_modalities(data)
    if "rna" not in mods and any_modality:
        for name, mod in mods.items():
            if detect_x_kind(mod.layers[layer] if layer else mod.X) == "counts":
                mods = {"rna": mod}
                logger.info("No RNA modality: decoding the %s counts instead.", name)
                break
    if "rna" not in mods:
        return None, "the data has no RNA modality" + (" and no other modality with counts" if any_modality else "")
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
    if k < MIN_DECODED:
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
    method: str = "head",
    batch_key: str | None = None,
    layer: str | None = None,
    organism: str | None = None,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    count_likelihood: bool = True,
    count_weight: float = 1.0,
    vicreg_weight: float = VICREG_WEIGHT,
    n_decoded_genes: int = N_DECODED_GENES,
    n_latent: int = HEAD_LATENT,
    start: str = "pretrained",
    from_scratch: bool = False,
    train_feature_tables: bool = True,
    seed: int = 0,
    precision: str = "32-true",
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
    method
        ``"head"`` (default): keep the model frozen and train a latent readout of its embedding
        as the encoder of scVI's VAE (needs counts: RNA, or without RNA another modality's, such
        as CITE-seq proteins); the adapted model embeds cells as ``n_latent``-d posterior means.
        ``"encoder"``: fine-tune the transformer (masked value modelling, VICReg and the count
        decoder on its CLS state); the embedding keeps the model's width. See the module docstring.
    batch_key
        ``obs`` column of batches, given to the count decoder as a covariate (technical variation
        is then explained by the decoder rather than embedded).
    max_epochs, max_steps
        The budget: passes over the cells (default: 100 with ``"head"``, 3 with ``"encoder"``),
        capped at ``max_steps`` optimizer steps (default: no cap with ``"head"``, 200 with
        ``"encoder"``).
    batch_size, lr
        Cells per step and learning rate (defaults: 128 and 1e-3 with ``"head"``, 64 and 3e-4 with
        ``"encoder"``).
    count_likelihood
        Add the negative-binomial decoder of the top ``n_decoded_genes`` highly variable genes'
        counts (needs raw RNA counts; without them only masked value modelling is used).
        ``method="encoder"`` only: the head is trained by the count likelihood alone.
    vicreg_weight
        Weight of VICReg between two masked views of each cell (0 turns it off; each step then
        runs the encoder once instead of twice). ``method="encoder"`` only.
    n_latent
        Width of the head's latent (``method="head"``; scVI's default 10).
    start
        ``"pretrained"`` (the model's weights), ``"random"`` (random weights of the same
        architecture: the control that says whether pretraining adds anything) or ``"genes"``
        (random weights except the pretrained gene embeddings; :func:`start_module`). With
        ``"head"`` the encoder stays at these weights and only the readout is trained.
    from_scratch
        The same as ``start="random"`` (kept for earlier callers).
    train_feature_tables
        ``method="encoder"``: train the per-feature tables (gene embeddings, the profile path's) with the rest of the
        network, also in a model pretrained with ``CellWeaveConfig.fixed_feature_tables``; ``False``
        keeps them as the model has them (scGPT's fine-tuning option to freeze the gene encoder
        is the same choice). Issue 12 measured it on a model pretrained with fixed tables (60
        steps, lr 1e-3, kNN macro-F1 of the cell-state half): tables kept fixed, adaptation barely
        moved the embedding (endocrinogenesis 0.45 -> 0.47, Baron 0.90 -> 0.87); trained, 0.62
        and 0.99. The adapted model's config records the choice (``fixed_feature_tables`` is
        ``not train_feature_tables``).
    precision
        ``"32-true"`` (default) or ``"bf16-mixed"``: with ``"head"`` the embedding pass of the frozen
        model runs under bf16 autocast (the readout is trained in float32); with ``"encoder"`` the
        fine-tuning is Lightning's bf16 mixed precision (on a CPU attention stays float32 while
        training, :func:`cellweave.nn.precision_autocast`'s note). Faster on GPUs and on CPUs with
        bf16 matrix units; recorded in the card (``benchmarks/embed_precision.py --adapt`` measures both).
    out
        Save the adapted model to this folder (``config.json``, ``model.safetensors``, vocabulary,
        card with the adaptation record).

    Returns
    -------
    The adapted :class:`~cellweave.CellWeave` (the input model is not changed). Its card's
    ``adaptation`` entry records the method, base model, cells, steps, seconds and the losses
    before and after.
    """
    from cellweave.models import CellWeave, environment_versions

    keep_torch_threads()
    CellWeave.check_precision(precision)
    base = model if isinstance(model, CellWeave) else CellWeave.load(model)
    if method not in METHODS:
        raise CellWeaveInputError(f"method={method!r}: give one of {', '.join(METHODS)}.")
    head = method == "head"
    max_epochs = (HEAD_EPOCHS if head else DEFAULT_EPOCHS) if max_epochs is None else max_epochs
    max_steps = (None if head else DEFAULT_MAX_STEPS) if max_steps is None else max_steps
    batch_size = int((HEAD_BATCH_SIZE if head else 64) if batch_size is None else batch_size)
    lr = float((HEAD_LR if head else 3e-4) if lr is None else lr)
    if int(max_epochs) < 1:
        raise CellWeaveInputError(f"max_epochs={max_epochs}: adaptation needs at least 1 epoch.")
    if max_steps is not None and int(max_steps) < 1:
        raise CellWeaveInputError(f"max_steps={max_steps}: give at least 1 step, or None for the default cap.")
    if head and int(n_latent) < 1:
        raise CellWeaveInputError(f"n_latent={n_latent}: the head needs a latent of at least 1 dimension.")
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
    use_counts = count_likelihood or head
    counts, why = decoded_counts(data, layer, n_decoded_genes, any_modality=head) if use_counts else (None, "turned off")
    if head and counts is None:
        raise CellWeaveInputError(
            f"adapt(method='head') trains on raw counts, but {why}. Give the layer holding raw counts "
            "(layer= / --layer), or adapt with method='encoder' (--method encoder), which can use masked value "
            "modelling alone.")
    if count_likelihood and counts is None:
        logger.warning("Count likelihood not used: %s; adapting with masked value modelling only.", why)
    batches = (np.unique(batch_values, return_inverse=True)[1] if batch_values is not None
               else np.zeros(len(corpus), dtype=np.int64))
    n_batches = int(batches.max()) + 1

    module = start_module(base, start)
    if head:
        module, record = _adapt_head(base, module, corpus, counts, batches, n_latent=int(n_latent),
                                     epochs=int(max_epochs), max_steps=max_steps, batch_size=batch_size, lr=lr,
                                     seed=seed, precision=precision, progress=progress)
    else:
        module, record = _adapt_encoder(base, module, corpus, counts, batches, count_weight=count_weight,
                                        vicreg_weight=vicreg_weight, train_feature_tables=train_feature_tables,
                                        epochs=int(max_epochs), max_steps=max_steps, batch_size=batch_size, lr=lr,
                                        seed=seed, precision=precision, progress=progress)
    seconds = time.perf_counter() - t0
    adapted = CellWeave(module.config, base.vocab, module=module, card=copy.deepcopy(base.card))
    record = {
        "method": method,
        "base_model": base.name,
        "base_model_sha256": None if start == "random" else base.model_hash,
        "start": start,
        "from_scratch": start == "random",
        "n_cells": len(corpus),
        "batch_key": batch_key,
        "n_batches": n_batches,
        "count_likelihood": counts is not None,
        "decoded_genes": int(counts.shape[1]) if counts is not None else 0,
        **record,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "precision": precision,
        "seconds": round(seconds, 1),
        "hardware": hardware(),
        "command": command or "cellweave.train.adapt(...)",
        "versions": environment_versions(),
    }
    adapted.card["name"] = {"pretrained": f"{base.name}-adapted", "random": f"{base.name}-scratch-adapted",
                            "genes": f"{base.name}-genes-adapted"}[start]
    adapted.card["adaptation"] = record
    before, after = record["losses_before"], record["losses_after"]
    logger.info("Adapted %s on %d cells (%s): %d steps in %.0f s; count NLL %s -> %s", base.name, len(corpus), method,
                record["steps"], seconds, before.get("count_nll"), after.get("count_nll"))
    if out is not None:
        adapted.save(Path(out))
        logger.info("Saved the adapted model to %s", out)
    return adapted


def _adapt_encoder(base: CellWeave, module: CellWeaveModule, corpus, counts: sp.csr_matrix | None,
                   batches: np.ndarray, *, count_weight: float, vicreg_weight: float, train_feature_tables: bool,
                   epochs: int, max_steps: int | None, batch_size: int, lr: float, seed: int,
                   precision: str, progress: bool) -> tuple[CellWeaveModule, dict]:
    """``method="encoder"``: fine-tune ``module`` (masked values, VICReg, the count decoder). A latent
    readout from an earlier ``method="head"`` adaptation is dropped: it read the encoder as it was."""
    import dataclasses

    if module.config.readout_latent:
        logger.info("Dropping the model's latent readout (it was trained on the encoder before this adaptation).")
        del module.readout
        module.config = dataclasses.replace(module.config, readout_latent=0)
    module.set_fixed_feature_tables(not train_feature_tables)
    module.train()
    n_batches = int(batches.max()) + 1
    decoder = CountDecoder(base.config.d_model, counts.shape[1], n_batches) if counts is not None else None
    tokens = TokenDataset([corpus], base.tokenizer, mode="train", seed=seed, n_targets=base.config.n_cell_targets)
    cells = CountTokenDataset(tokens, counts, batches, two_views=vicreg_weight > 0)
    loader = torch.utils.data.DataLoader(
        cells, batch_size=batch_size, sampler=EpochShuffleSampler(cells, seed), collate_fn=collate_count_tokens,
        drop_last=len(corpus) > batch_size,
    )
    steps = len(loader) * epochs
    if max_steps is not None:
        steps = min(steps, int(max_steps))
    plan = AdaptPlan(module, decoder, lr=lr, warmup_steps=max(1, min(50, steps // 10)), total_steps=steps,
                     count_weight=count_weight, vicreg_weight=vicreg_weight)
    before = _mean_losses(plan, loader, seed)
    trainer = L.Trainer(
        max_epochs=epochs, max_steps=steps, accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1, precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=progress,
        enable_model_summary=False, num_sanity_val_steps=0, gradient_clip_val=1.0, deterministic=False,
        log_every_n_steps=max(1, min(50, len(loader))),
    )
    trainer.fit(plan, loader)
    module = plan.module.cpu().eval()
    after = _mean_losses(plan, loader, seed)
    return module, {"vicreg_weight": vicreg_weight, "feature_tables": "trained" if train_feature_tables else "fixed",
                    "steps": int(trainer.global_step), "epochs": round(trainer.global_step / max(len(loader), 1), 2),
                    "losses_before": before, "losses_after": after}


def _adapt_head(base: CellWeave, module: CellWeaveModule, corpus, counts: sp.csr_matrix, batches: np.ndarray, *,
                n_latent: int, epochs: int, max_steps: int | None, batch_size: int, lr: float, seed: int,
                precision: str, progress: bool) -> tuple[CellWeaveModule, dict]:
    """``method="head"``: embed the cells with ``module`` frozen, then :func:`fit_count_readout` on the
    embedding. Returns ``module`` with the readout added (its config's ``readout_latent`` set) and the
    record's training entries."""
    import dataclasses

    from cellweave.models import CellWeave

    module.eval()
    encoder = CellWeave(module.config, base.vocab, module=module)
    with encoder.autocast(precision):
        emb = encoder.embed_corpus(corpus, seed=seed, progress=progress, pooling="pooled")
    readout, record = fit_count_readout(emb, counts, batches, n_latent=n_latent, epochs=epochs, max_steps=max_steps,
                                        batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    module.config = dataclasses.replace(module.config, readout_latent=n_latent, readout_hidden=HEAD_HIDDEN)
    module.readout = readout
    return module, record


def fit_count_readout(
    embedding: np.ndarray,
    counts: np.ndarray | sp.spmatrix,
    batches: np.ndarray | None = None,
    *,
    n_latent: int = HEAD_LATENT,
    epochs: int = HEAD_EPOCHS,
    max_steps: int | None = None,
    batch_size: int = HEAD_BATCH_SIZE,
    lr: float = HEAD_LR,
    seed: int = 0,
    progress: bool = False,
    init: LatentReadout | None = None,
) -> tuple[LatentReadout, dict]:
    """Train a :class:`~cellweave.nn.LatentReadout` of fixed cell representations as scVI's VAE.

    ``embedding`` (cells x d) is the encoder's input, ``counts`` (cells x genes, raw) what the
    :class:`~cellweave.nn.CountDecoder` reconstructs, ``batches`` (integer codes per cell, or
    ``None``) the decoder's covariate. The loss is the negative ELBO of Lopez et al. (2018): the
    negative-binomial likelihood of the counts (library size observed) plus the latent's KL
    divergence from N(0, I), the KL weight warmed up linearly over the first third of the steps as
    scVI does by default. Differences from scVI: the encoder reads ``embedding`` (standardized with
    the cells' mean and scale) rather than log counts, has a LayerNorm instead of BatchNorm and no
    dropout, and AdamW (weight decay 1e-4) runs a fixed number of passes without early stopping.
    ``adapt(method="head")`` calls it on the frozen model's embedding; the same call on another
    representation (PCA of the HVGs, a random model's embedding) is the control
    (``benchmarks/embedding_vae.py``).

    ``init`` (a readout of the same input width, latent and hidden widths, for example one trained on
    a corpus) is the encoder's starting point instead of a random one: a copy of its weights is
    trained; its standardization is replaced by these cells' own, as for a new readout. The decoder
    always starts afresh (its genes are these counts'). A warm start of the reference model, as
    scArches fine-tunes a reference-trained encoder on a query (Lotfollahi et al. 2022); here the whole
    encoder is trained, not only added query weights.

    Returns the readout (eval mode) and a record: ``n_latent``, ``steps``, ``epochs``, whether the
    encoder was warm-started (``init``) and the mean count NLL and KL over all cells before and after
    (``losses_before`` / ``losses_after``).
    """
    from tqdm.auto import tqdm

    emb = torch.as_tensor(np.ascontiguousarray(embedding), dtype=torch.float32)
    x_counts = torch.as_tensor(counts.toarray() if sp.issparse(counts) else np.asarray(counts), dtype=torch.float32)
    if len(emb) != len(x_counts):
        raise ValueError(f"embedding has {len(emb)} cells, counts {len(x_counts)}.")
    b = torch.as_tensor(np.zeros(len(emb), dtype=np.int64) if batches is None else np.asarray(batches), dtype=torch.long)
    torch.manual_seed(seed)
    readout = LatentReadout(emb.shape[1], n_latent, HEAD_HIDDEN)
    if init is not None:
        theirs = {k: tuple(v.shape) for k, v in init.state_dict().items()}
        ours = {k: tuple(v.shape) for k, v in readout.state_dict().items()}
        if theirs != ours:
            raise CellWeaveInputError(
                f"init is a readout of another shape ({_readout_shape(init)}) than this one needs "
                f"({_readout_shape(readout)}): give a readout trained on embeddings of width {emb.shape[1]} with "
                f"n_latent={n_latent}, or init=None to start from random weights.")
        readout.load_state_dict(init.state_dict())
    with torch.no_grad():
        readout.mean.copy_(emb.mean(0))
        readout.scale.copy_(emb.std(0).clamp_min(1e-6))
    decoder = CountDecoder(n_latent, x_counts.shape[1], int(b.max()) + 1, d_hidden=HEAD_HIDDEN)
    opt = torch.optim.AdamW([*readout.parameters(), *decoder.parameters()], lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)

    def elbo_terms(idx: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = readout.posterior(emb[idx])
        z = readout.sample(mu, logvar) if sample else mu
        mean, theta = decoder(z, b[idx], x_counts[idx].sum(1, keepdim=True))
        nll = nb_nll_sum(x_counts[idx], mean, theta) / len(idx)
        kl = readout.kl(mu, logvar).mean()
        return nll, kl

    @torch.no_grad()
    def losses() -> dict[str, float]:
        nll, kl = elbo_terms(torch.arange(len(emb)), sample=False)
        return {"count_nll": round(float(nll), 5), "kl": round(float(kl), 5)}

    before = losses()
    per_epoch = -(-len(emb) // batch_size)
    total = per_epoch * int(epochs) if max_steps is None else min(per_epoch * int(epochs), int(max_steps))
    warmup = max(1, total // 3)
    step = 0
    with tqdm(total=total, desc="adapting the readout", disable=not progress, leave=False) as bar:
        while step < total:
            for idx in torch.randperm(len(emb), generator=generator).split(batch_size):
                nll, kl = elbo_terms(idx, sample=True)
                loss = nll + min(1.0, step / warmup) * kl
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                bar.update(1)
                if step >= total:
                    break
    readout.eval()
    after = losses()
    return readout, {"n_latent": n_latent, "steps": step, "epochs": round(step / per_epoch, 2),
                     "init": init is not None, "losses_before": before, "losses_after": after}


def _readout_shape(readout: LatentReadout) -> str:
    """``input d, hidden h, latent n`` of a :class:`~cellweave.nn.LatentReadout`, for error messages."""
    first, last = readout.net[0], readout.net[-1]
    return f"input {first.in_features}, hidden {first.out_features}, latent {last.out_features // 2}"


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
