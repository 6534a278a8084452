"""``cellweave.tl.markers``: biomarker discovery by attribution through the model.

The model's view of a group is the probability that a multinomial logistic regression on the
frozen cell embeddings (standardized, ``C=1``, fitted on every labelled cell) gives to that
group. A gene's score for a group is how much it moves that log-probability in the group's
cells:

``integrated_gradients`` (default)
    integrated gradients of log p(group) with respect to the values of the cell's gene tokens,
    from the baseline "every token measured as zero" to the cell's values (``n_steps`` Riemann
    midpoints), averaged over the group's cells (genes a cell lacks contribute 0).
``deletion``
    in silico removal: the drop of log p(group) when the gene's token is removed from the cell,
    averaged over the group's cells, for the ``n_candidates`` genes most often expressed in the
    group (other genes score 0). Slower; one forward pass per candidate gene and batch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError
from cellweave.models import CellWeave, environment_versions

from ._embed import _h5_safe, _resolve
from ._gene_utils import local_columns, log_normalized, prepare_rna, rna_adata, subsample, token_batches, vocab_to_col_map

if TYPE_CHECKING:
    from anndata import AnnData

    from cellweave.data import CellCorpus

logger = logging.getLogger(__name__)

MarkerMethod = Literal["integrated_gradients", "deletion"]


class _FrozenClassifier(torch.nn.Module):
    """Standardize -> linear -> log-softmax, from a fitted scikit-learn scaler and classifier."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.register_buffer("coef", torch.as_tensor(coef, dtype=torch.float32))
        self.register_buffer("intercept", torch.as_tensor(intercept, dtype=torch.float32))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        z = (emb - self.mean) / self.scale
        logits = z @ self.coef.T + self.intercept
        if logits.shape[1] == 1:  # binary scikit-learn models give one column
            logits = torch.cat([-logits, logits], dim=1) / 2
        return logits.log_softmax(-1)


def fit_group_classifier(emb: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> tuple[_FrozenClassifier, list[str]]:
    """The model's view of the groups: logistic regression on standardized frozen embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(emb)
    clf = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(scaler.transform(emb), labels)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return _FrozenClassifier(scaler.mean_, scale, clf.coef_, clf.intercept_), [str(c) for c in clf.classes_]


def attribution_scores(
    model: CellWeave, corpus: CellCorpus, token_ids: np.ndarray, classifier: _FrozenClassifier,
    cells: np.ndarray, group_index: int, *, method: MarkerMethod = "integrated_gradients", n_steps: int = 16,
    n_candidates: int = 100, batch_size: int = 32, seed: int = 0,
) -> np.ndarray:
    """Per-gene score ``(n_columns,)`` for one group, averaged over ``cells`` (see module docstring)."""
    module = model.module.eval()
    v2c = vocab_to_col_map(model, token_ids)
    n = len(token_ids)
    total = torch.zeros(n, dtype=torch.float64)
    n_cells = 0
    if method == "deletion":
        block = corpus.blocks[0].values[cells]
        freq = np.asarray((block > 0).sum(axis=0)).ravel()
        candidates = np.argsort(-freq, kind="stable")[: min(n_candidates, n)]
        candidates = candidates[freq[candidates] > 0]
    for batch in token_batches(model, corpus, cells, batch_size=batch_size, seed=seed):
        ids, vals, mods, pad = batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"]
        col = local_columns(ids, pad, v2c)
        n_cells += ids.shape[0]
        if method == "integrated_gradients":
            grad_sum = torch.zeros_like(vals)
            for step in range(n_steps):
                alpha = (step + 0.5) / n_steps
                v = (vals * alpha).detach().requires_grad_(True)
                with torch.enable_grad():
                    logp = classifier(module.embed_cells(ids, v, mods, pad))[:, group_index].sum()
                    (g,) = torch.autograd.grad(logp, v)
                grad_sum += g
            attr = (vals * grad_sum / n_steps).detach()
            ok = col >= 0
            total.index_add_(0, col[ok].cpu(), attr[ok].double().cpu())
        elif method == "deletion":
            with torch.inference_mode():
                base = classifier(module.embed_cells(ids, vals, mods, pad))[:, group_index]
                for c in candidates:
                    hit = col == int(c)
                    rows = hit.any(1)
                    if not rows.any():
                        continue
                    r = rows.nonzero().squeeze(1)
                    after = classifier(module.embed_cells(ids[r], vals[r], mods[r], pad[r] & ~hit[r]))[:, group_index]
                    total[int(c)] += float((base[r] - after).sum())
        else:
            raise CellWeaveInputError(f"method must be 'integrated_gradients' or 'deletion', not {method!r}.")
    return (total / max(n_cells, 1)).numpy().astype(np.float32)


def rank_genes_groups_record(
    names: dict[str, np.ndarray], scores: dict[str, np.ndarray], params: dict,
    logfoldchanges: dict[str, np.ndarray] | None = None,
) -> dict:
    """The ``uns['rank_genes_groups']`` layout scanpy reads: record arrays by group. ``pvals`` and
    ``pvals_adj`` are NaN (attributions have no test), so ``sc.get.rank_genes_groups_df`` works."""
    groups = list(names)

    def rec(d, dtype):
        return np.rec.fromarrays([np.asarray(d[g], dtype=dtype) for g in groups], names=groups)

    nan = {g: np.full(len(names[g]), np.nan, dtype=np.float32) for g in groups}
    return {
        "params": params,
        "names": rec(names, object),
        "scores": rec(scores, np.float32),
        "logfoldchanges": rec(logfoldchanges or nan, np.float32),
        "pvals": rec(nan, np.float32),
        "pvals_adj": rec(nan, np.float32),
    }


def markers_frame(adata: AnnData, key: str = "cellweave_markers") -> pd.DataFrame:
    """The markers of :func:`markers` as a long table: group, rank (1 = best), gene, score."""
    if key not in adata.uns or "names" not in adata.uns[key]:
        raise CellWeaveInputError(f"No markers in .uns[{key!r}]. Run `cellweave.tl.markers(adata, groupby=...)` first.")
    rec = adata.uns[key]
    names, scores = rec["names"], rec["scores"]
    rows = []
    for g in names.dtype.names:
        for r, (gene, s) in enumerate(zip(names[g], scores[g])):
            rows.append((g, r + 1, str(gene), float(s)))
    return pd.DataFrame(rows, columns=["group", "rank", "gene", "score"])


def markers(
    adata: AnnData,
    *,
    groupby: str,
    model: CellWeave | str | None = None,
    method: MarkerMethod = "integrated_gradients",
    n_cells_per_group: int = 50,
    n_steps: int = 16,
    n_candidates: int = 100,
    layer: str | None = None,
    organism: str | None = None,
    key_added: str = "cellweave_markers",
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Find the genes that most change the model's view of each group.

    Parameters
    ----------
    adata
        AnnData with RNA counts (or log-normalized values) in ``X`` or ``layer``; for data whose
        ``X`` is scaled, pass ``adata.raw.to_adata()`` when ``.raw`` holds log-normalized values.
    groupby
        Column of ``obs`` with the groups (cell types, clusters). Cells with no label are left out.
    model
        A :class:`~cellweave.CellWeave`, a model folder, a shipped model's name, or ``None``.
    method
        ``"integrated_gradients"`` or ``"deletion"`` (see the module docstring).
    n_cells_per_group
        Cells of each group the attributions are averaged over (drawn with ``seed``).
    n_steps
        Integration steps of integrated gradients.
    n_candidates
        Genes tried per group by ``"deletion"`` (the most often expressed in the group).
    layer, organism
        As in :func:`cellweave.tl.embed`.
    key_added
        Key in ``uns`` (scanpy's ``rank_genes_groups`` layout: ``sc.pl.rank_genes_groups(adata,
        key=key_added)`` plots it).
    batch_size, seed, progress
        Batch size, seed of cell sampling, tokenization and the classifier, progress bar.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``.uns[key_added]``
        ``params`` (groupby, method, reference ``"rest"``), ``names``, ``scores``,
        ``logfoldchanges`` (log2 mean expression ratio, group vs rest), ``pvals`` and
        ``pvals_adj`` (NaN: no test): record arrays with one field per group, every gene the
        model knows ranked by decreasing score (the mean attribution to log p(group), in
        log-probability units).
    ``.uns["cellweave"][key_added]``
        model name and SHA-256, method, groups, cells per group, steps, the classifier's
        training accuracy, seed and versions.

    Examples
    --------
    >>> pbmc = cellweave.datasets.load("scanpy_pbmc68k_reduced").raw.to_adata()
    >>> cellweave.tl.markers(pbmc, groupby="cell_type")
    >>> sc.pl.rank_genes_groups(pbmc, key="cellweave_markers")
    """
    from tqdm.auto import tqdm

    data = adata.copy() if copy else adata
    rna = rna_adata(data)
    if groupby not in rna.obs.columns:
        raise CellWeaveInputError(
            f"groupby {groupby!r} is not a column of obs. Pass one of: {', '.join(map(str, rna.obs.columns))}."
        )
    labels = rna.obs[groupby]
    keep = labels.notna().to_numpy()
    lab = labels.astype(str).to_numpy()
    groups = [g for g in pd.unique(lab[keep])]
    if len(groups) < 2:
        raise CellWeaveInputError(f"obs[{groupby!r}] has {len(groups)} group(s); markers need at least 2.")
    model = _resolve(model)
    corpus, tok = prepare_rna(rna, model, layer=layer, organism=organism)
    emb = model.embed_corpus(corpus, seed=seed, progress=progress)
    classifier, classes = fit_group_classifier(emb[keep], lab[keep], seed=seed)
    with torch.no_grad():
        train_acc = float((np.array(classes)[classifier(torch.as_tensor(emb[keep])).argmax(1).numpy()]
                           == lab[keep]).mean())
    col_names = corpus_var_names(rna, model, tok, organism)
    rng = np.random.default_rng(seed)
    names, scores, lfc = {}, {}, {}
    expr = log_normalized(rna, layer)[:, rna.var_names.get_indexer(col_names)].tocsr()
    expr.data = np.expm1(expr.data)
    for g in tqdm(sorted(groups), desc="markers", disable=not progress, leave=False):
        cells = subsample(rna.n_obs, n_cells_per_group, rng, np.flatnonzero(keep & (lab == g)))
        s = attribution_scores(model, corpus, tok, classifier, cells, classes.index(g), method=method,
                               n_steps=n_steps, n_candidates=n_candidates, batch_size=batch_size, seed=seed)
        order = np.argsort(-s, kind="stable")
        names[g], scores[g] = col_names[order], s[order]
        in_g = keep & (lab == g)
        # scanpy's definition: log2 of the ratio of mean expm1 values (+1e-9), group vs rest.
        fc = np.log2((np.asarray(expr[in_g].mean(0)).ravel() + 1e-9)
                     / (np.asarray(expr[keep & ~in_g].mean(0)).ravel() + 1e-9))
        lfc[g] = fc[order]
    params = {"groupby": groupby, "reference": "rest", "method": f"cellweave_{method}", "use_raw": False,
              "layer": layer or "X", "corr_method": "none"}
    rna.uns[key_added] = rank_genes_groups_record(names, scores, params, lfc)
    record: dict[str, Any] = {
        "model": model.name, "model_sha256": model.model_hash, "method": method, "groupby": groupby,
        "groups": sorted(groups), "n_cells_per_group": n_cells_per_group, "n_steps": n_steps,
        "n_candidates": n_candidates, "classifier": "logistic regression (C=1) on standardized frozen embeddings",
        "classifier_train_accuracy": train_acc, "n_genes": int(len(tok)), "seed": seed,
        "versions": environment_versions(),
    }
    uns = dict(rna.uns.get(UNS_KEY, {}))
    uns[key_added] = _h5_safe(record)
    rna.uns[UNS_KEY] = uns
    logger.info("Wrote .uns[%r]: %d groups x %d genes (%s)", key_added, len(groups), len(tok), method)
    return data if copy else None


def corpus_var_names(rna: AnnData, model: CellWeave, tok: np.ndarray, organism: str | None) -> np.ndarray:
    """``var_names`` of the corpus columns (the first var of each vocabulary token)."""
    from ._gene_utils import var_token_ids

    var_tok = var_token_ids(rna, model, organism=organism)
    first: dict[int, int] = {}
    for i, t in enumerate(var_tok):
        if t >= 0 and int(t) not in first:
            first[int(t)] = i
    return np.asarray(rna.var_names[[first[int(t)] for t in tok]]).astype(object)
