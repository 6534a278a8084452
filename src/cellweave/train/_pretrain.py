"""``cellweave pretrain``: a model from scratch on a set of datasets."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellweave._constants import LABEL_LOSSES
from cellweave._exceptions import CellWeaveInputError
from cellweave._system import hardware, keep_torch_threads, peak_rss_mb
from cellweave._io_utils import atomic_dir, remove_stale_temporaries_in
from cellweave.data import (
    CellCorpus,
    EpochShuffleSampler,
    TokenDataset,
    Tokenizer,
    build_vocabulary,
    collate_tokens,
    corpus_counts,
    hvg_features,
    SomaSelection,
    is_soma,
    open_soma,
    open_store,
    prepare_cells,
    read_store_manifest,
    soma_vocabulary,
    store_vocabulary,
    variable_columns,
)
from cellweave.genes import Vocabulary
from cellweave.models import CellWeave, environment_versions
from cellweave.nn import CellWeaveConfig, CountDecoder

from ._engine import LAST_CHECKPOINT, latest_checkpoint
from ._monitor import KNN_METRIC, KnnMonitorCallback, module_copy_embedder
from ._plan import (
    AtomicCheckpointIO,
    CellLogCallback,
    CountTokenDataset,
    HistoryCallback,
    PretrainPlan,
    SnapshotCallback,
    collate_count_tokens,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CELL_LOG_DIR = "cells_seen"
#: Where ``snapshot_every`` writes a model folder per chosen epoch (``epoch003``, ...).
SNAPSHOT_DIR = "snapshots"
#: Which epoch's weights a run saves (``select_epoch``): its last, or the kNN monitor's best.
SELECT_EPOCHS = ("last", "knn")
#: Lightning precisions that keep the weights in float32 (the saved model stays float32):
#: full precision, or automatic mixed precision of the forward pass (bf16 works on CPUs too).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def check_scale_options(*, strategy: str, precision: str | None, accumulate_grad_batches: int,
                        num_nodes: int, devices: int | str) -> None:
    """Refuse, before any data is read, what Lightning would refuse only after the data is prepared."""
    from lightning.pytorch.strategies import StrategyRegistry

    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if strategy not in strategies:
        raise CellWeaveInputError(f"Unknown strategy {strategy!r}; choose one of Lightning's: auto, ddp, ddp_spawn, "
                                  f"fsdp, ... (all: {', '.join(strategies)}).")
    if strategy.startswith(("fsdp", "deepspeed")):
        # Sharded strategies leave each rank a shard of the weights, and evaluation and the save
        # after fit read them whole; not supported until that path gathers the full state.
        raise CellWeaveInputError(f"strategy {strategy!r} shards the weights across devices, which pretrain does not "
                                  "support yet (the saved model would be one shard). The presets fit on one device: "
                                  "use --strategy ddp.")
    if precision is not None and precision not in PRECISIONS:
        raise CellWeaveInputError(f"precision {precision!r} is not supported; choose one of {', '.join(PRECISIONS)} "
                                  "(true half precision would save half-precision weights).")
    if int(accumulate_grad_batches) < 1:
        raise CellWeaveInputError(f"accumulate_grad_batches={accumulate_grad_batches}: give 1 (no accumulation) or more.")
    if int(num_nodes) < 1:
        raise CellWeaveInputError(f"num_nodes={num_nodes}: give at least 1.")
    if isinstance(devices, str) and devices != "auto" and not devices.lstrip("-").isdigit() and "," not in devices:
        raise CellWeaveInputError(f"devices={devices!r}: give a number of devices (2), a list of ids (0,1), "
                                  "-1 or auto.")


def split_cells(n: int, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``n`` cells into train and validation positions."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(round(val_fraction * n)) if n >= 10 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def feature_mean_baselines(
    train: list[CellCorpus], tokenizer: Tokenizer, vocab_size: int, *, seed: int, max_cells: int = 5000
) -> dict[str, np.ndarray]:
    """Two constant-per-feature predictors learned from the training cells.

    ``cell_mean``: a feature's mean over the training cells, zeros included. ``token_mean``: its
    mean over the tokens the tokenizer actually emits (which over-represents measured values, as
    masked tokens do): the stronger constant predictor, and the one the model must beat.
    Both are estimated from at most ``max_cells`` seeded cells per corpus (every cell of a smaller
    one), so a corpus of millions of cells is neither tokenized nor read in full before the first
    step (a full pass over a 1M-cell store took minutes and touched every page of it).
    """
    sums = np.zeros(vocab_size)
    counts = np.zeros(vocab_size)
    cell_sums = np.zeros(vocab_size)
    cell_counts = np.zeros(vocab_size)
    for corpus in train:
        ds = TokenDataset([corpus], tokenizer, mode="eval", seed=seed + 7)
        sample = None if len(ds) <= max_cells else np.sort(
            np.random.default_rng(seed + 7).choice(len(ds), max_cells, replace=False))
        for block in corpus.blocks:
            present = block.present if sample is None else block.present[sample]
            values = block.values if sample is None else block.values[sample]
            col_sum = np.asarray(values[present].sum(axis=0)).ravel()
            np.add.at(cell_sums, block.token_ids, col_sum)
            np.add.at(cell_counts, block.token_ids, present.sum())
        for i in range(len(ds)) if sample is None else sample:
            item = ds[int(i)]
            np.add.at(sums, item["token_ids"], item["values"])
            np.add.at(counts, item["token_ids"], 1)
    return {
        "token_mean": np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0),
        "cell_mean": np.divide(cell_sums, cell_counts, out=np.zeros_like(cell_sums), where=cell_counts > 0),
    }


@torch.inference_mode()
def evaluate_masked(
    module: torch.nn.Module,
    val: list[CellCorpus],
    tokenizer: Tokenizer,
    baselines: dict[str, np.ndarray],
    *,
    seed: int,
    batch_size: int = 128,
) -> dict[str, float]:
    """Masked-value MSE on held-out cells, beside the per-feature mean predictors of
    :func:`feature_mean_baselines` scored on the same hidden values."""
    token_mean, cell_mean = baselines["token_mean"], baselines["cell_mean"]
    was_training = module.training
    module.eval()
    n_targets = module.config.n_cell_targets
    ds = TokenDataset(val, tokenizer, mode="eval", seed=seed, n_targets=n_targets)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate_tokens)
    tot = {"token_mse": 0.0, "cell_mse": 0.0, "feature_mean_mse": 0.0, "token_mean_mse": 0.0}
    target_se, target_mean_se, n_target = 0.0, 0.0, 0
    n_masked = 0
    for batch in loader:
        out = module(batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"],
                     batch["value_mask"], batch.get("target_ids"), batch.get("target_modality_ids"))
        if n_targets:
            tm = batch["target_mask"]
            ty = batch["target_values"][tm]
            target_se += float(((out["target_pred"][tm] - ty) ** 2).sum())
            target_mean_se += float(((cell_mean[batch["target_ids"][tm].numpy()] - ty.numpy()) ** 2).sum())
            n_target += int(tm.sum())
        m = batch["value_mask"]
        y = batch["values"][m]
        ids = batch["token_ids"][m].numpy()
        tot["token_mse"] += float(((out["token_pred"][m] - y) ** 2).sum())
        tot["cell_mse"] += float(((out["cell_pred"][m] - y) ** 2).sum())
        yn = y.numpy()
        tot["feature_mean_mse"] += float(((cell_mean[ids] - yn) ** 2).sum())
        tot["token_mean_mse"] += float(((token_mean[ids] - yn) ** 2).sum())
        n_masked += int(m.sum())
    module.train(was_training)
    res = {k: v / max(n_masked, 1) for k, v in tot.items()}
    res["n_masked_values"] = n_masked
    if n_targets:
        res["target_mse"] = target_se / max(n_target, 1)
        res["target_feature_mean_mse"] = target_mean_se / max(n_target, 1)
    res["loss"] = res["token_mse"] + (res["target_mse"] if n_targets else res["cell_mse"])
    return res


def _restrict_modalities(datasets: dict[str, AnnData | MuData], modalities: list[str]) -> dict[str, AnnData | MuData]:
    """Each dataset reduced to ``modalities`` (an AnnData counts as RNA); those left empty are dropped."""
    from mudata import MuData

    from cellweave.io import as_modalities

    out: dict[str, AnnData | MuData] = {}
    for name, data in datasets.items():
        mods = {m: a for m, a in as_modalities(data).items() if m in modalities}
        if not mods:
            logger.info("%s: none of the modalities %s; skipped", name, modalities)
            continue
        if set(mods) == {"rna"}:
            rna = mods["rna"]
            out[name] = rna if not isinstance(data, MuData) else rna.copy()
        else:
            out[name] = MuData(mods)
        if isinstance(data, MuData):
            # The container's annotations (cell types for the label term, ...) stay with the cells.
            obs = out[name].obs
            for column in data.obs.columns.difference(obs.columns):
                obs[column] = data.obs[column].reindex(obs.index)
    if not out:
        raise CellWeaveInputError(f"No dataset carries any of the modalities {modalities}.")
    return out


def decoded_gene_panel(
    corpora: list[CellCorpus], value_encoding: str, *, n_per_dataset: int = 1000, max_genes: int = 4000
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray] | None:
    """What the count likelihood of pretraining decodes, over corpora with different gene panels.

    Each corpus with RNA counts contributes its ``n_per_dataset`` most variable genes (scanpy's
    "seurat" flavour on its log-normalized cells); the union, capped at the ``max_genes`` chosen
    by the most corpora, is the decoded panel. Returns ``(counts, codes, masks, token_ids)``: the
    counts of the panel genes of every cell of every corpus (in corpus order, zeros for corpora
    without counts), each cell's corpus index, per corpus which panel genes it measured, and the
    panel's vocabulary ids; ``None`` when no corpus holds RNA counts.
    """
    per: list[tuple[sp.csr_matrix, np.ndarray] | None] = []
    votes: dict[int, int] = {}
    for corpus in corpora:
        counts = corpus_counts(corpus, value_encoding)
        if counts is None or counts.shape[1] < 10:
            per.append(None)
            continue
        block = next(b for b in corpus.blocks if b.modality == "rna")
        present = np.flatnonzero(block.present)
        hvg = hvg_features(block.values[present].tocsr(), n_top=n_per_dataset)  # a store's rows load here
        per.append((counts, block.token_ids))
        for t in block.token_ids[hvg]:
            votes[int(t)] = votes.get(int(t), 0) + 1
    if not votes:
        return None
    ranked = sorted(votes, key=lambda t: (-votes[t], t))[:max_genes]
    panel = np.sort(np.asarray(ranked, dtype=np.int64))
    position = {int(t): j for j, t in enumerate(panel)}
    parts, masks, codes = [], np.zeros((len(corpora), panel.size), dtype=bool), []
    for k, (corpus, entry) in enumerate(zip(corpora, per)):
        codes.append(np.full(len(corpus), k, dtype=np.int64))
        if entry is None:
            parts.append(sp.csr_matrix((len(corpus), panel.size), dtype=np.float32))
            continue
        counts, token_ids = entry
        cols = np.flatnonzero(np.isin(token_ids, panel))
        target = np.asarray([position[int(t)] for t in token_ids[cols]], dtype=np.int64)
        masks[k, target] = True
        move = sp.csr_matrix((np.ones(cols.size, dtype=np.float32), (cols, target)), shape=(token_ids.size, panel.size))
        parts.append((counts @ move).tocsr())
    return sp.vstack(parts, format="csr"), np.concatenate(codes), masks, panel


def _corpus_pcs(corpus: CellCorpus, *, n_top: int, n_pcs: int, seed: int,
                min_cells: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows with RNA, their scores on the first n_pcs principal components)`` of a corpus's
    standardized ``n_top`` most variable genes (the panel's PCA baseline), or ``None`` when it has
    fewer than ``min_cells`` cells with RNA or fewer than 10 genes.

    The corpus's HVG values are held densely meanwhile (cells x ``n_top`` floats, 8 GB for a million
    cells of one source): subsample a large store with ``max_cells_per_dataset``."""
    from sklearn.decomposition import PCA

    block = next((b for b in corpus.blocks if b.modality == "rna"), None)
    present = np.flatnonzero(block.present) if block is not None else np.zeros(0, dtype=np.int64)
    if block is None or present.size < max(min_cells, 3) or block.values.shape[1] < 10:
        return None
    cols = variable_columns(block, n_top, seed=seed)  # cached on the block, as HVG tokens use it
    X = block.values[present].tocsr()
    X = (X if cols is None else X[:, cols]).toarray().astype(np.float32)
    X -= X.mean(axis=0)
    sd = X.std(axis=0)
    X[:, sd > 0] /= sd[sd > 0]
    n_comp = int(min(n_pcs, X.shape[1] - 1, present.size - 1))
    return present, PCA(n_components=n_comp, random_state=seed).fit_transform(X).astype(np.float32)


def neighbour_partners(
    corpora: list[CellCorpus], *, k: int = 15, n_top: int = 2000, n_pcs: int = 50, seed: int = 0
) -> np.ndarray:
    """Each cell's ``k`` nearest neighbours within its own corpus, as positions in the corpora
    concatenated: ``(n_cells, k)``, the rows :class:`CountTokenDataset` draws a second view from.

    Neighbours are found as the panel's PCA baseline finds them: Euclidean distance in the first
    ``n_pcs`` principal components of the standardized ``n_top`` most variable genes
    (:func:`~cellweave.data.variable_columns`, kept on the block) of the corpus's RNA values (log1p
    of counts per 10k with ``value_encoding="log1p"``). A cell without RNA, or of a corpus with
    fewer than ``k + 2`` such cells or 10 genes, is its own partner (the second view is then of
    the same cell, as in plain VICReg).

    The positive pair of a contrastive term as the cell's neighbour in expression space rather
    than a second view of itself: NNCLR (Dwibedi et al. 2021) takes neighbours in the learned
    embedding; CLAIRE (Yan et al. 2023) takes mutual nearest neighbours for single-cell
    integration. Here the neighbours are fixed before training, within one dataset, so a batch
    effect between datasets is never made a positive.

    Each corpus's HVG values are held densely while its neighbours are found (cells x ``n_top``
    floats, 8 GB for a million cells of one source): subsample a large store with
    ``max_cells_per_dataset``.
    """
    from sklearn.neighbors import NearestNeighbors

    parts, start = [], 0
    for corpus in corpora:
        n = len(corpus)
        own = np.repeat(np.arange(start, start + n, dtype=np.int64)[:, None], k, axis=1)
        found = _corpus_pcs(corpus, n_top=n_top, n_pcs=n_pcs, seed=seed, min_cells=k + 2)
        if found is not None:
            present, Z = found
            nearest = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z, return_distance=False)[:, 1:]
            own[present] = start + present[nearest]
        parts.append(own)
        start += n
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def principal_targets(
    corpora: list[CellCorpus], *, n_pcs: int = 32, n_top: int = 2000, seed: int = 0
) -> np.ndarray:
    """Each cell's scores on the first ``n_pcs`` principal components of its own corpus, the
    targets of pretraining's principal-component term: ``(n_cells, n_pcs)`` float32, in the
    corpora's order.

    The components are the panel's PCA baseline's (standardized ``n_top`` most variable genes of
    the corpus's RNA values; see :func:`neighbour_partners`). Each corpus's scores are divided by
    the root of their mean variance, so every corpus weighs alike while the leading components keep
    their larger share within it. A corpus with fewer components fills the rest with zeros; a cell
    without RNA, or of a corpus with fewer than 10 such cells or 10 genes, gets NaN (no target).
    """
    parts = []
    for corpus in corpora:
        out = np.full((len(corpus), n_pcs), np.nan, dtype=np.float32)
        found = _corpus_pcs(corpus, n_top=n_top, n_pcs=n_pcs, seed=seed, min_cells=10)
        if found is not None:
            present, Z = found
            scale = float(np.sqrt(np.mean(Z.var(axis=0)))) or 1.0
            out[present] = 0.0
            out[present, : Z.shape[1]] = Z / scale
        parts.append(out)
    return np.concatenate(parts) if parts else np.zeros((0, n_pcs), dtype=np.float32)


def cell_labels(data: AnnData | MuData, keys: Sequence[str]) -> tuple[np.ndarray, list[str], str] | None:
    """The class of each cell of ``data`` under the first of ``keys`` its ``obs`` has: ``(codes,
    classes, key)``, codes an int64 array with -1 for a cell without a label (missing value), or
    None when ``obs`` has none of the keys or the column has fewer than 2 classes (nothing to
    tell apart). The targets of pretraining's label term (``pretrain(label_keys=...)``)."""
    for key in keys:
        if key in data.obs.columns:
            col = pd.Categorical(data.obs[key].astype("object").where(data.obs[key].notna(), None))
            if len(col.categories) < 2:
                return None
            return np.asarray(col.codes, dtype=np.int64), [str(c) for c in col.categories], key
    return None


def monitor_cells_of(
    monitor: dict[str, AnnData | MuData], label_keys: Sequence[str], *, n_cells: int, seed: int = 0,
    corpus: Sequence[str] = (), hashes: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The kNN monitor's cells (``pretrain(monitor=)``): per dataset its labelled cells (at most
    ``n_cells``, drawn with ``seed``; ``pretrain`` keeps 0, so runs of any seed score the same cells)
    as ``{"data", "labels", "key", "classes"}``. Refuses, before
    anything is written, a dataset that is also in the ``corpus`` (by name, or by file ``hashes``:
    its score would not be held out),
    one without a label column of at least 2 classes, and ``n_cells`` < 10."""
    if int(n_cells) < 10:
        raise CellWeaveInputError(f"monitor_cells={n_cells}: give at least 10 cells per monitor dataset (default 2000).")
    shared = sorted(set(monitor) & set(corpus))
    if hashes:  # the same file under another name
        corpus_files = {hashes[n]: n for n in corpus if n in hashes}
        shared += sorted(f"{n} (the file of {corpus_files[hashes[n]]})" for n in monitor
                         if n not in corpus and hashes.get(n) in corpus_files)
    if shared:
        raise CellWeaveInputError(f"{', '.join(shared)}: a monitor dataset is also pretrained on, so its kNN score "
                                  "would not be held out; monitor labelled data outside the corpus (a different file "
                                  "that only shares a corpus file's name: rename it).")
    out = {}
    for i, (name, data) in enumerate(monitor.items()):
        labelled = cell_labels(data, list(label_keys))
        if labelled is None:
            raise CellWeaveInputError(
                f"The monitor dataset {name} has no obs column {' / '.join(label_keys)} with at least 2 classes; "
                f"give the column holding its cell types (--knn-monitor-key KEY; obs has: "
                f"{', '.join(map(str, data.obs.columns[:12])) or 'no columns'}).")
        codes, classes, key = labelled
        keep = np.flatnonzero(codes >= 0)
        if keep.size > n_cells:
            keep = np.sort(np.random.default_rng(seed + 2000 + i).choice(keep, int(n_cells), replace=False))
        kept = np.unique(codes[keep])
        if kept.size < 2:
            raise CellWeaveInputError(f"The monitor dataset {name}: its labelled cells ({key}) hold one class; a kNN "
                                      "score needs at least 2.")
        out[name] = {"data": data[keep].copy(), "labels": np.asarray(classes, dtype=object)[codes[keep]],
                     "key": key, "classes": int(kept.size)}
    return out


@torch.inference_mode()
def evaluate_cross_modal(
    module: torch.nn.Module,
    val: list[CellCorpus],
    tokenizer: Tokenizer,
    baselines: dict[str, np.ndarray],
    *,
    seed: int,
    batch_size: int = 128,
) -> dict[str, float]:
    """Cross-modal prediction error on held-out multimodal cells: one modality of every such
    cell is left out of the input (fixed per cell) and its values are predicted by the cell
    head; beside it, the per-feature mean over all training cells on the same values.
    Empty when no validation cell carries two modalities."""
    corpora = [c for c in val if sum(b.token_ids.size > 0 for b in c.blocks) >= 2]
    if not corpora or module.config.n_cell_targets <= 0:
        return {}
    cell_mean = baselines["cell_mean"]
    was_training = module.training
    module.eval()
    ds = TokenDataset(corpora, tokenizer, mode="eval", seed=seed + 13, n_targets=module.config.n_cell_targets,
                      modality_dropout=1.0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate_tokens)
    se, se_mean, n = 0.0, 0.0, 0
    for batch in loader:
        out = module(batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"],
                     None, batch["target_ids"], batch["target_modality_ids"])
        tm = batch["target_mask"]
        y = batch["target_values"][tm]
        se += float(((out["target_pred"][tm] - y) ** 2).sum())
        se_mean += float(((cell_mean[batch["target_ids"][tm].numpy()] - y.numpy()) ** 2).sum())
        n += int(tm.sum())
    module.train(was_training)
    return {"cross_modal_mse": se / max(n, 1), "cross_modal_feature_mean_mse": se_mean / max(n, 1),
            "cross_modal_values": n}


def pretrain(
    datasets: dict[str, AnnData | MuData] | None,
    *,
    out: str | os.PathLike,
    preset: str = "tiny",
    max_epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_cells_per_dataset: int | None = None,
    min_cells_per_feature: int = 3,
    resume: bool = False,
    config_overrides: dict[str, Any] | None = None,
    name: str | None = None,
    command: str | None = None,
    data_hashes: dict[str, str] | None = None,
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    precision: str | None = None,
    progress: bool = True,
    modalities: list[str] | None = None,
    max_steps: int | None = None,
    count_likelihood: bool = False,
    n_decoded_genes: int = 1000,
    count_latent: int = 0,
    vicreg_weight: float = 0.0,
    vicreg_neighbours: int = 0,
    pc_targets: int = 0,
    pc_weight: float = 1.0,
    label_keys: Sequence[str] | None = None,
    label_weight: float = 1.0,
    label_loss: str = "linear",
    store: str | os.PathLike | None = None,
    soma: SomaSelection | None = None,
    accumulate_grad_batches: int = 1,
    gradient_checkpointing: bool = False,
    num_nodes: int = 1,
    log_cells: bool = False,
    embed_hvg_tokens: int | None = None,
    snapshot_every: int = 0,
    monitor: dict[str, AnnData | MuData] | None = None,
    monitor_label_keys: Sequence[str] = ("cell_type",),
    monitor_cells: int = 2000,
    select_epoch: str = "last",
) -> CellWeave:
    """Pretrain a CellWeave model with masked value modelling.

    Parameters
    ----------
    datasets
        Name -> AnnData (RNA) or MuData (any of rna, prot, atac, gene_activity). Every modality a
        dataset carries is used; cells may lack some modalities. ``None`` with ``store``.
    store
        A token store folder (``cellweave prepare``) to pretrain from instead of ``datasets``:
        cells are read from memory-mapped shards, each source counts as a dataset, and the
        vocabulary and value encoding are the store's. Or a TileDB-SOMA experiment (local folder
        or URI, :func:`cellweave.data.is_soma`), streamed without a store
        (:func:`cellweave.data.open_soma`): its vocabulary is every feature of the selected cells
        detected in ``min_cells_per_feature`` of them (one pass over the cells), and each
        cell is normalized as it is read; blocks of neighbouring cells are read at once and
        shuffled together.
    soma
        Measurement, ``X`` layer, ``obs`` filter and feature-name column of a SOMA ``store``
        (:class:`cellweave.data.SomaSelection`; default: "RNA", the raw layer, every cell).
    out
        Folder for the model (``config.json``, ``model.safetensors``, ``vocab.json``, model card,
        ``history.json``) and its training checkpoints (``checkpoints/last.ckpt``).
    preset
        Architecture preset (``tiny``, ``small``, ``base``).
    max_epochs
        Passes over the training cells.
    max_cells_per_dataset
        Subsample larger datasets to this many cells (seeded), so one dataset does not dominate.
    resume
        Continue from ``out/checkpoints/last.ckpt`` (same data and vocabulary).
    seed
        Seeds data splits, sampling, masking and initialization; recorded in the model card.
    modalities
        Pretrain on these modalities only (e.g. ``["rna"]`` for an RNA-only model to compare a
        jointly pretrained one with); datasets carrying none of them are skipped. Default: all.
    max_steps
        Stop after this many optimizer steps (a large corpus is trained for steps, not epochs);
        the learning-rate schedule spans ``min(max_steps, epochs x steps per epoch)``.
    count_likelihood
        Add a negative-binomial decoder of each cell's raw counts of the most variable genes
        (``n_decoded_genes`` per dataset, union over datasets) from its CLS state, with the
        dataset as a covariate (scVI's generative model; see :class:`PretrainPlan`). Needs
        ``value_encoding="log1p"`` in ``config_overrides`` (counts are recovered from log1p values).
    count_latent
        > 0 (with ``count_likelihood``): decode the counts from a ``count_latent``-dimensional
        Gaussian latent read off the pooled embedding instead of from the CLS state, trained as a
        variational autoencoder with the encoder (scVI's objective end to end; see
        :class:`PretrainPlan`). The saved model keeps this readout and embeds cells as its
        posterior mean (``config.readout_latent``); ``embed_cells(readout=False)`` still gives the
        pooled embedding. 0 (default): no bottleneck.
    vicreg_weight
        Weight of VICReg between two masked views of each cell (0: off; each step then encodes
        every cell once instead of twice).
    vicreg_neighbours
        With ``vicreg_weight`` > 0: take VICReg's second view from one of the cell's
        ``vicreg_neighbours`` nearest neighbours in its dataset (PCA of the dataset's 2,000 most
        variable genes, :func:`neighbour_partners`) instead of from the cell itself, so that cells
        close in expression are pulled together in the cell state. 0 (default): the same cell.
    pc_targets
        > 0: add a term asking the cell state to give, through a linear map per dataset, the cell's
        scores on its dataset's first ``pc_targets`` principal components
        (:func:`principal_targets`; :class:`~cellweave.train.PretrainPlan`). 0 (default): off.
    pc_weight
        The weight of that term in the loss (default 1.0).
    label_keys
        Add a label term: every dataset whose ``obs`` has one of these columns (the first found)
        contributes each labelled cell's class as the target of a classifier per dataset from
        the cell state (``label_loss``) (:class:`~cellweave.train.PretrainPlan`; SCimilarity-style supervised
        pretraining on annotated cells). Datasets without the column, or with one class, train
        without it; cells with a missing label too. Data files only (not a store or SOMA).
    label_weight
        The weight of that term in the loss (default 1.0).
    label_loss
        That classifier: ``"linear"`` (default; logits ``W z + b``) or ``"cosine"`` (logits 16 x the
        cosine between the cell state and a learned proxy per class: a normalized softmax that pulls
        each type's cells toward one direction; :class:`~cellweave.train.PretrainPlan`).
    accelerator, devices, num_nodes, strategy, precision, accumulate_grad_batches
        Passed to Lightning's ``Trainer``. With several devices (``strategy`` ``"ddp"``, or
        ``"auto"``), Lightning wraps the sampler in a distributed sampler: each rank trains on a
        different part of every epoch's permutation of the training cells (all sources and
        shards of a store shuffled together) and gradients are averaged, so the ranks keep
        equal weights. ``batch_size`` is per device; the learning-rate schedule spans the
        optimizer steps Lightning counts for the run (per-rank batches / accumulation, capped by
        ``max_steps``). ``precision``: one of :data:`PRECISIONS`.
    gradient_checkpointing
        Recompute the encoder blocks' activations in the backward pass (``torch.utils.checkpoint``):
        less memory for about a third more compute; same gradients.
    log_cells
        Write, per rank, the training-set positions of the cells it trained on (per epoch) and a
        SHA-256 of its final weights to ``out/cells_seen/rank{r}.json``: a check of the data
        sharding of a distributed run (see :class:`~cellweave.train.CellLogCallback`).
    embed_hvg_tokens
        Save the model with ``hvg_tokens=embed_hvg_tokens``: train on tokens drawn as the config
        says (all features by default), then draw the tokens of the cells it embeds, adapts to or
        annotates from the ``embed_hvg_tokens`` most variable genes of those cells. Measured
        (issue 12): the held-out recipe's weights embed the panel at kNN macro-F1 0.684 with 2,000
        HVG tokens against 0.661 with all genes, while pretraining on HVG tokens as well scores
        0.666. ``None``: as the config says.
    snapshot_every
        > 0: also save the model after every ``snapshot_every``-th epoch as a model folder
        ``out/snapshots/epochNNN`` (:class:`~cellweave.train.SnapshotCallback`) that every command
        accepts as ``--model``, its card naming the run, the epoch, the step and that epoch's
        validation losses, so checkpoints of one run can be compared on held-out cells
        (``benchmarks/positive_control.py score --models``). 0 (default): the final model only.
    monitor
        Name -> labelled data outside the corpus: after every epoch's validation (and once before
        training) each is embedded as the saved model would embed it and scored by kNN macro-F1
        (k = 15, stratified 5-fold within the dataset, the panel's rule); the mean is logged as
        ``val_knn_f1`` in the history and every snapshot's card, and the "best" checkpoint in
        ``out/checkpoints`` is the epoch of the highest mean instead of the lowest validation loss
        (:class:`~cellweave.train.KnnMonitorCallback`; DINO's kNN monitor). Issue 12 measured why:
        the validation loss kept falling while held-out transfer fell after half the run.
    monitor_label_keys
        The ``obs`` columns holding the monitor datasets' cell types (the first found; default
        ``cell_type``). Cells without a label are left out.
    monitor_cells
        Score at most this many cells of each monitor dataset (default 2,000). The cells and the kNN
        folds are drawn with seed 0 whatever ``seed`` is, so runs of different seeds are scored alike.
    select_epoch
        ``"last"`` (default): the run saves the weights of its last epoch. ``"knn"`` (needs
        ``monitor``): it saves the weights of the trained epoch with the highest ``val_knn_f1``,
        and the card's ``monitor`` record names that epoch; the masked-value metrics after training
        are those weights'.

    Returns
    -------
    The trained model, also saved to ``out``. ``model.card["metrics"]`` holds the validation
    masked-value MSE before and after training and the per-feature mean baselines.
    """
    keep_torch_threads()
    check_scale_options(strategy=strategy, precision=precision, accumulate_grad_batches=accumulate_grad_batches,
                        num_nodes=num_nodes, devices=devices)
    if embed_hvg_tokens is not None and int(embed_hvg_tokens) < 0:
        raise CellWeaveInputError(f"embed_hvg_tokens={embed_hvg_tokens}: give a number of genes, or 0 for all.")
    if select_epoch not in SELECT_EPOCHS:
        raise CellWeaveInputError(f"select_epoch={select_epoch!r}: give one of {', '.join(SELECT_EPOCHS)}.")
    if select_epoch == "knn" and not monitor:
        raise CellWeaveInputError("select_epoch='knn' chooses the epoch by the kNN monitor's score; give the labelled "
                                  "held-out data to score (--knn-monitor FILE), or keep the last epoch (--select-epoch last).")
    if int(snapshot_every) < 0:
        raise CellWeaveInputError(f"snapshot_every={snapshot_every}: give a number of epochs >= 1 (--snapshot-every 3 "
                                  "saves the model after epochs 3, 6, ...), or 0 for the final model only.")
    stored: dict[str, Any] = {}
    if soma is not None and (store is None or not is_soma(store)):
        raise CellWeaveInputError("soma= selects cells of a TileDB-SOMA experiment; pass one as store=.")
    if store is not None and is_soma(store):
        if datasets:
            raise CellWeaveInputError("Pretrain from a SOMA experiment or from data files, not both.")
        if modalities is not None:
            raise CellWeaveInputError("modalities= cannot restrict a SOMA experiment; it is read as RNA.")
        encoding = (config_overrides or {}).get("value_encoding") or CellWeaveConfig.from_preset(preset).value_encoding
        config_overrides = {**(config_overrides or {}), "value_encoding": encoding}
        saved = Path(out) / "vocab.json"  # a resumed run keeps the vocabulary its weights index
        store_vocab = (Vocabulary.load(saved) if resume and saved.is_file()
                       else soma_vocabulary(store, selection=soma, min_cells=min_cells_per_feature))
        stored = {c.name: c for c in open_soma(store, vocab=store_vocab, value_encoding=encoding, selection=soma)}
        datasets = dict.fromkeys(stored)  # names only; cells come from the experiment
        data_hashes = {c.name: c.source["sha256"] for c in stored.values()}
    elif store is not None:
        if datasets:
            raise CellWeaveInputError("Pretrain from a token store or from data files, not both (pass one store folder).")
        if modalities is not None:
            raise CellWeaveInputError("modalities= cannot restrict a token store; prepare a store of those files instead.")
        encoding = read_store_manifest(store)["value_encoding"]
        asked = (config_overrides or {}).get("value_encoding", encoding)
        if asked != encoding:
            raise CellWeaveInputError(f"The token store {store} holds {encoding!r} values, not {asked!r}; "
                                      "drop --value-encoding or prepare the files again with a matching model.")
        config_overrides = {**(config_overrides or {}), "value_encoding": encoding}
        store_vocab = store_vocabulary(store)
        stored = {c.name: c for c in open_store(store, vocab=store_vocab, value_encoding=encoding)}
        datasets = dict.fromkeys(stored)  # names only; cells come from the store
        data_hashes = {c.name: c.source["sha256"] for c in stored.values()}
    if not datasets:
        raise CellWeaveInputError("No datasets to pretrain on: pass at least one .h5ad/.h5mu file.")
    monitored = monitor_cells_of(monitor, monitor_label_keys, n_cells=monitor_cells,
                                 corpus=list(datasets), hashes=data_hashes) if monitor else {}
    if int(max_epochs) < 1:
        raise CellWeaveInputError(
            f"max_epochs={max_epochs} would save an untrained model; give at least 1 (--max-epochs 1)."
        )
    if max_steps is not None and int(max_steps) < 1:
        raise CellWeaveInputError(f"max_steps={max_steps} would save an untrained model; give at least 1.")
    if int(count_latent) < 0 or (int(count_latent) > 0 and not count_likelihood):
        raise CellWeaveInputError(
            f"count_latent={count_latent}: a latent bottleneck is the count likelihood's; give a width >= 1 together "
            "with count_likelihood=True (--count-likelihood), or 0 for no bottleneck.")
    if vicreg_weight < 0:
        raise CellWeaveInputError(f"vicreg_weight={vicreg_weight}: give a weight >= 0 (0 turns VICReg off).")
    if vicreg_neighbours < 0 or (vicreg_neighbours > 0 and vicreg_weight <= 0):
        raise CellWeaveInputError(
            f"vicreg_neighbours={vicreg_neighbours}: give a number of neighbours >= 1 together with a VICReg weight "
            "> 0 (--vicreg-weight), or 0 for two views of the same cell.")
    if int(pc_targets) < 0:
        raise CellWeaveInputError(f"pc_targets={pc_targets}: give a number of components >= 1, or 0 to leave the "
                                  "principal-component term off.")
    if pc_weight < 0:
        raise CellWeaveInputError(f"pc_weight={pc_weight}: give a weight >= 0.")
    if label_weight < 0:
        raise CellWeaveInputError(f"label_weight={label_weight}: give a weight >= 0.")
    if label_loss not in LABEL_LOSSES:
        raise CellWeaveInputError(f"label_loss={label_loss!r}: give one of {', '.join(LABEL_LOSSES)}.")
    if label_keys and (store is not None or soma is not None):
        raise CellWeaveInputError("label_keys: the label term reads obs columns of data files; a token store or SOMA "
                                  "experiment keeps no labels. Pretrain from the .h5ad/.h5mu files instead.")
    needs_counts = [what for what, on in (
        ("The count likelihood decodes raw counts", count_likelihood),
        ("Depth augmentation thins a cell's counts", (config_overrides or {}).get("depth_augmentation", 0.0) > 0)) if on]
    if needs_counts and (config_overrides or {}).get("value_encoding", "quantile") != "log1p":
        raise CellWeaveInputError(
            f"{'; '.join(needs_counts)}: within-cell quantiles cannot give the counts back; pretrain with "
            "value_encoding='log1p' (--value-encoding log1p) or without --count-likelihood / --depth-augmentation.")
    if modalities is not None:
        datasets = _restrict_modalities(datasets, modalities)
    out = Path(out)
    ckpt_dir = out / CHECKPOINT_DIR
    ckpt_path = ckpt_dir / LAST_CHECKPOINT
    if resume and not ckpt_path.is_file():
        raise CellWeaveInputError(f"--resume was given but {ckpt_path} does not exist; run without --resume first.")
    t0 = time.perf_counter()
    L.seed_everything(seed, workers=True, verbose=False)

    vocab_path = out / "vocab.json"
    if resume and vocab_path.is_file():
        vocab = Vocabulary.load(vocab_path)
    elif stored:
        vocab = store_vocab
    else:
        vocab, _ = build_vocabulary(datasets, min_cells=min_cells_per_feature)
        if len(vocab) == 0:
            raise CellWeaveInputError(
                f"No feature of the data is detected in at least {min_cells_per_feature} cells or maps to a known "
                "gene, protein or peak, so there is nothing to pretrain on. Check that var_names are gene symbols "
                "or var['gene_id'] holds Ensembl IDs (see the coverage report of `cellweave embed`)."
            )
    logger.info("Vocabulary: %d features", len(vocab))

    overrides = dict(config_overrides or {})
    if count_latent:  # the bottleneck is the model's latent readout, so the saved model embeds through it
        overrides["readout_latent"] = int(count_latent)
    config = CellWeaveConfig.from_preset(preset, vocab_size=len(vocab), **overrides)
    tokenizer = Tokenizer.from_config(config)

    train_corpora, val_corpora, data_records = [], [], []
    train_labels, label_records = [], {}
    for i, (dname, data) in enumerate(datasets.items()):
        corpus = stored[dname] if stored else prepare_cells(data, vocab, dataset=dname,
                                                             value_encoding=config.value_encoding)
        labelled = cell_labels(data, label_keys) if label_keys else None
        codes = labelled[0] if labelled else np.full(len(corpus), -1, dtype=np.int64)
        if max_cells_per_dataset is not None and len(corpus) > max_cells_per_dataset:
            keep = np.sort(np.random.default_rng(seed + 1000 + i).choice(len(corpus), max_cells_per_dataset, replace=False))
            corpus, codes = corpus.subset(keep), codes[keep]
        tr, va = split_cells(len(corpus), val_fraction=val_fraction, seed=seed + i)
        train_labels.append(codes[tr])
        if labelled:
            label_records[dname] = {"key": labelled[2], "classes": len(labelled[1]),
                                    "labelled_train_cells": int((codes[tr] >= 0).sum())}
        train_corpora.append(corpus.subset(tr))
        if va.size:
            val_corpora.append(corpus.subset(va))
        data_records.append(
            {
                "name": dname,
                "n_train": int(tr.size),
                "n_val": int(va.size),
                "modalities": corpus.modalities,
                "coverage": corpus.coverage,
                **({"sha256": data_hashes[dname]} if data_hashes and dname in data_hashes else {}),
                **({"soma": corpus.source["soma"]} if stored and "soma" in corpus.source else {}),
            }
        )
    if not val_corpora:
        raise CellWeaveInputError("Too few cells for a validation split (need at least 10 cells per dataset).")
    if label_keys and not label_records:
        raise CellWeaveInputError(
            f"label_keys={list(label_keys)}: no dataset has one of these obs columns with at least 2 classes; give "
            "the column that holds the cell types (e.g. --label-key cell_type), or leave the label term off.")
    # Only now that every input has been read and checked: a refused input leaves no folder behind.
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, ckpt_dir):  # what a killed earlier run left half-written
        for stale in remove_stale_temporaries_in(folder):
            logger.info("Removed %s, left by a run that was killed while writing it", stale.name)
    if not (resume and vocab_path.is_file()):
        vocab.save(vocab_path)

    decoder, decoded = None, None
    if count_likelihood:
        decoded = decoded_gene_panel(train_corpora, config.value_encoding, n_per_dataset=n_decoded_genes)
        if decoded is None:
            logger.warning("Count likelihood not used: no dataset holds RNA counts.")
            if count_latent:  # no likelihood to train it: an untrained readout must not become the embedding
                logger.warning("No latent bottleneck either (count_latent=%d needs RNA counts).", count_latent)
                config = dataclasses.replace(config, readout_latent=0)
    model = CellWeave(config, vocab)
    n_targets = config.n_cell_targets
    train_ds = TokenDataset(train_corpora, tokenizer, mode="train", seed=seed, n_targets=n_targets)
    val_ds = TokenDataset(val_corpora, tokenizer, mode="eval", seed=seed, n_targets=n_targets)
    if decoded is not None:
        decoder = CountDecoder(int(count_latent) or config.d_model, decoded[3].size, len(train_corpora))
        logger.info("Count likelihood over %d genes (%d per dataset, union), dataset as covariate",
                    decoded[3].size, n_decoded_genes)
    targets = None
    if pc_targets:
        targets = principal_targets(train_corpora, n_pcs=int(pc_targets), seed=seed)
        logger.info("Principal-component term: each dataset's first %d components (%.0f%% of cells have them)",
                    pc_targets, 100 * float(np.isfinite(targets[:, 0]).mean()))
    labels = np.concatenate(train_labels) if label_records else None
    if labels is not None:
        logger.info("Label term: %d datasets labelled (%s), %.0f%% of training cells", len(label_records),
                    ", ".join(f"{k}: {v['classes']} classes" for k, v in label_records.items()),
                    100 * float((labels >= 0).mean()))
    if decoder is not None or vicreg_weight > 0 or targets is not None or labels is not None:
        codes = np.repeat(np.arange(len(train_corpora)), [len(c) for c in train_corpora])  # the dataset, per cell
        partners = None
        if vicreg_neighbours > 0:
            partners = neighbour_partners(train_corpora, k=int(vicreg_neighbours), seed=seed)
            logger.info("VICReg positives: one of each cell's %d nearest neighbours in its dataset (%.0f%% of cells "
                        "have them)", vicreg_neighbours, 100 * float((partners[:, 0] != np.arange(len(partners))).mean()))
        train_cells = CountTokenDataset(train_ds, decoded[0] if decoded else None, codes,
                                        two_views=vicreg_weight > 0, gene_masks=decoded[2] if decoded else None,
                                        partners=partners, pc_targets=targets, labels=labels)
        collate = collate_count_tokens
    else:
        train_cells, collate = train_ds, collate_tokens
    # Order and samples are functions of (seed, epoch): a resumed run repeats an uninterrupted one exactly.
    train_loader = torch.utils.data.DataLoader(
        train_cells, batch_size=batch_size, sampler=EpochShuffleSampler(train_cells, seed), collate_fn=collate,
        drop_last=vicreg_weight > 0 and len(train_cells) > batch_size,  # BatchNorm and VICReg need > 1 cell
    )
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=128, collate_fn=collate_tokens)
    steps_per_epoch = len(train_loader)
    # total_steps / warmup_steps None: the plan takes the run's optimizer steps from the trainer
    # (estimated_stepping_batches), which knows the devices, the accumulation and max_steps.
    plan = PretrainPlan(model.module, decoder, lr=lr, warmup_steps=None, total_steps=None,
                        vicreg_weight=vicreg_weight, n_pc_targets=int(pc_targets), n_codes=len(train_corpora),
                        pc_weight=pc_weight, label_weight=label_weight, label_cosine=label_loss == "cosine",
                        label_classes=[label_records[n]["classes"] if n in label_records else 0 for n in datasets]
                        if labels is not None else None)
    model.module.gradient_checkpointing = bool(gradient_checkpointing)

    baselines = feature_mean_baselines(train_corpora, tokenizer, len(vocab), seed=seed)
    before = evaluate_masked(model.module, val_corpora, tokenizer, baselines, seed=seed)
    logger.info("Validation masked-value MSE before training: %.4f (token-mean baseline %.4f)",
                before["token_mse"], before["token_mean_mse"])

    history = HistoryCallback()
    epoch0 = {"epoch": 0, "step": 0, "val_loss": before["loss"], "val_token_mse": before["token_mse"],
              "val_cell_mse": before["cell_mse"]}
    if "target_mse" in before:
        epoch0["val_target_mse"] = before["target_mse"]
    saved_config = (config if embed_hvg_tokens is None  # the saved model tokenizes the cells it is given this way
                    else dataclasses.replace(config, hvg_tokens=int(embed_hvg_tokens)))
    # What the run is, in the final model's card and every snapshot's.
    run_fields = {"command": command or "cellweave.train.pretrain(...)", "seed": seed, "preset": preset,
                  "batch_size": batch_size, "lr": lr, "max_steps": max_steps}

    knn = None
    if monitored:
        knn = KnnMonitorCallback(
            module_copy_embedder(lambda module: CellWeave(saved_config, vocab, module=module),
                                 {n: m["data"] for n, m in monitored.items()}),
            {n: m["labels"] for n, m in monitored.items()}, keep_best=select_epoch == "knn")
        epoch0[KNN_METRIC] = float(np.mean(list(knn.score(model.module).values())))
        logger.info("kNN monitor before training (random weights): macro-F1 %.4f on %s", epoch0[KNN_METRIC],
                    ", ".join(monitored))

    def save_snapshot(folder: Path, record: dict[str, Any]) -> None:
        """The weights after epoch ``record["epoch"]`` as a model folder, written beside and renamed into place."""
        snap = CellWeave(saved_config, vocab, module=plan.module, card={
            "name": f"{name or out.name} (epoch {record['epoch']} of {max_epochs})",
            "description": f"Snapshot after epoch {record['epoch']} of a pretraining run of {max_epochs} epochs "
                           f"(the run's final model is {out}); chosen epochs are compared by a held-out score.",
            "snapshot": {"run": str(out), "max_epochs": int(max_epochs), **record},
            **run_fields, "epochs": record["epoch"], "steps": record["step"], "hardware": hardware(),
            "data": data_records,
            "metrics": {k: v for k, v in record.items() if k.startswith("val_")},
            "versions": environment_versions(),
        })
        snap.history = [epoch0] + history.history
        with atomic_dir(folder) as tmp:
            snap.save(tmp)
        logger.info("Wrote the model after epoch %d (step %d) to %s", record["epoch"], record["step"], folder)

    # The best epoch by the kNN monitor (else by validation loss), and the latest epoch (last.ckpt) for --resume.
    best = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, filename="epoch{epoch:03d}", save_top_k=1,
        monitor=KNN_METRIC if knn else "val_loss", mode="max" if knn else "min", auto_insert_metric_name=False,
    )
    callbacks: list[L.Callback] = ([knn] if knn else []) + [history, best, latest_checkpoint(ckpt_dir)]
    if log_cells:
        callbacks.append(CellLogCallback(out / CELL_LOG_DIR))
    if snapshot_every:
        callbacks.append(SnapshotCallback(out / SNAPSHOT_DIR, int(snapshot_every), save_snapshot))
    trainer = L.Trainer(
        max_epochs=max_epochs,
        max_steps=int(max_steps) if max_steps is not None else -1,
        accelerator=accelerator,
        devices=devices,
        num_nodes=int(num_nodes),
        strategy=strategy,
        precision=precision,
        accumulate_grad_batches=int(accumulate_grad_batches),
        callbacks=callbacks,

        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        default_root_dir=out,
        deterministic=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(
        plan, train_loader, val_loader,
        ckpt_path=str(ckpt_path) if resume else None, weights_only=True if resume else None,
    )
    selected = None
    if knn is not None:
        selected = max(knn.scores, key=lambda r: r[KNN_METRIC]) if knn.scores else None
        if selected is not None and selected[KNN_METRIC] <= epoch0[KNN_METRIC]:
            logger.warning("No trained epoch beats the random initialization on the kNN monitor (best %.4f at epoch %d "
                           "against %.4f before training).", selected[KNN_METRIC], selected["epoch"], epoch0[KNN_METRIC])
        if select_epoch == "knn" and knn.best is not None:
            plan.module.load_state_dict(knn.best["state"])
            logger.info("Kept the weights of epoch %d (kNN macro-F1 %.4f on the monitor; last epoch %.4f)",
                        knn.best["epoch"], knn.best[KNN_METRIC], knn.scores[-1][KNN_METRIC])
    model.module = plan.module.cpu()
    model.module.gradient_checkpointing = False  # a training switch; the returned model starts without it
    after = evaluate_masked(model.module, val_corpora, tokenizer, baselines, seed=seed)
    logger.info("Validation masked-value MSE after training: %.4f", after["token_mse"])
    cross = evaluate_cross_modal(model.module, val_corpora, tokenizer, baselines, seed=seed)
    if cross:
        logger.info("Validation cross-modal MSE (one modality left out): %.4f (per-feature mean %.4f)",
                    cross["cross_modal_mse"], cross["cross_modal_feature_mean_mse"])

    train_seconds = time.perf_counter() - t0
    model.history = [epoch0] + history.history
    model.card = {
        "name": name or out.name,
        "description": "CellWeave transformer pretrained with masked value modelling (token and cell heads) "
        f"and cross-modal masking (modality dropout {config.modality_dropout})"
        + (f", a negative-binomial count likelihood of {decoded[3].size} genes with the dataset as covariate"
           if decoder is not None else "")
        + (f" decoded from a {count_latent}-dimensional Gaussian latent of the pooled embedding (a variational "
           "bottleneck; cells are embedded as its posterior mean)" if decoder is not None and count_latent else "")
        + (f", VICReg between two masked views (weight {vicreg_weight})" if vicreg_weight > 0 and not vicreg_neighbours
           else "")
        + (f", VICReg between masked views of a cell and of one of its {vicreg_neighbours} nearest neighbours in its "
           f"dataset (weight {vicreg_weight})" if vicreg_neighbours else "")
        + (f", a linear readout of each dataset's first {pc_targets} principal components from the cell state "
           f"(weight {pc_weight})"
           if pc_targets else "")
        + (f", a {label_loss} classifier per dataset of the cells' labels from the cell state (obs "
           f"{', '.join(sorted({r['key'] for r in label_records.values()}))}; {len(label_records)} datasets labelled; "
           f"weight {label_weight})" if label_records else "")
        + (f", {config.depth_augmentation:.0%} of training cells read at a lower depth (counts thinned to "
           f"{100 * config.depth_augmentation_min:.0f}-100%)"
           if config.depth_augmentation else "")
        + " on the listed datasets; "
        + ("all modalities each dataset carries were used." if modalities is None
           else f"modalities used: {', '.join(modalities)}."),
        "modalities": list(modalities) if modalities is not None else "all",
        **run_fields,
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "distributed": {"accelerator": str(accelerator), "devices": int(trainer.num_devices),
                        "num_nodes": int(trainer.num_nodes), "world_size": int(trainer.world_size),
                        "strategy": type(trainer.strategy).__name__, "precision": str(trainer.precision),
                        "accumulate_grad_batches": int(accumulate_grad_batches),
                        "gradient_checkpointing": bool(gradient_checkpointing),
                        "effective_batch_size": batch_size * int(trainer.world_size) * int(accumulate_grad_batches),
                        "lr_schedule_steps": int(plan.total_steps or 0), "warmup_steps": int(plan.warmup_steps or 0)},
        "objective": {"masked_values": True, "count_likelihood_genes": int(decoded[3].size) if decoder is not None else 0,
                      "count_covariate": "dataset" if decoder is not None else None,
                      "count_latent": int(count_latent) if decoder is not None else 0,
                      "vicreg_weight": vicreg_weight, "vicreg_neighbours": int(vicreg_neighbours),
                      "pc_targets": int(pc_targets), "pc_weight": pc_weight if pc_targets else 0.0,
                      "label_keys": list(label_keys) if label_records else [],
                      "label_weight": label_weight if label_records else 0.0,
                      "label_loss": label_loss if label_records else None, "labelled_datasets": label_records},
        **({"monitor": {
            "metric": KNN_METRIC, "rule": "kNN (k=15) macro-F1, stratified 5-fold within each dataset; mean over datasets",
            "datasets": [{"name": n, "n_cells": int(len(m["labels"])), "label_key": m["key"], "classes": m["classes"],
                          **({"sha256": data_hashes[n]} if data_hashes and n in data_hashes else {})}
                         for n, m in monitored.items()],
            "before_training": epoch0[KNN_METRIC],
            "scores": knn.scores,
            "seconds": round(sum(r.get("seconds", 0.0) for r in knn.scores), 1),
            "best": {k: selected[k] for k in ("epoch", "step", KNN_METRIC)} if selected else None,
            "select_epoch": select_epoch,
            "saved_epoch": int(knn.best["epoch"]) if select_epoch == "knn" and knn.best else int(trainer.current_epoch),
        }} if knn is not None else {}),
        "max_cells_per_dataset": max_cells_per_dataset,
        "val_fraction": val_fraction,
        "train_seconds": round(train_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "hardware": hardware(),
        "data": data_records,
        "metrics": {
            "val_masked_mse_epoch0": before["token_mse"],
            "val_masked_mse": after["token_mse"],
            "val_cell_head_mse": after["cell_mse"],
            "val_feature_mean_mse": after["feature_mean_mse"],
            "val_token_mean_mse": after["token_mean_mse"],
            "val_masked_values": after["n_masked_values"],
            **({"val_cell_target_mse": after["target_mse"],
                "val_cell_target_feature_mean_mse": after["target_feature_mean_mse"]} if "target_mse" in after else {}),
            **{f"val_{k}": v for k, v in cross.items()},
        },
        "versions": environment_versions(),
    }
    model.config = saved_config
    if trainer.is_global_zero:  # under DDP every rank holds the same weights; one writes them
        model.save(out)
        logger.info("Saved model to %s (%.0f s)", out, train_seconds)
    return model
