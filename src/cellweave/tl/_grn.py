"""``cellweave.tl.grn``: gene-gene networks read off a pretrained model.

Three readings of the model, and their combination:

``embedding``
    cosine similarity of the genes' learned token embeddings (undirected, no cells needed).
``attention``
    mean attention between two genes' tokens (both directions averaged: undirected), over cells,
    heads and layers, times the number of tokens of the cell (1 = uniform attention), averaged
    over the cells where both genes are tokens.
``perturbation``
    in silico deletion: the source gene's token is removed from each cell that expresses it and
    the change of the values the model predicts for every other gene from the cell embedding
    (the cell head) is averaged; the score is its absolute value (directed).
``combined``
    the mean of the three scores' within-source percentile ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError
from cellweave.models import CellWeave, environment_versions

from ._embed import _h5_safe, _resolve_gene_model
from ._gene_utils import (
    AttentionRecorder,
    local_columns,
    prepare_rna,
    rna_adata,
    subsample,
    token_batches,
    var_token_ids,
    vocab_to_col_map,
)

if TYPE_CHECKING:
    from anndata import AnnData

    from cellweave.data import CellCorpus

logger = logging.getLogger(__name__)

GrnMethod = Literal["embedding", "attention", "perturbation", "combined"]
GRN_METHODS: tuple[str, ...] = ("embedding", "attention", "perturbation", "combined")


# ---------------------------------------------------------------------------- scores (no AnnData)
def embedding_scores(model: CellWeave, token_ids: np.ndarray) -> np.ndarray:
    """Cosine similarity of the token embeddings of ``token_ids``: ``(n, n)``, diagonal 0."""
    with torch.no_grad():
        w = model.module.feature_embedding.weight[torch.as_tensor(token_ids, dtype=torch.long)].float()
        w = torch.nn.functional.normalize(w, dim=-1)
        s = (w @ w.T).cpu().numpy()
    np.fill_diagonal(s, 0.0)
    return s.astype(np.float32)


@torch.inference_mode()
def attention_scores(
    model: CellWeave, corpus: CellCorpus, token_ids: np.ndarray, cells: np.ndarray, *,
    batch_size: int = 32, seed: int = 0, progress: bool = False,
) -> np.ndarray:
    """Directed attention scores ``(n_sources, n_targets)`` over the corpus' RNA columns.

    Entry ``[s, t]`` is the attention from target ``t``'s token to source ``s``'s token, scaled
    by the cell's token count (1 = uniform), averaged over layers, heads and the cells holding
    both tokens; 0 where the two never met.
    """
    from tqdm.auto import tqdm

    n = len(token_ids)
    v2c = vocab_to_col_map(model, token_ids)
    total = torch.zeros(n * n, dtype=torch.float64)
    count = torch.zeros(n * n, dtype=torch.float64)
    module = model.module.eval()
    with AttentionRecorder(module) as rec:
        for batch in tqdm(list(token_batches(model, corpus, cells, batch_size=batch_size, seed=seed)),
                          desc="attention", disable=not progress, leave=False):
            module.encode(batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"])
            att = rec.pop_mean()[:, 1:, 1:].cpu()  # drop the CLS row/column: gene-to-gene only
            col = local_columns(batch["token_ids"], batch["padding_mask"], v2c).cpu()
            n_tok = batch["padding_mask"].sum(1).to(att.dtype).cpu()
            att = att * n_tok[:, None, None]
            valid = col >= 0
            # pair (query=target t, key=source s) -> flat index s * n + t
            pair_ok = valid[:, :, None] & valid[:, None, :]
            flat = col[:, None, :] * n + col[:, :, None]
            total.index_add_(0, flat[pair_ok], att[pair_ok].double())
            count.index_add_(0, flat[pair_ok], torch.ones(int(pair_ok.sum()), dtype=torch.float64))
    scores = (total / count.clamp_min(1.0)).view(n, n).numpy().astype(np.float32)
    np.fill_diagonal(scores, 0.0)
    return scores


@torch.inference_mode()
def perturbation_scores(
    model: CellWeave, corpus: CellCorpus, token_ids: np.ndarray, sources: Sequence[int], cells: np.ndarray, *,
    batch_size: int = 64, seed: int = 0, signed: bool = False, progress: bool = False,
) -> np.ndarray:
    """In silico deletion effects ``(len(sources), n_targets)``.

    For each source column, the source's token is removed (masked out of attention and pooling)
    in every cell of ``cells`` that has it as a token with a nonzero value; the model's
    cell-head predictions of all genes' values before and after are compared. Entry ``[i, t]``
    is the mean change of gene ``t`` (absolute value unless ``signed``); 0 for the source itself
    and for sources no cell expresses.
    """
    from tqdm.auto import tqdm

    module = model.module.eval()
    n = len(token_ids)
    v2c = vocab_to_col_map(model, token_ids)
    targets = torch.as_tensor(token_ids, dtype=torch.long)
    sources = [int(s) for s in sources]
    src_pos = {s: i for i, s in enumerate(sources)}
    total = torch.zeros(len(sources), n, dtype=torch.float64)
    count = torch.zeros(len(sources), dtype=torch.float64)
    rna_mod = None
    for batch in tqdm(list(token_batches(model, corpus, cells, batch_size=batch_size, seed=seed)),
                      desc="in silico deletion", disable=not progress, leave=False):
        ids, vals, mods, pad = batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"]
        if rna_mod is None:
            rna_mod = int(mods[pad][0]) if pad.any() else 0
        b = ids.shape[0]
        t_ids = targets.to(ids.device).expand(b, -1)
        t_mod = torch.full_like(t_ids, rna_mod)
        cell, _ = module.encode(ids, vals, mods, pad)
        base = module.predict_from_cell_float32(cell, t_ids, t_mod)
        col = local_columns(ids, pad, v2c)
        expressed = (col >= 0) & (vals > 0)
        for s in sources:
            hit = (col == s) & expressed
            rows = hit.any(1)
            if not rows.any():
                continue
            r = rows.nonzero().squeeze(1)
            pad_del = pad[r] & ~hit[r]
            cell_del, _ = module.encode(ids[r], vals[r], mods[r], pad_del)
            delta = module.predict_from_cell_float32(cell_del, t_ids[r], t_mod[r]) - base[r]
            total[src_pos[s]] += delta.double().sum(0).cpu()
            count[src_pos[s]] += len(r)
    effect = (total / count.clamp_min(1.0)[:, None]).numpy().astype(np.float32)
    for i, s in enumerate(sources):
        effect[i, s] = 0.0
    return effect if signed else np.abs(effect)


def rank_within_rows(scores: np.ndarray) -> np.ndarray:
    """Percentile rank (0..1] of every entry within its row (ties share their mean rank)."""
    from scipy.stats import rankdata

    return (rankdata(scores, axis=1) / scores.shape[1]).astype(np.float32)


def combine_scores(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the within-row percentile ranks of several score matrices of one shape."""
    return np.mean([rank_within_rows(p) for p in parts], axis=0).astype(np.float32)


def network_scores(
    model: CellWeave, corpus: CellCorpus, token_ids: np.ndarray, sources: Sequence[int], *,
    method: GrnMethod = "combined", cells: np.ndarray | None = None, batch_size: int = 64, seed: int = 0,
    progress: bool = False, precision: str = "32-true",
) -> np.ndarray:
    """Scores ``(len(sources), n_columns)`` of edges source -> target by ``method``; the forward
    passes of ``"attention"`` and ``"perturbation"`` run at ``precision`` (scores in float32)."""
    if method not in GRN_METHODS:
        raise CellWeaveInputError(f"method must be one of {', '.join(GRN_METHODS)}, not {method!r}.")
    CellWeave.check_precision(precision)
    cells = np.arange(len(corpus)) if cells is None else np.asarray(cells)
    sources = np.asarray(sources, dtype=np.int64)
    parts = []
    if method in ("embedding", "combined"):
        parts.append(embedding_scores(model, token_ids)[sources])
    if method in ("attention", "combined"):
        with model.autocast(precision):
            att = attention_scores(model, corpus, token_ids, cells, batch_size=max(1, batch_size // 2),
                                   seed=seed, progress=progress)
        parts.append(0.5 * (att + att.T)[sources])
    if method in ("perturbation", "combined"):
        with model.autocast(precision):
            parts.append(perturbation_scores(model, corpus, token_ids, sources, cells, batch_size=batch_size,
                                             seed=seed, progress=progress))
    if len(parts) == 1:
        return parts[0]
    out = combine_scores(parts)
    out[np.arange(len(sources)), sources] = 0.0
    return out


# ---------------------------------------------------------------------------- the tl function
def _regulator_columns(
    names: np.ndarray, regulators: str | Sequence[str] | None, organism: str | None,
) -> tuple[np.ndarray, str]:
    """Columns (positions in ``names``) allowed as sources, and a description of the list."""
    from cellweave.genes import tf_list

    if isinstance(regulators, str) and regulators == "all":
        return np.arange(len(names)), "all genes"
    if regulators is None:
        org = organism if organism in ("human", "mouse") else "human"
        allowed, desc = set(tf_list(org)), f"bundled {org} TF list (pySCENIC)"
    else:
        allowed, desc = {str(r) for r in regulators}, f"{len(set(regulators))} given regulators"
    upper = {a.upper() for a in allowed}
    cols = np.array([i for i, n in enumerate(names) if n in allowed or n.upper() in upper], dtype=np.int64)
    if cols.size == 0:
        raise CellWeaveInputError(
            f"None of the regulators ({desc}) is a gene of the data that the model knows. Pass regulators= "
            "symbols present in var_names, or regulators='all' to allow every gene as a source."
        )
    return cols, desc


def grn(
    adata: AnnData,
    *,
    model: CellWeave | str | None = None,
    method: GrnMethod = "embedding",
    groupby: str | None = None,
    regulators: str | Sequence[str] | None = None,
    n_cells: int = 500,
    n_top_targets: int = 50,
    layer: str | None = None,
    organism: str | None = None,
    key_added: str = "cellweave_grn",
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    precision: str = "32-true",
    copy: bool = False,
) -> AnnData | None:
    """Infer a gene regulatory network from a pretrained CellWeave model.

    Parameters
    ----------
    adata
        AnnData with RNA counts (or log-normalized values) in ``X`` or ``layer``, or a MuData
        with an ``rna`` modality (results go into the RNA AnnData).
    model
        A :class:`~cellweave.CellWeave`, a model folder, a shipped model's name, or ``None`` for
        the shipped gene model (:data:`cellweave.models.DEFAULT_GENE_MODEL`, whose gene tables
        were learned; the default model's are fixed random codes, refused by the ``"embedding"``
        and ``"combined"`` methods).
    method
        ``"embedding"`` (cosine of gene token embeddings), ``"attention"`` (mean attention
        between the two genes' tokens, both directions), ``"perturbation"`` (in silico deletion of the source) or ``"combined"``
        (mean within-source percentile rank of the three). See the module docstring. The
        default, ``"embedding"``, ranked highest on the knock-outs of the Papalexi 2021 screen
        (``cellweave benchmark --task grn``) and needs no forward passes.
    groupby
        Column of ``obs``: one network per group (cells of that group only). Default: one network
        from all cells, group ``"all"``.
    regulators
        Gene symbols allowed as sources; ``None``: the bundled TF list of the organism
        (:func:`cellweave.genes.tf_list`); ``"all"``: every gene.
    n_cells
        Cells per group used by attention and perturbation (drawn with ``seed``).
    n_top_targets
        Edges per source kept in the edge table (the matrix keeps all).
    layer, organism
        As in :func:`cellweave.tl.embed`.
    key_added
        Key of the results in ``varp`` and ``uns``.
    batch_size, seed, progress
        Inference batch size, seed of cell sampling and tokenization, progress bars.
    precision
        ``"32-true"`` (default) or ``"bf16-mixed"``: the forward passes of ``"attention"`` and
        ``"perturbation"`` under bf16 autocast (as :func:`cellweave.tl.embed` takes it; faster on
        GPUs and CPUs with bf16 units). The attention probabilities and the deleted genes' effects
        are computed and summed in float32 from the bf16 passes (``benchmarks/task_precision.py``
        compares the networks). ``"embedding"`` makes no forward pass. Recorded in ``uns``.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``.varp[key_added]`` (no ``groupby``) or ``.varp[f"{key_added}_{group}"]`` (per group)
        ``(n_vars, n_vars)`` float32 CSR matrix, entry ``[source, target]``; rows of genes that are
        not regulators, and genes the model does not know, are empty.
    ``.uns[key_added]["edges"]``
        DataFrame with columns ``source``, ``target``, ``score``, ``rank`` (1 = strongest target of
        that source) and ``group``: the ``n_top_targets`` strongest targets of each regulator.
    ``.uns["cellweave"][key_added]``
        model name and SHA-256, method, groupby, groups, regulator list description and count,
        ``n_cells``, seed, ``precision`` and versions.

    Examples
    --------
    >>> adata = cellweave.datasets.load("perturb_papalexi2021_sceptre", modality="rna")
    >>> cellweave.tl.grn(adata, method="embedding")
    >>> adata.uns["cellweave_grn"]["edges"].head()
    """
    data = adata.copy() if copy else adata
    rna = rna_adata(data)
    model = _resolve_gene_model(model, uses_tables=method in ("embedding", "combined"))
    if method not in GRN_METHODS:
        raise CellWeaveInputError(f"method must be one of {', '.join(GRN_METHODS)}, not {method!r}.")
    CellWeave.check_precision(precision)
    if groupby is not None and groupby not in rna.obs.columns and groupby not in data.obs.columns:
        raise CellWeaveInputError(
            f"groupby {groupby!r} is not a column of obs. Pass one of: {', '.join(map(str, rna.obs.columns))}."
        )
    corpus, col_tokens = prepare_rna(rna, model, layer=layer, organism=organism)
    var_tokens = var_token_ids(rna, model, organism=organism)
    # Columns are ordered by vocabulary id; the first var of each token names it.
    first_var = {}
    for i, t in enumerate(var_tokens):
        if t >= 0 and int(t) not in first_var:
            first_var[int(t)] = i
    col_var = np.array([first_var[int(t)] for t in col_tokens], dtype=np.int64)
    col_names = np.asarray(rna.var_names[col_var]).astype(str)
    from cellweave.genes import infer_organism

    org = organism or infer_organism(rna.var_names, rna.var.get("gene_id"))
    sources, reg_desc = _regulator_columns(col_names, regulators, org)
    logger.info("GRN (%s): %d genes, %d regulators (%s)", method, len(col_tokens), len(sources), reg_desc)

    obs = rna.obs if groupby is None or groupby in rna.obs.columns else data.obs.loc[rna.obs_names]
    groups = ["all"] if groupby is None else [str(g) for g in pd.unique(obs[groupby].dropna().astype(str))]
    rng = np.random.default_rng(seed)
    edges, written = [], []
    for group in groups:
        members = np.arange(rna.n_obs) if groupby is None else np.flatnonzero(obs[groupby].astype(str).to_numpy() == group)
        cells = subsample(rna.n_obs, n_cells, rng, members)
        scores = network_scores(model, corpus, col_tokens, sources, method=method, cells=cells,
                                batch_size=batch_size, seed=seed, progress=progress, precision=precision)
        rows, cols = np.repeat(col_var[sources], len(col_var)), np.tile(col_var, len(sources))
        mat = sp.csr_matrix((scores.ravel(), (rows, cols)), shape=(rna.n_vars, rna.n_vars), dtype=np.float32)
        mat.eliminate_zeros()
        key = key_added if groupby is None else f"{key_added}_{group}"
        rna.varp[key] = mat
        written.append(key)
        k = min(n_top_targets, len(col_var) - 1)
        top = np.argsort(-scores, axis=1)[:, :k]
        for i, s in enumerate(sources):
            for r, t in enumerate(top[i]):
                edges.append((col_names[s], col_names[t], float(scores[i, t]), r + 1, group))
    table = pd.DataFrame(edges, columns=["source", "target", "score", "rank", "group"])
    rna.uns[key_added] = {"edges": table}
    record: dict[str, Any] = {
        "model": model.name, "model_sha256": model.model_hash, "method": method, "groupby": groupby,
        "groups": groups, "varp_keys": written, "regulators": reg_desc, "n_regulators": int(len(sources)),
        "n_genes": int(len(col_tokens)), "n_cells": n_cells, "n_top_targets": n_top_targets, "seed": seed,
        "precision": precision, "versions": environment_versions(),
    }
    uns = dict(rna.uns.get(UNS_KEY, {}))
    uns[key_added] = _h5_safe(record)
    rna.uns[UNS_KEY] = uns
    logger.info("Wrote .varp[%s] and .uns[%r]['edges'] (%d edges)", ", ".join(written), key_added, len(table))
    return data if copy else None
