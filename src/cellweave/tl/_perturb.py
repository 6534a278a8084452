"""``cellweave.tl.perturb`` (zero-shot in silico knock-out / over-expression) and
``cellweave.tl.predict_perturbation`` (responses from a model fine-tuned with
:func:`cellweave.train.finetune_perturbation`)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError
from cellweave.models import CellWeave, PerturbationModel, environment_versions
from cellweave.models import in_silico_profiles

from ._embed import _h5_safe, _resolve

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Above this many cells x genes the per-cell expression changes are not stored as a layer
#: (a dense float32 layer of 50M values is 200 MB); the per-gene means always are.
MAX_LAYER_VALUES = 50_000_000


def _require_tokens(model: CellWeave, genes: list[str], var: pd.DataFrame | None) -> np.ndarray:
    ids = model.gene_token_ids(genes, var)
    missing = [g for g, i in zip(genes, ids) if i < 0]
    if missing:
        raise CellWeaveInputError(
            f"Gene(s) {', '.join(missing)} are not in the model's vocabulary ({len(model.vocab):,} genes), so the "
            "model has no representation of them. Check the spelling (HGNC symbols or Ensembl IDs, e.g. "
            "MARCHF8 rather than the old MARCH8), or use a model pretrained on data that measures them."
        )
    return ids


# ---------------------------------------------------------------------- tl.perturb
def perturb(
    adata: AnnData,
    *,
    genes: str | list[str],
    mode: Literal["knockout", "overexpress"] = "knockout",
    model: CellWeave | str | None = None,
    groupby: str | None = None,
    key_added: str = "cellweave",
    layer: str | None = None,
    n_top_genes: int = 50,
    store_cell_deltas: bool | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    precision: str = "32-true",
    copy: bool = False,
) -> AnnData | None:
    """Zero-shot in silico knock-out or over-expression with the pretrained model.

    Each cell's input is changed (the ``genes`` set to zero, or to the cell's top value), the cell
    is re-embedded, and the pretrained cell head predicts every gene's value from the perturbed
    embedding. No perturbation data is used: these are the pretrained model's associations
    between genes, which may or may not be causal; fine-tune with
    :func:`cellweave.train.finetune_perturbation` to predict measured responses.

    Parameters
    ----------
    adata
        AnnData with RNA counts (or log-normalized values) in ``X`` or ``layer``.
    genes
        Gene(s) to perturb together: symbols or Ensembl IDs, a list or a comma-separated string.
        Genes that the data does not measure are perturbed too (added to each cell's input).
    mode
        ``"knockout"`` or ``"overexpress"``.
    model
        A :class:`~cellweave.CellWeave`, a model folder, a shipped model's name, or ``None``.
    groupby
        Column of ``obs`` (e.g. cell type) whose groups are ranked by their mean embedding shift.
    key_added
        Prefix of the fields written.
    layer
        Layer holding counts (default ``X``).
    n_top_genes
        Length of the ranking of the most affected genes in ``uns``.
    store_cell_deltas
        Write the per-cell predicted change of every gene as a layer; default: when the layer
        holds at most 50M values.
    batch_size, seed, progress
        Inference batch size, seed of the token sampling, progress bar.
    precision
        ``"32-true"`` (default) or ``"bf16-mixed"``: the forward passes (before and after) under
        bf16 autocast, as :func:`cellweave.tl.embed` takes it; the shifts and changes are taken in
        float32 from them (``benchmarks/task_precision.py`` compares them with float32's).
        Recorded in ``uns``.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``.obs[f"{key_added}_shift"]``
        float32, Euclidean distance of each cell's embedding (``X_cellweave`` space) before and
        after the perturbation.
    ``.var[f"{key_added}_perturb_delta"]``
        float32, mean over cells of the predicted change of each gene, in the model's value units
        (within-cell quantile for the shipped model; 0 = not detected, 1 = the cell's top gene);
        NaN for genes outside the vocabulary.
    ``.layers[f"{key_added}_perturb_delta"]``
        float32 (n_obs, n_vars), the per-cell predicted change (same units), when stored.
    ``.uns["cellweave"]["perturb"]``
        genes, their vocabulary status (measured in the data or added), mode, model name and
        SHA-256, seed, ``precision``, versions, ``top_genes`` (genes with the largest mean absolute change, with
        their mean change), ``top_groups`` (groups of ``groupby`` by mean shift, when given),
        ``mean_shift`` and ``cells_shifted`` (share of cells whose embedding moved at all).

    Examples
    --------
    >>> adata = cellweave.datasets.load("perturb_papalexi2021_sceptre", modality="rna")
    >>> cellweave.tl.perturb(adata, genes=["STAT1"], mode="knockout")
    >>> adata.obs["cellweave_shift"].describe()
    """
    if mode not in ("knockout", "overexpress"):
        raise CellWeaveInputError(f"mode must be 'knockout' or 'overexpress', not {mode!r}.")
    gene_list = [g.strip() for g in genes.split(",")] if isinstance(genes, str) else [str(g) for g in genes]
    gene_list = [g for g in gene_list if g]
    if not gene_list:
        raise CellWeaveInputError("No genes given: pass genes=['STAT1'] (or --genes STAT1,IRF1).")
    if groupby is not None and groupby not in adata.obs.columns:
        raise CellWeaveInputError(
            f"groupby={groupby!r} is not a column of adata.obs; columns: {', '.join(map(str, adata.obs.columns))}."
        )
    CellWeave.check_precision(precision)
    adata = adata.copy() if copy else adata
    model = _resolve(model)
    targets = _require_tokens(model, gene_list, adata.var)
    corpus = model.prepare(adata, layer=layer, modalities=["rna"] if hasattr(adata, "mod") else None)
    readout = model.gene_token_ids(list(map(str, adata.var_names)), adata.var)
    in_vocab = readout >= 0
    with model.autocast(precision):
        res = in_silico_profiles(model, corpus, targets, mode=mode, readout_ids=readout[in_vocab],
                                 batch_size=batch_size, seed=seed, progress=progress)
    shift = res["shift"]
    cell_delta = res["delta"]
    adata.obs[f"{key_added}_shift"] = shift
    mean_delta = np.full(adata.n_vars, np.nan, dtype=np.float32)
    mean_delta[in_vocab] = cell_delta.mean(axis=0)
    adata.var[f"{key_added}_perturb_delta"] = mean_delta
    if store_cell_deltas is None:
        store_cell_deltas = adata.n_obs * adata.n_vars <= MAX_LAYER_VALUES
    if store_cell_deltas:
        full = np.zeros((adata.n_obs, adata.n_vars), dtype=np.float32)
        full[:, in_vocab] = cell_delta
        adata.layers[f"{key_added}_perturb_delta"] = full
    order = np.argsort(-np.nan_to_num(np.abs(mean_delta), nan=-1.0))[:n_top_genes]
    measured = set(map(str, adata.var_names))
    record: dict[str, Any] = {
        "genes": gene_list,
        "genes_measured_in_data": [g for g in gene_list if g in measured],
        "mode": mode,
        "model": model.name,
        "model_sha256": model.model_hash,
        "seed": seed,
        "precision": precision,
        "layer": layer,
        "units": f"model value units ({model.config.value_encoding})",
        "n_genes_scored": int(in_vocab.sum()),
        "mean_shift": float(shift.mean()),
        "cells_shifted": float((shift > 1e-6).mean()),
        "top_genes": {"gene": [str(adata.var_names[i]) for i in order],
                      "mean_delta": [float(mean_delta[i]) for i in order]},
        "versions": environment_versions(),
    }
    if groupby is not None:
        g = pd.Series(shift, index=adata.obs_names).groupby(adata.obs[groupby].astype(str).values).mean()
        g = g.sort_values(ascending=False)
        record["groupby"] = groupby
        record["top_groups"] = {"group": [str(k) for k in g.index], "mean_shift": [float(v) for v in g.values]}
    uns = dict(adata.uns.get(UNS_KEY, {}))
    uns["perturb"] = _h5_safe(record)
    adata.uns[UNS_KEY] = uns
    logger.info("In silico %s of %s: mean embedding shift %.4f; most changed gene %s (%.4f)", mode,
                "+".join(gene_list), shift.mean(), adata.var_names[order[0]], mean_delta[order[0]])
    return adata if copy else None


# ---------------------------------------------------------------------- tl.predict_perturbation
def predict_perturbation(
    adata: AnnData | None = None,
    *,
    model: str | os.PathLike | Any,
    perturbation: str,
    key_added: str = "cellweave_predicted",
    layer: str | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    precision: str = "32-true",
) -> AnnData:
    """Predict each control cell's expression after ``perturbation`` with a fine-tuned model.

    Parameters
    ----------
    adata
        Control cells (counts or log-normalized). ``None``: the control cells kept in the model
        folder at fine-tuning. Genes are aligned to the model's gene list: reordered, missing
        genes padded with zeros (their count is logged and recorded).
    model
        A folder written by :func:`cellweave.train.finetune_perturbation` (or the loaded
        :class:`cellweave.models.PerturbationModel`).
    perturbation
        A gene (seen or unseen in fine-tuning: it is represented by its pretrained token), a
        combination ``"G1+G2"``, or a condition label seen in fine-tuning.
    key_added
        Name of the layer written.
    layer
        Layer of ``adata`` holding counts (default ``X``).
    batch_size, seed, progress
        Inference batch size, seed of the embedding's token sampling, progress bar.
    precision
        ``"32-true"`` (default) or ``"bf16-mixed"``: the control cells' embedding pass under bf16
        autocast, as :func:`cellweave.tl.embed` takes it (the head runs in float32). Recorded in ``uns``.

    Returns
    -------
    A new AnnData over the model's genes, with ``X`` the input's log1p-normalized expression
    (target sum 1e4) and:

    ``.layers[key_added]``
        float32, predicted log1p-normalized expression after the perturbation (>= 0).
    ``.obs["cellweave_predicted_shift"]``
        float32, Euclidean norm of each cell's predicted change.
    ``.var["cellweave_predicted_delta"]``
        float32, mean predicted change per gene.
    ``.uns["cellweave"]["predict_perturbation"]``
        perturbation, its kind (seen / unseen gene, label), model folder and SHA-256, seed,
        ``precision``, versions, genes missing from the input, and the mean-collapse diagnostic: ``spread_ratio``
        = standard deviation across the training perturbations (plus this one) of the predicted
        mean change, averaged over genes, divided by the same for the observed changes; values
        far below 1 mean the model predicts nearly the same response for every perturbation.
    """
    CellWeave.check_precision(precision)
    pm = model if isinstance(model, PerturbationModel) else PerturbationModel.load(model)
    out = pm.predict(adata, perturbation, layer=layer, batch_size=batch_size, seed=seed, progress=progress,
                     precision=precision)
    if key_added != "cellweave_predicted":
        out.layers[key_added] = out.layers.pop("cellweave_predicted")
    return out
