"""Cells -> token sequences: feature ids, values, modality ids; masking for pretraining.

Per cell and modality the tokenizer keeps the measured (nonzero) features, the most highly
expressed first when there are more than the modality's context length, plus a share of features
measured as zero, so cost is proportional to what was measured, not to the panel size.

Why the highest values and not a random sample: on the bundled cell-line mixture, kNN on PCA of
log-normalized expression restricted to 230 genes per cell gives 0.98 accuracy when the 230 are
each cell's top genes and 0.26 when they are a random draw of its nonzero genes (most of which
are single counts shared by every cell type). Training adds noise to the values before ranking
(``jitter``), so the model sees neighbouring genes of the ranking too.

``selection="deviation"`` ranks a cell's measured genes by how far each is above its mean over the
cells prepared with it (the dataset in pretraining, the user's cells in ``embed`` or ``adapt``)
instead of by value, so genes every cell expresses highly (ribosomal, mitochondrial) give way to
the genes that set the cell apart. The values themselves are unchanged. PCA of each cell's 256
tokens so chosen keeps more of the cell type than PCA of its top 256 by value on the panel
(kNN macro-F1 on endocrinogenesis 0.743 vs 0.700; ``benchmarks/token_selection.py``); means over
another corpus do not (0.694; ``--corpus-means``). As in PCA's centring, a cell's tokens then depend on the cells it
was prepared with.

``hvg_tokens=n`` draws a cell's tokens (measured and zero) from the ``n`` most highly variable
features of the cells prepared with it (scanpy's Seurat flavour, the genes the PCA baseline uses),
as scGPT's preprocessing keeps 1,200-3,000 HVGs (Cui et al. 2024). Reason (issue 12): a random
projection of a cell's log-normalized profile restricted to the 2,000 HVGs keeps far more of its
type than one of all genes (kNN macro-F1 on pbmc4k 0.93 against 0.57, Baron 0.94 against 0.79;
PCA 0.97 / 0.99), and so does the model's embedding of HVG-only input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cellweave import modalities as _modalities
from cellweave._constants import MASK_GROUPINGS, MIN_DEPTH_FRACTION

from ._corpus import TARGET_SUM, CellCorpus, ModalityBlock, counts_from_log1p

logger = logging.getLogger(__name__)

#: Token selection rules (``CellWeaveConfig.token_selection``).
SELECTIONS = ("value", "deviation")
#: How an embedded cell's zero tokens are chosen (``CellWeaveConfig.embed_zeros``).
EMBED_ZEROS = ("random", "deviation", "none")
#: Co-expression modules (``mask_grouping="modules"``): genes per module on average, principal
#: components the genes are clustered in, and the share of a gene's standardized variance those
#: components must explain for it to join a module (below it, a gene is masked on its own).
MODULE_SIZE = 20
MODULE_COMPONENTS = 30
MODULE_MIN_COMMUNALITY = 0.1
#: Below this many measured cells a block's gene means are too noisy to rank by: its tokens are
#: then chosen by value (with a warning).
MIN_CELLS_FOR_MEANS = 20


def feature_means(block: ModalityBlock, *, max_cells: int = 10_000, seed: int = 0) -> np.ndarray:
    """Mean value of each column of ``block`` over its measured cells (a seeded sample of
    ``max_cells`` when there are more), computed once and kept on the block. Zeros when fewer
    than :data:`MIN_CELLS_FOR_MEANS` cells were measured, so selection falls back to value."""
    if block.feature_mean is None:
        present = np.flatnonzero(np.asarray(block.present))
        n_cols = block.token_ids.size
        if present.size < MIN_CELLS_FOR_MEANS:
            logger.warning(
                "Only %d cells measure %s: too few for gene means, so their tokens are the highest "
                "values, not the largest deviations. Embed at least %d cells together for the model's "
                "token selection.", present.size, block.modality, MIN_CELLS_FOR_MEANS)
            block.feature_mean = np.zeros(n_cols, dtype=np.float32)
        else:
            if present.size > max_cells:
                present = np.sort(np.random.default_rng(seed).choice(present, max_cells, replace=False))
            X = block.values[present]
            total = np.asarray(X.sum(axis=0), dtype=np.float64).ravel()
            block.feature_mean = (total / present.size).astype(np.float32)
    return block.feature_mean


def variable_columns(block: ModalityBlock, n_top: int, *, max_cells: int = 10_000,
                     seed: int = 0) -> np.ndarray | None:
    """Sorted column indices of the ``n_top`` most highly variable features of ``block`` over its
    measured cells (a seeded sample of ``max_cells`` when there are more; Seurat flavour on the
    block's values, :func:`cellweave.data.hvg_features`), computed once per ``n_top`` and kept on
    the block. ``None`` (use every column) when the block has at most ``n_top`` columns or fewer
    than :data:`MIN_CELLS_FOR_MEANS` measured cells."""
    from ._corpus import hvg_features

    if n_top not in block.variable_columns:
        present = np.flatnonzero(np.asarray(block.present))
        cols = None
        if block.token_ids.size <= n_top:
            pass
        elif present.size < MIN_CELLS_FOR_MEANS:
            logger.warning(
                "Only %d cells measure %s: too few to rank its features by variability, so tokens are "
                "drawn from all of them. Embed at least %d cells together for the model's HVG tokens.",
                present.size, block.modality, MIN_CELLS_FOR_MEANS)
        else:
            if present.size > max_cells:
                present = np.sort(np.random.default_rng(seed).choice(present, max_cells, replace=False))
            cols = np.sort(hvg_features(block.values[present].tocsr(), n_top=n_top)).astype(np.int64)
        block.variable_columns[n_top] = cols
    return block.variable_columns[n_top]


def adopt_token_space(corpus: CellCorpus, reference: CellCorpus, *, hvg_tokens: int = 0) -> None:
    """Tokenize ``corpus`` in ``reference``'s token space: per modality, its feature means (what
    ``selection="deviation"`` ranks by) become the reference's for every feature the reference has
    (its own for the others), and with ``hvg_tokens`` its tokens are drawn from the reference's
    most variable features only, matched by feature id. So a query embedded for label transfer is
    tokenized as its reference is, as PCA fitted on a reference projects a query, instead of each
    side choosing its own HVGs and means (on the cell-line mixture, a Drop-seq query embedded on
    its own beside a CEL-seq2 reference had 60% of its cells called unknown). A block whose features
    share none of the reference's HVGs keeps its own (with a warning)."""
    by_modality = {b.modality: b for b in reference.blocks if b.token_ids.size}
    for block in corpus.blocks:
        ref = by_modality.get(block.modality)
        if ref is None or not block.token_ids.size:
            continue
        order = np.argsort(ref.token_ids, kind="stable")
        pos = np.searchsorted(ref.token_ids, block.token_ids, sorter=order)
        pos = order[np.minimum(pos, order.size - 1)]
        shared = ref.token_ids[pos] == block.token_ids
        mean = feature_means(block).copy()
        mean[shared] = feature_means(ref)[pos[shared]]
        block.feature_mean = mean
        if hvg_tokens:
            cols = variable_columns(ref, int(hvg_tokens))
            ids = ref.token_ids if cols is None else ref.token_ids[cols]
            allowed = np.flatnonzero(np.isin(block.token_ids, ids))
            if allowed.size == 0:
                logger.warning("%s: none of the reference's %d most variable features is measured here; "
                               "tokens are drawn from this data's own.", block.modality, ids.size)
                continue
            block.variable_columns[int(hvg_tokens)] = allowed if allowed.size < block.token_ids.size else None


def feature_modules(block: ModalityBlock, *, n_top: int = 2000, max_cells: int = 5000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Co-expression modules of ``block``'s features, computed once and kept on the block:
    ``(vocabulary ids, sorted; module of each)``, module -1 for a feature in none.

    The ``n_top`` most variable features (:func:`variable_columns`) of a seeded sample of
    ``max_cells`` measured cells are standardized; each gets its loadings on the top
    :data:`MODULE_COMPONENTS` principal components, scaled to unit length, and k-means groups
    them into modules of :data:`MODULE_SIZE` features on average. Features whose standardized
    variance those components explain less than :data:`MODULE_MIN_COMMUNALITY`, and all
    features outside the ``n_top``, are in no module. Too few cells or features: no modules."""
    if block.feature_modules is None:
        order = np.argsort(block.token_ids, kind="stable")
        sorted_ids = np.asarray(block.token_ids)[order]
        modules = np.full(block.token_ids.size, -1, dtype=np.int64)
        present = np.flatnonzero(np.asarray(block.present))
        cols = variable_columns(block, n_top, seed=seed)
        if cols is None:
            cols = np.arange(block.token_ids.size)
        n_modules = cols.size // MODULE_SIZE
        if present.size >= max(MIN_CELLS_FOR_MEANS, MODULE_COMPONENTS) and n_modules >= 2:
            from sklearn.cluster import KMeans

            if present.size > max_cells:
                present = np.sort(np.random.default_rng(seed).choice(present, max_cells, replace=False))
            X = block.values[present][:, cols].toarray().astype(np.float64)
            X -= X.mean(axis=0)
            sd = X.std(axis=0)
            varied = sd > 0
            X[:, varied] /= sd[varied]
            _, S, Vt = np.linalg.svd(X, full_matrices=False)
            k = min(MODULE_COMPONENTS, S.size)
            load = (Vt[:k] * S[:k, None]).T / np.sqrt(present.size)  # correlation of gene and component
            communality = (load ** 2).sum(axis=1)
            keep = varied & (communality >= MODULE_MIN_COMMUNALITY)
            if keep.sum() >= 2 * MODULE_SIZE:
                unit = load[keep] / np.sqrt(communality[keep])[:, None]
                n_modules = max(2, int(keep.sum()) // MODULE_SIZE)
                labels = KMeans(n_modules, n_init=1, random_state=seed).fit_predict(unit)
                modules[cols[keep]] = labels
        block.feature_modules = (sorted_ids, modules[order])
        n_in = int((modules >= 0).sum())
        logger.debug("%s: %d co-expression modules over %d features", block.modality,
                     int(modules.max()) + 1, n_in)
    return block.feature_modules


@dataclass
class Tokenizer:
    """Turns one cell of a :class:`CellCorpus` into a token sequence."""

    context_length: dict[str, int]
    zero_fraction: float = 0.1
    mask_ratio: float = 0.3
    jitter: float = 0.5
    """Scale of the uniform noise added to values before ranking them during training."""
    modality_dropout: float = 0.0
    """Probability, per training cell that carries two or more modalities, that one of them
    (chosen uniformly) is left out of the input and its features become cell-head targets:
    cross-modal masking, which teaches the model to predict a missing modality."""
    modalities: tuple[str, ...] | None = None
    """The model's modality embedding rows by name (``config.modalities``): a token of modality
    ``m`` gets id ``modalities.index(m)``. ``None``: every registered modality, in registration
    order (a new model's rows). Modalities not listed are left out of the input."""
    selection: str = "value"
    """Which measured features fill a cell's context when it has more than fit: the highest
    values (``"value"``) or the largest deviations above each feature's mean over the cells
    prepared together (``"deviation"``; see the module docstring)."""
    hvg_tokens: int = 0
    """Draw a cell's tokens from the ``hvg_tokens`` most highly variable features of each modality
    over the cells prepared together (0: from all; see the module docstring)."""
    mask_grouping: str = "random"
    """``"random"``: hide a uniform draw of ``mask_ratio`` of the tokens. ``"modules"``: hide whole
    co-expression modules of the cell's tokens (:func:`feature_modules`) until ``mask_ratio`` is
    reached, so a hidden value cannot be read off a correlated gene left visible."""

    embed_zeros: str = "random"
    """Zero tokens of a cell tokenized with ``embed=True``: a random draw of its absent features
    (``"random"``, as in training), the absent features with the highest mean over the cells
    prepared together (``"deviation"``), or none (``"none"``)."""
    depth_augmentation: float = 0.0
    """Probability that a training cell is read at a lower depth: each of its counts is thinned
    binomially to a share of its molecules drawn log-uniformly in [``depth_min``, 1], and
    its values are normalized again (see :meth:`tokenize`)."""
    depth_min: float = MIN_DEPTH_FRACTION
    """The lowest share of its molecules a thinned cell keeps (``CellWeaveConfig.depth_augmentation_min``)."""

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, not {self.selection!r}.")
        if self.embed_zeros not in EMBED_ZEROS:
            raise ValueError(f"embed_zeros must be one of {EMBED_ZEROS}, not {self.embed_zeros!r}.")
        if self.mask_grouping not in MASK_GROUPINGS:
            raise ValueError(f"mask_grouping must be one of {MASK_GROUPINGS}, not {self.mask_grouping!r}.")
        if int(self.hvg_tokens) < 0:
            raise ValueError(f"hvg_tokens must be >= 0 (0: all features), not {self.hvg_tokens!r}.")
        if not 0.0 <= float(self.depth_augmentation) <= 1.0:
            raise ValueError(f"depth_augmentation must be a probability in [0, 1], not {self.depth_augmentation!r}.")
        if not 0.0 < float(self.depth_min) <= 1.0:
            raise ValueError(f"depth_min must be a share in (0, 1] (e.g. 0.3), not {self.depth_min!r}.")
        names = _modalities.names() if self.modalities is None else tuple(self.modalities)
        self.modality_ids: dict[str, int] = {name: i for i, name in enumerate(names)}

    @classmethod
    def from_config(cls, config) -> Tokenizer:  # config: CellWeaveConfig (nn layer; not imported here)
        return cls(dict(config.context_length), config.zero_fraction, config.mask_ratio, config.selection_jitter,
                   getattr(config, "modality_dropout", 0.0), tuple(config.modalities),
                   getattr(config, "token_selection", "value"), getattr(config, "hvg_tokens", 0),
                   getattr(config, "mask_grouping", "random"), getattr(config, "embed_zeros", "random"),
                   getattr(config, "depth_augmentation", 0.0),
                   getattr(config, "depth_augmentation_min", MIN_DEPTH_FRACTION))

    def _used(self, modality: str) -> bool:
        """Whether tokens of ``modality`` enter a sequence: it has context and an embedding row."""
        return self.context_length.get(modality, 0) > 0 and modality in self.modality_ids

    def draw_dropped_modality(
        self, corpus: CellCorpus, i: int, rng: np.random.Generator, p: float | None = None
    ) -> str | None:
        """The modality to leave out of cell ``i``'s input (or ``None``), with probability ``p``
        (default ``modality_dropout``) when the cell carries at least two modalities."""
        p = self.modality_dropout if p is None else p
        if p <= 0:
            return None
        present = [b.modality for b in corpus.blocks
                   if b.present[i] and b.token_ids.size and self._used(b.modality)]
        if len(present) < 2 or rng.random() >= p:
            return None
        return present[int(rng.integers(len(present)))]

    def tokenize(
        self,
        corpus: CellCorpus,
        i: int,
        rng: np.random.Generator,
        *,
        train: bool = False,
        n_targets: int = 0,
        drop_modality: str | None = None,
        modalities: Sequence[str] | None = None,
        embed: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """Token ids, values and modality ids of cell ``i``.

        ``train=True`` ranks values with noise of scale ``jitter``; otherwise the noise only
        breaks ties (1e-3), seeded by ``rng``, so equal values are not chosen by column order.

        With ``n_targets > 0`` three more arrays follow: ids, values and modality ids of up to
        ``n_targets`` features of the cell that are *not* in its input (half measured, half zero,
        split across modalities by context share). The cell embedding is trained to predict them,
        so it has to summarize the whole profile, not only the tokens it saw.

        ``drop_modality``: leave that modality out of the input; with ``n_targets > 0`` up to
        ``n_targets`` of its features (half measured, half zero) become targets instead
        (cross-modal masking). ``modalities``: tokenize only these (e.g. ``["rna"]`` to embed a
        CITE-seq cell from its RNA alone). ``embed=True``: the cell is being embedded, so its zero
        tokens follow ``embed_zeros``.

        ``train=True`` with ``depth_augmentation`` > 0: with that probability the cell is first read
        at a lower depth. Each count of a block that holds counts and its cells' library sizes is
        kept with probability ``f``, drawn log-uniformly in [``depth_min``, 1] once per
        cell, and the kept counts are normalized again (log1p of counts per 10k of the thinned
        library). Binomial thinning is how read-depth-aware pretraining (scFoundation, Hao et al.
        2024) makes a cell's input shallower than its targets; here the count likelihood's targets
        stay the cell's full counts, so its state must predict the deeper profile from the thin one
        (the masked values and the cell head's targets are the thinned cell's). scFoundation also
        gives the model both depths as tokens; this model is not told them.
        """
        zeros_rule = self.embed_zeros if embed else "random"
        depth = None
        if train and self.depth_augmentation > 0 and rng.random() < self.depth_augmentation:
            depth = float(np.exp(rng.uniform(np.log(self.depth_min), 0.0)))
        noise = self.jitter if train else 1e-3
        ids, vals, mods, t_ids, t_vals, t_mods = [], [], [], [], [], []
        present = [b for b in corpus.blocks if b.present[i] and b.token_ids.size and self._used(b.modality)
                   and (modalities is None or b.modality in modalities)]
        dropped = [b for b in present if b.modality == drop_modality]
        present = [b for b in present if b.modality != drop_modality]
        if dropped and n_targets:
            t_ids, t_vals, t_mods = _modality_targets(dropped[0], i, n_targets, rng,
                                                      self.modality_ids[dropped[0].modality])
        total_budget = sum(self.context_length[b.modality] for b in present) or 1
        for block in present:
            budget = self.context_length[block.modality]
            start, end = block.values.indptr[i], block.values.indptr[i + 1]
            measured = block.values.indices[start:end]
            measured_v = block.values.data[start:end]
            library_key = f"{block.modality}_library"
            if depth is not None and block.x_kind == "counts" and library_key in corpus.obs:
                kept, thin_v = _thinned(measured_v, float(corpus.obs[library_key].iat[i]), depth, rng)
                if kept.any():  # a cell thinned to nothing keeps its own depth
                    measured, measured_v = measured[kept], thin_v
            allowed = variable_columns(block, int(self.hvg_tokens)) if self.hvg_tokens else None
            if allowed is None:
                n_cols, local = block.token_ids.size, measured
            else:  # only the block's HVGs: measured ones, and absent ones as zero tokens
                pos = np.searchsorted(allowed, measured)  # both sorted: one pass, no per-cell set operation
                keep = allowed[np.minimum(pos, allowed.size - 1)] == measured
                measured, measured_v = measured[keep], measured_v[keep]
                n_cols, local = allowed.size, pos[keep]
            n_zero_avail = n_cols - measured.size
            zero_share = 0.0 if zeros_rule == "none" else self.zero_fraction
            n_zero_target = min(n_zero_avail, int(round(zero_share * budget)))
            n_nz = min(measured.size, budget - n_zero_target) if n_zero_target else min(measured.size, budget)
            rest = np.zeros(0, dtype=np.int64)
            if n_nz < measured.size:
                score = measured_v + noise * rng.random(measured.size, dtype=np.float32)
                if self.selection == "deviation":
                    score -= feature_means(block)[measured]
                order = np.argpartition(-score, n_nz - 1) if n_nz > 0 else np.arange(measured.size)
                pick, rest = order[:n_nz], order[n_nz:]
                cols, v = measured[pick], measured_v[pick]
            else:
                cols, v = measured, measured_v
            n_zero = min(n_zero_avail, budget - n_nz, n_zero_target)
            k_t = int(round(n_targets * budget / total_budget)) if (n_targets and not dropped) else 0
            k_t_zero = min(n_zero_avail - max(n_zero, 0), k_t - min(rest.size, k_t // 2)) if k_t else 0
            n_draw = max(n_zero, 0) + max(k_t_zero, 0)
            if n_draw > 0:
                # Absent = not measured in this cell (not merely left out of the selection above).
                if zeros_rule == "deviation":  # the absent features with the highest means
                    means = feature_means(block)
                    zeros = _highest_absent(local, means if allowed is None else means[allowed], n_draw)
                else:
                    zeros = _sample_absent(local, n_cols, n_draw, rng)
                if allowed is not None:
                    zeros = allowed[zeros]
                z_in, z_t = zeros[:n_zero], zeros[n_zero:]
                cols = np.concatenate([cols, z_in])
                v = np.concatenate([v, np.zeros(z_in.size, dtype=np.float32)])
            else:
                z_t = np.zeros(0, dtype=np.int64)
            ids.append(block.token_ids[cols])
            vals.append(v.astype(np.float32, copy=False))
            mods.append(np.full(cols.size, self.modality_ids[block.modality], dtype=np.int64))
            if k_t:
                k_nz = min(rest.size, k_t - z_t.size)
                nz_t = rng.choice(rest, size=k_nz, replace=False) if k_nz > 0 else rest[:0]
                tc = np.concatenate([measured[nz_t], z_t]).astype(np.int64)
                t_ids.append(block.token_ids[tc])
                t_vals.append(np.concatenate([measured_v[nz_t], np.zeros(z_t.size, dtype=np.float32)]))
                t_mods.append(np.full(tc.size, self.modality_ids[block.modality], dtype=np.int64))
        out = tuple(_cat(x, dt) for x, dt in ((ids, np.int64), (vals, np.float32), (mods, np.int64)))
        if n_targets:
            out += tuple(_cat(x, dt) for x, dt in ((t_ids, np.int64), (t_vals, np.float32), (t_mods, np.int64)))
        return out

    def token_groups(self, corpus: CellCorpus, token_ids: np.ndarray, modality_ids: np.ndarray) -> np.ndarray:
        """Co-expression module of each token (:func:`feature_modules` of its modality's block),
        made distinct across modalities; -1 for a token in no module."""
        groups = np.full(token_ids.size, -1, dtype=np.int64)
        for block in corpus.blocks:
            if block.modality not in self.modality_ids:
                continue
            at = np.flatnonzero(modality_ids == self.modality_ids[block.modality])
            if not at.size:
                continue
            ids, modules = feature_modules(block)
            pos = np.minimum(np.searchsorted(ids, token_ids[at]), ids.size - 1)
            found = ids[pos] == token_ids[at]
            g = np.where(found, modules[pos], -1)
            groups[at] = np.where(g >= 0, g + (self.modality_ids[block.modality] << 32), -1)
        return groups

    def mask(self, n: int, rng: np.random.Generator, groups: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of the values to hide: ``mask_ratio`` of the tokens, at least one.

        With ``groups`` (a label per token, -1 for none) tokens of one group are hidden together:
        groups (and ungrouped tokens, each its own group) are taken in random order until
        ``mask_ratio`` is reached, the last one only in part so the share is exact. This is gene
        programme masking (Richter et al. 2024, "Delineating the effective use of self-supervised
        learning in single-cell genomics"), with modules found from the data's co-expression
        instead of curated programmes."""
        if n == 0:
            return np.zeros(0, dtype=bool)
        k = max(1, int(round(self.mask_ratio * n)))
        m = np.zeros(n, dtype=bool)
        if groups is None:
            m[rng.choice(n, size=k, replace=False)] = True
            return m
        groups = np.asarray(groups)
        units = np.where(groups >= 0, groups, -1 - np.arange(n))  # an ungrouped token is its own unit
        _, unit = np.unique(units, return_inverse=True)
        rank = rng.permutation(int(unit.max()) + 1)[unit]  # the order each token's unit is taken in
        order = np.lexsort((rng.random(n), rank))
        m[order[:k]] = True
        return m


def _modality_targets(
    block, i: int, n_targets: int, rng: np.random.Generator, modality_id: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Targets from a modality left out of the input: every feature when the modality has at
    most ``n_targets``, else ``n_targets`` of them, half measured and half zero where possible."""
    start, end = block.values.indptr[i], block.values.indptr[i + 1]
    measured = block.values.indices[start:end]
    measured_v = block.values.data[start:end]
    n_cols = block.token_ids.size
    if n_cols <= n_targets:
        dense = np.zeros(n_cols, dtype=np.float32)
        dense[measured] = measured_v
        cols, v = np.arange(n_cols), dense
    else:
        n_zero_avail = n_cols - measured.size
        k_nz = min(measured.size, max(n_targets - n_zero_avail, n_targets // 2))
        k_zero = min(n_zero_avail, n_targets - k_nz)
        pick = rng.choice(measured.size, size=k_nz, replace=False) if k_nz else np.zeros(0, dtype=np.int64)
        zeros = _sample_absent(measured, n_cols, k_zero, rng) if k_zero else np.zeros(0, dtype=np.int64)
        cols = np.concatenate([measured[pick], zeros]).astype(np.int64)
        v = np.concatenate([measured_v[pick], np.zeros(zeros.size, dtype=np.float32)])
    return ([block.token_ids[cols]], [v.astype(np.float32, copy=False)],
            [np.full(cols.size, modality_id, dtype=np.int64)])


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def _thinned(values: np.ndarray, library: float, fraction: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One cell's log1p(counts per 10k) ``values`` with each molecule kept with probability
    ``fraction``: ``(which values keep a count, their values normalized to the thinned library)``.

    Counts are recovered as :func:`~cellweave.data.corpus_counts` does; the thinned library is
    the kept counts plus ``fraction`` of the library outside these columns (features outside the
    vocabulary), so the new values are what normalizing the thinned cell would give."""
    counts = counts_from_log1p(values, library)
    kept = rng.binomial(counts.astype(np.int64), fraction)
    thin_library = kept.sum() + max(library - counts.sum(), 0.0) * fraction
    keep = kept > 0
    return keep, np.log1p(kept[keep] * TARGET_SUM / max(thin_library, 1.0)).astype(np.float32)


def _highest_absent(present: np.ndarray, means: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` column indices not in ``present`` with the highest ``means`` (ties by column)."""
    score = means.astype(np.float64, copy=True)
    score[present] = -np.inf
    if k >= score.size:
        return np.argsort(-score, kind="stable")[:k]
    top = np.argpartition(-score, k - 1)[:k]
    return np.sort(top)


def _sample_absent(present: np.ndarray, n_cols: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct column indices in ``[0, n_cols)`` not in ``present``."""
    if n_cols - present.size <= 4 * k or n_cols < 4096:
        absent = np.setdiff1d(np.arange(n_cols), present, assume_unique=True)
        return rng.choice(absent, size=k, replace=False)
    out = np.empty(0, dtype=present.dtype)
    while out.size < k:  # rejection sampling: cheap when most columns are absent
        cand = rng.integers(0, n_cols, size=2 * k)
        cand = np.setdiff1d(np.unique(cand), present)
        out = np.union1d(out, cand)
    return rng.choice(out, size=k, replace=False)


class TokenDataset(torch.utils.data.Dataset):
    """A torch dataset over one or several corpora.

    ``mode="train"``: fresh token and mask samples at every visit. ``mode="eval"``: samples and
    masks fixed by ``(seed, cell)`` so validation losses are comparable between epochs.
    ``mode="embed"``: fixed samples, no mask. ``n_targets``: features outside the input for
    the cell embedding to predict (train and eval modes). ``modality_dropout`` (train and eval
    modes; default: the tokenizer's): probability of leaving one modality of a multimodal cell
    out of the input and predicting it (fixed per cell in eval mode). ``modalities``: tokenize
    only these modalities.
    """

    def __init__(
        self, corpora: Sequence[CellCorpus], tokenizer: Tokenizer, *, mode: str = "train", seed: int = 0,
        n_targets: int = 0, modality_dropout: float | None = None, modalities: Sequence[str] | None = None,
    ):
        if mode not in ("train", "eval", "embed"):
            raise ValueError(f"mode must be 'train', 'eval' or 'embed', not {mode!r}")
        self.corpora = list(corpora)
        self.tokenizer = tokenizer
        self.mode = mode
        self.seed = seed
        self.n_targets = n_targets
        self.modality_dropout = tokenizer.modality_dropout if modality_dropout is None else modality_dropout
        self.modalities = list(modalities) if modalities is not None else None
        self.offsets = np.cumsum([0] + [len(c) for c in self.corpora])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Training samples are drawn from ``(seed, epoch, cell, view)``: no state to save, so a run
        resumed from a checkpoint draws exactly what an uninterrupted one would have."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read_groups(self) -> tuple[np.ndarray, int] | None:
        """``(group of every cell, window)`` when every corpus is read in blocks of neighbouring
        cells (a SOMA experiment streamed by :func:`~cellweave.data.open_soma`), else ``None``:
        what :class:`EpochShuffleSampler` needs to read each block once an epoch."""
        if not self.corpora or not all(hasattr(c, "read_groups") for c in self.corpora):
            return None
        groups, base = [], 0
        for c in self.corpora:
            g = np.asarray(c.read_groups(), dtype=np.int64)
            groups.append(g + base)
            base += int(g.max(initial=-1)) + 1
        return np.concatenate(groups), min(int(c.read_window) for c in self.corpora)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray | int]:
        return self.item(idx)

    def item(self, idx: int, view: int = 0) -> dict[str, np.ndarray | int]:
        """Cell ``idx`` tokenized; in train mode ``view`` > 0 gives further independent samples
        (other tokens, noise and mask) of the same cell and epoch, e.g. for contrastive terms."""
        idx = int(idx)
        k = int(np.searchsorted(self.offsets, idx, side="right") - 1)
        i = idx - int(self.offsets[k])
        rng = (np.random.default_rng([self.seed, self.epoch, idx, view]) if self.mode == "train"
               else np.random.default_rng([self.seed, idx]))
        n_targets = self.n_targets if self.mode != "embed" else 0
        drop = None
        if self.mode != "embed" and self.modality_dropout > 0:
            drop = self.tokenizer.draw_dropped_modality(self.corpora[k], i, rng, self.modality_dropout)
        out = self.tokenizer.tokenize(self.corpora[k], i, rng, train=self.mode == "train", n_targets=n_targets,
                                      drop_modality=drop, modalities=self.modalities, embed=self.mode == "embed")
        item = {"token_ids": out[0], "values": out[1], "modality_ids": out[2], "index": idx}
        if self.mode != "embed":
            groups = (self.tokenizer.token_groups(self.corpora[k], out[0], out[2])
                      if self.tokenizer.mask_grouping == "modules" else None)
            item["value_mask"] = self.tokenizer.mask(out[0].size, rng, groups)
        if n_targets:
            item.update(target_ids=out[3], target_values=out[4], target_modality_ids=out[5])
        return item


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A new permutation of the cells every epoch, a function of ``(seed, epoch)`` only.

    Lightning calls :meth:`set_epoch` at the start of every epoch (as for a ``DistributedSampler``);
    it also sets the epoch of the :class:`TokenDataset`, so a run resumed from a checkpoint sees the
    same order and samples as an uninterrupted one. (A ``DataLoader(shuffle=True, generator=...)``
    keeps its order in the generator's state, which checkpoints do not hold.)

    Cells of corpora read in blocks (:meth:`TokenDataset.read_groups`: a SOMA experiment
    streamed by :func:`~cellweave.data.open_soma`) come block by block in random order, shuffled
    within windows of as many blocks as the corpus caches, as ``tiledbsoma_ml`` shuffles chunks.
    """

    def __init__(self, dataset: TokenDataset | torch.utils.data.Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):  # a TokenDataset, or a wrapper that forwards to one
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        # Corpora read in blocks (SOMA): blocks in random order, cells shuffled within windows of
        # blocks that fit the corpus' block cache, so a block is read once an epoch, not once a cell.
        tokens = getattr(self.dataset, "tokens", self.dataset)  # a wrapper such as CountTokenDataset
        found = tokens.read_groups() if hasattr(tokens, "read_groups") else None
        if found is None or len(found[0]) != len(self.dataset):
            return iter(rng.permutation(len(self.dataset)).tolist())
        groups, window = found
        order = np.argsort(groups, kind="stable")
        bounds = np.flatnonzero(np.diff(groups[order])) + 1
        cells = np.split(order, bounds)
        if len(cells) <= window:  # every block fits the cache: one window, the plain permutation
            return iter(rng.permutation(len(self.dataset)).tolist())
        blocks = rng.permutation(len(cells))
        out = [rng.permutation(np.concatenate([cells[b] for b in blocks[w: w + window]]))
               for w in range(0, len(blocks), max(1, window))]
        return iter(np.concatenate(out).tolist() if out else [])


def _pad(items: list[dict], fields: dict[str, torch.dtype], length_key: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pad the ``fields`` of every item to the longest ``length_key``; also return the mask of real entries."""
    b = len(items)
    n = max(1, max(it[length_key].size for it in items))
    out = {k: torch.zeros(b, n, dtype=dt) for k, dt in fields.items()}
    mask = torch.zeros(b, n, dtype=torch.bool)
    for j, it in enumerate(items):
        L = it[length_key].size
        for k in fields:
            out[k][j, :L] = torch.from_numpy(it[k])
        mask[j, :L] = True
    return out, mask


def collate_tokens(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of tokenized cells to the longest one (targets to the most targets)."""
    fields = {"token_ids": torch.long, "values": torch.float32, "modality_ids": torch.long}
    if "value_mask" in items[0]:
        fields["value_mask"] = torch.bool
    out, out["padding_mask"] = _pad(items, fields, "token_ids")
    out["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
    if "target_ids" in items[0]:
        targets = {"target_ids": torch.long, "target_values": torch.float32, "target_modality_ids": torch.long}
        padded, out["target_mask"] = _pad(items, targets, "target_ids")
        out.update(padded)
    return out
