"""The architecture's configuration: one small dataclass with named presets (pure Python)."""

from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from cellweave import modalities as _modalities
from cellweave._constants import MASK_GROUPINGS, MIN_DEPTH_FRACTION


def _default_modalities() -> list[str]:
    # A new model gets a modality embedding row for every registered modality, in registration
    # order; the names are saved, so a later registration never moves these rows.
    return list(_modalities.names())


def _default_context() -> dict[str, int]:
    # Tokens per modality and cell, from each modality's spec (the tiny preset's).
    return _modalities.default_context("tiny")


@dataclass
class CellWeaveConfig:
    """Architecture and tokenization of a CellWeave model.

    Cost per cell is set here: the encoder runs over ``sum(context_length[m])`` tokens for the
    modalities a cell carries, so throughput scales with tokens x layers x width^2.
    """

    vocab_size: int = 0
    """Number of feature tokens (genes, proteins, peak bins); set from the vocabulary."""
    n_modalities: int = 0
    """Rows of the modality embedding table: ``len(modalities)`` (0 here means "set from
    ``modalities``"; written to ``config.json`` for readers of older versions)."""
    modalities: list[str] = field(default_factory=_default_modalities)
    """Modality of each modality embedding row, by name: a token of modality ``m`` gets id
    ``modalities.index(m)``. New models list every registered modality (``cellweave.modalities``);
    a ``config.json`` written before names were stored reads as ``cellweave.modalities.LEGACY_ORDER``."""
    d_model: int = 128
    """Width of token and cell embeddings."""
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 256
    """Hidden width of each block's MLP."""
    dropout: float = 0.0
    """Dropout in attention and MLP; small data and short schedules do better without it."""
    context_length: dict[str, int] = field(default_factory=_default_context)
    """Maximum tokens per modality and cell: measured (nonzero) features first, then sampled zeros."""
    zero_fraction: float = 0.1
    """Share of each modality's context given to features measured as zero, so the model learns
    what absence means (scGPT and scFoundation sample zeros the same way)."""
    embed_zeros: Literal["random", "deviation", "none"] = "random"
    """Which zero tokens a cell gets when it is embedded (training always draws them at random):
    a random draw of its absent features, as in training (``"random"``, seeded by the embedding
    seed); the absent features with the highest mean over the cells prepared together, the ones
    furthest below their mean, as ``token_selection="deviation"`` picks the measured ones furthest
    above (``"deviation"``, deterministic); or none (``"none"``: only measured features). Like
    ``pooling`` it only changes what ``embed`` returns, so it can be switched on a trained model.
    ``"random"`` in models saved before it."""
    selection_jitter: float = 0.05
    """When a cell measures more features than the context holds, its highest values are kept;
    in training, uniform noise of this scale (in value units: quantiles by default) is added
    before ranking, so neighbours of the cut-off are seen too."""
    n_cell_targets: int = 128
    """Features outside a cell's input (half measured, half zero) whose values the cell
    embedding must predict during pretraining; 0 turns this objective off."""
    mask_ratio: float = 0.3
    """Fraction of value tokens hidden and predicted during pretraining."""
    mask_grouping: Literal["random", "modules"] = "random"
    """Which tokens are hidden: a uniform draw (``"random"``), or whole co-expression modules of
    the cell's tokens until ``mask_ratio`` is reached (``"modules"``: k-means of the genes' loadings
    on the top principal components of each dataset's 2,000 most variable genes, about 20 genes a
    module; :func:`cellweave.data.feature_modules`), so a hidden value cannot be read off a
    correlated gene left visible (gene programme masking, Richter et al. 2024). ``"random"`` in
    models saved before it."""
    depth_augmentation: float = 0.0
    """Probability that a pretraining cell is read at a lower depth: its counts thinned binomially
    to a share of its molecules drawn log-uniformly in [``depth_augmentation_min`` (default 0.05),
    1], then normalized again, while the count likelihood's targets stay its full counts
    (read-depth-aware pretraining, scFoundation, Hao et al. 2024; :class:`cellweave.data.Tokenizer`).
    Needs ``value_encoding="log1p"``, whose values give back the counts. 0 (the default, and older
    models): every cell at its own depth."""
    depth_augmentation_min: float = MIN_DEPTH_FRACTION
    """With ``depth_augmentation`` > 0, the lowest share of its molecules a thinned cell keeps (the
    share is drawn log-uniformly in [this, 1]). 0.05 (the default, ``MIN_DEPTH_FRACTION``, and that
    of older models) reaches 20x shallower than the corpus; a range matched to the depth of the data
    the model will meet (e.g. 0.3 for a corpus at 2,000 counts a cell and targets at 600) keeps the
    two views of a cell closer."""
    modality_dropout: float = 0.0
    """Probability that a pretraining cell carrying two or more modalities has one of them left
    out of its input, its features becoming cell-head targets (cross-modal masking): what teaches
    the model to predict protein or chromatin from RNA. 0 (the default of older models) never
    drops a modality, and a cell's input then holds every protein it measured, so no protein
    was ever a target."""
    pooling: Literal["cls", "mean", "bag", "cls+bag"] = "cls+bag"
    """How the cell embedding is read off the model: the CLS state, the mean of token states,
    the value-weighted mean of the input feature embeddings ("bag", GenePT-w style), or the
    L2-normalized CLS and bag side by side (2 x d_model). Training always uses the CLS state;
    pooling only changes what ``embed`` returns, so it can be switched on a trained model."""
    value_encoding: Literal["quantile", "log1p"] = "quantile"
    """What a token's value is: its quantile among the cell's measured values in (0, 1]
    (depth- and protocol-invariant, like Geneformer's ranks and scGPT's per-cell bins), or
    log1p of counts per 10k. Either goes through a small MLP rather than being binned."""
    profile_skip: bool = False
    """A linear path from the input values to the cell state, beside the transformer: the cell
    state is the CLS state plus a layer-normalized, value-weighted mean of a second, learned
    embedding of the input features (hidden values left out in training). Every objective that
    reads the cell state (cell head, count likelihood) then trains a linear encoder of the
    profile as well, whose optimum under a reconstruction loss is the profile's principal
    subspace (as for PCA), while the transformer adds what is non-linear. scVI's encoder reads
    the profile directly for the same reason (Lopez et al. 2018). Off in models saved before it."""
    token_selection: Literal["value", "deviation"] = "value"
    """Which measured genes become a cell's tokens when it has more than its context holds: the
    highest values, or the largest deviations above each gene's mean over the cells prepared
    together (the dataset in pretraining; the user's cells in ``embed`` and ``adapt``), which
    passes over genes every cell expresses highly. With ``"deviation"`` a cell's tokens depend on
    the cells embedded with it, as PCA's centring does. ``"value"`` in models saved before it."""
    hvg_tokens: int = 0
    """Draw each cell's tokens (measured and zero) from the ``hvg_tokens`` most highly variable
    features of each modality over the cells prepared together (Seurat flavour, as the PCA
    baseline chooses its genes; scGPT's preprocessing likewise keeps 1,200-3,000 HVGs); 0: from
    all features. Like ``"deviation"`` selection, a cell's tokens then depend on the cells
    embedded with it, and a gene outside the HVGs (e.g. one perturbed in silico) does not enter
    the input. Measured reason (issue 12): with ``hvg_tokens=2000`` the same weights of a 3-epoch
    fixed-table model embed pbmc4k at kNN macro-F1 0.913 instead of 0.787 and Baron at 0.989
    instead of 0.953 (PCA 0.970 / 0.985; panel mean 0.689 instead of 0.664). 0 in models saved
    before it."""
    fixed_feature_tables: bool = False
    """Keep the per-feature tables (the input feature embedding and the profile path's) at their
    random initialization: every gene, protein or peak bin gets a fixed random code, and training
    shapes only the rest of the network. UCE (Rosen et al. 2023) likewise keeps its gene tokens
    fixed (protein-language-model embeddings; here random codes, since none can be loaded here).
    Measured reason (issue 12): the learned tables of a pretrained model cost zero-shot kNN
    macro-F1 (random weights with the pretrained tables embed like the pretrained model, below
    fully random weights), as co-expressed genes share directions and a dataset's own contrasts
    collapse; fixed random codes keep a value-weighted sum of them a random projection of the
    profile, which preserves its distances. Gene-level readouts of the table (``gene-map``,
    ``grn``'s embedding similarity) then carry no learned meaning. ``adapt`` trains the tables
    unless told not to (``train_feature_tables=False``): kept fixed there, they cap what
    adaptation can change. Off in models saved before it."""
    feature_offset: bool = False
    """A learned scalar per feature added to every value the heads predict (token head and cell
    head): the feature's typical value, which then needs neither the cell embedding nor a
    feature table that can hold it. With ``fixed_feature_tables`` the cell head's offset (linear
    in the feature's fixed random code) cannot fit one mean per gene, and the masked-value loss of
    a 3-epoch model stayed above the per-feature-mean baseline (1.87 against 1.49). Off in models
    saved before it."""
    readout_latent: int = 0
    """Width of a latent readout on top of the pooled embedding (:class:`~cellweave.nn.LatentReadout`):
    what ``adapt(method="head")`` trains, a count-likelihood VAE encoder read off the frozen
    embedding, so the adapted model embeds cells as that latent's posterior mean
    (``readout_latent`` wide), or ``pretrain(count_latent=)`` trains with the encoder, a
    variational bottleneck of the count likelihood. 0 (the shipped model, and models saved before
    it): no readout."""
    readout_hidden: int = 128
    """Hidden width of the latent readout (used only when ``readout_latent > 0``)."""
    spatial_neighbors: int = 0
    """Spatial context when embedding data with ``obsm["spatial"]``: the mean embedding of this
    many nearest neighbours in space (within a section) is appended to each cell's embedding.
    It is used automatically (``spatial=None``) only when > 0; ``spatial=True`` asks for it with
    any model (10 neighbours unless set here). Training does not depend on it."""
    preset: str = "custom"

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}).")
        if self.value_encoding not in ("quantile", "log1p"):
            raise ValueError(f"value_encoding must be 'quantile' or 'log1p', not {self.value_encoding!r}.")
        if self.embed_zeros not in ("random", "deviation", "none"):
            raise ValueError(f"embed_zeros must be 'random', 'deviation' or 'none', not {self.embed_zeros!r}.")
        if self.token_selection not in ("value", "deviation"):
            raise ValueError(f"token_selection must be 'value' or 'deviation', not {self.token_selection!r}.")
        if int(self.hvg_tokens) < 0:
            raise ValueError(f"hvg_tokens must be >= 0 (0: tokens from all features), not {self.hvg_tokens!r}.")
        if int(self.readout_latent) < 0 or int(self.readout_hidden) < 1:
            raise ValueError(f"readout_latent must be >= 0 and readout_hidden >= 1, not "
                             f"{self.readout_latent!r} / {self.readout_hidden!r}.")
        if self.mask_grouping not in MASK_GROUPINGS:
            raise ValueError(f"mask_grouping must be one of {MASK_GROUPINGS}, not {self.mask_grouping!r}.")
        if not 0.0 < float(self.depth_augmentation_min) <= 1.0:
            raise ValueError(f"depth_augmentation_min must be a share in (0, 1] (e.g. 0.3), not "
                             f"{self.depth_augmentation_min!r}.")
        if self.depth_augmentation > 0 and self.value_encoding != "log1p":
            raise ValueError("depth_augmentation needs value_encoding='log1p': within-cell quantiles do not give "
                             "back the counts to thin.")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities lists a modality twice: {self.modalities}.")
        if self.n_modalities == 0:
            self.n_modalities = len(self.modalities)
        elif self.n_modalities != len(self.modalities):
            raise ValueError(
                f"n_modalities={self.n_modalities} but modalities names {len(self.modalities)} embedding rows "
                f"({self.modalities}); leave n_modalities out, it follows modalities."
            )
        unknown = set(self.context_length) - set(self.modalities)
        if unknown:
            raise ValueError(
                f"context_length has unknown modalities {sorted(unknown)} (no modality embedding row); "
                f"known: {self.modalities}."
            )

    @property
    def modality_ids(self) -> dict[str, int]:
        """``{modality name: row of the modality embedding}``: the ids tokens of each modality get."""
        return {name: i for i, name in enumerate(self.modalities)}

    def modality_id(self, name: str) -> int:
        """The modality embedding row of ``name``; ``ValueError`` naming the fix when the model has none."""
        ids = self.modality_ids
        if name not in ids:
            raise ValueError(
                f"This model has no embedding for modality {name!r} (it knows {self.modalities}); "
                "pretrain a model with it registered (cellweave.modalities.register) to use it."
            )
        return ids[name]

    @property
    def max_tokens(self) -> int:
        """Upper bound of the sequence length of one cell (all modalities, plus the CLS token)."""
        return sum(self.context_length.values()) + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellWeaveConfig:
        """A configuration from ``to_dict`` output (e.g. a model's ``config.json``).

        Every field is checked for its type and range first, so a hand-edited or corrupted file
        fails with a ``ValueError`` that names the field, not deep inside the constructor.
        Missing fields take their defaults (configurations written by older versions).
        """
        if not isinstance(d, dict):
            raise ValueError(f"A config must be a JSON object of fields, not a {type(d).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"Unknown config fields {sorted(unknown)}; this cellweave knows {sorted(names)} "
                "(a model saved by a newer cellweave needs that version)."
            )
        hints = typing.get_type_hints(cls)
        for name, value in d.items():
            _check_field(name, value, hints[name])
        if "modalities" not in d:
            # Written before modality names were stored: the rows are in the historic order.
            n = d.get("n_modalities", len(_modalities.LEGACY_ORDER))
            if n > len(_modalities.LEGACY_ORDER):
                raise ValueError(
                    f"Config field 'n_modalities' is {n} but the config names no modalities; older configs "
                    f"had at most {len(_modalities.LEGACY_ORDER)} ({list(_modalities.LEGACY_ORDER)})."
                )
            d = {**d, "modalities": list(_modalities.LEGACY_ORDER[:n])}
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> CellWeaveConfig:
        """A named preset (``tiny``, ``small``, ``base``), optionally with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        # Context lengths come from each modality's spec; the preset holds the architecture.
        mods = overrides.get("modalities") or _default_modalities()
        params = {**PRESETS[name], "context_length": _modalities.default_context(name, mods), "preset": name,
                  **overrides}
        return cls(**params)


# Allowed ranges (inclusive lower bound, upper bound or None, whether the upper bound is
# inclusive) of numeric fields; a type check alone would let through e.g. n_layers -1.
_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "vocab_size": (0, None, True),
    "n_modalities": (1, None, True),
    "d_model": (1, None, True),
    "n_layers": (1, None, True),
    "n_heads": (1, None, True),
    "d_ff": (1, None, True),
    "dropout": (0, 1, False),
    "zero_fraction": (0, 1, True),
    "selection_jitter": (0, None, True),
    "n_cell_targets": (0, None, True),
    "mask_ratio": (0, 1, True),
    "modality_dropout": (0, 1, True),
    "depth_augmentation": (0, 1, True),
    "spatial_neighbors": (0, None, True),
}


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        key, val = typing.get_args(hint)
        return f"an object of {key.__name__} -> {val.__name__}"
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return f"a list of {item.__name__}"
    return {int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _is_instance(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type hint (bool is not a number here, as JSON tells them apart)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is dict:
        key, val = typing.get_args(hint)
        return isinstance(value, dict) and all(_is_instance(k, key) and _is_instance(v, val) for k, v in value.items())
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_is_instance(v, item) for v in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


def _check_field(name: str, value: Any, hint: Any) -> None:
    """Raise ``ValueError`` naming ``name`` when ``value`` has the wrong type or is out of range."""
    if not _is_instance(value, hint):
        raise ValueError(f"Config field {name!r} must be {_type_name(hint)}, not {reprlib.repr(value)}.")
    if name == "context_length" and any(v < 0 for v in value.values()):
        raise ValueError(f"Config field 'context_length' must hold token counts >= 0, not {reprlib.repr(value)}.")
    if name in _RANGES:
        low, high, high_inclusive = _RANGES[name]
        too_high = high is not None and (value > high if high_inclusive else value >= high)
        if value < low or too_high:
            upper = "" if high is None else f" and {'<=' if high_inclusive else '<'} {high}"
            raise ValueError(f"Config field {name!r} must be >= {low}{upper}, not {reprlib.repr(value)}.")


#: Architecture of each preset; its context lengths are each modality's ``default_context[preset]``
#: (``cellweave.modalities``).
PRESETS: dict[str, dict[str, Any]] = {
    # CPU: the demo, the shipped default model and tests. ~0.1-0.3 GFLOP per cell.
    "tiny": dict(d_model=128, n_layers=4, n_heads=4, d_ff=256),
    # A workstation GPU.
    "small": dict(d_model=256, n_layers=6, n_heads=8, d_ff=1024),
    # Cluster pretraining.
    "base": dict(d_model=512, n_layers=12, n_heads=8, d_ff=2048),
}
