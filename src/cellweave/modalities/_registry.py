"""The modality registry: what cellweave knows about each modality, in one place.

Pure Python (no numpy, no anndata, no torch), so every layer may ask it, from ``genes`` up to
``nn`` (context lengths) and the command line (choices). A modality is one module of this package
that builds a :class:`Modality` and passes it to :func:`register`; the package ``__init__``
imports the built-in ones in a fixed order.

The registration order is *not* a model's modality ids: a model stores the names of its modality
embedding rows in ``config.json`` (``CellWeaveConfig.modalities``), so registering a modality
never moves an existing model's rows. Only configs written before names were stored fall back to
:data:`LEGACY_ORDER`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from cellweave._exceptions import CellWeaveInputError

logger = logging.getLogger(__name__)

#: How a modality's features become vocabulary keys; ``cellweave.genes.map_features`` holds one
#: mapper per scheme. ``gene``: unversioned Ensembl gene IDs (symbols and mouse orthologs
#: resolved); ``protein``: the antibody's target gene (else the normalized antibody name);
#: ``genomic_bin``: peaks binned on their midpoint into fixed bins of a named genome build.
KeyScheme = Literal["gene", "protein", "genomic_bin"]
KEY_SCHEMES: tuple[str, ...] = ("gene", "protein", "genomic_bin")

#: How a modality's counts become the model's input values (``cellweave.data.prepare_cells``).
#: ``log1p_cp10k``: counts scaled to 10,000 per cell, then log1p (values already log-normalized are
#: kept); the model's ``value_encoding`` may then turn them into within-cell quantiles.
Normalization = Literal["log1p_cp10k"]
NORMALIZATIONS: tuple[str, ...] = ("log1p_cp10k",)

#: Units of measured values that a fine-tuned predictor learns and returns
#: (``cellweave.tl.impute(..., reference=...)``): ``log1p_cp10k`` as above; ``clr``: centred
#: log-ratio per cell, ``log1p(x) - mean_j log1p(x_j)`` (the CITE-seq convention for ADT counts).
Readout = Literal["log1p_cp10k", "clr"]
READOUTS: tuple[str, ...] = ("log1p_cp10k", "clr")

#: The modality ids of models whose ``config.json`` predates stored modality names: row ``i`` of
#: their modality embedding is ``LEGACY_ORDER[i]``. Frozen: never edit, never append.
LEGACY_ORDER: tuple[str, ...] = ("rna", "prot", "atac", "gene_activity")

#: Modalities found in MuData files that carry labels rather than cell state (CRISPR guides,
#: hashtag oligos): skipped with a log message instead of refused as unknown.
SKIPPED: tuple[str, ...] = ("guide", "hto")

#: The modality a plain AnnData holds, and the one a ``layer=`` argument names the counts of.
PRIMARY = "rna"


@dataclass(frozen=True)
class Modality:
    """Everything cellweave needs to know to read, key, normalize and size one modality.

    Examples
    --------
    >>> from cellweave import modalities
    >>> modalities.get("ADT").name
    'prot'
    >>> modalities.get("prot").default_context["tiny"]
    64
    """

    name: str
    """Canonical name: a MuData modality key, a key of ``config.context_length``, ``--target``."""
    aliases: tuple[str, ...]
    """Other names data is found under (10x feature types, Seurat assays, muon); matched
    case-insensitively and mapped to ``name`` with an info log."""
    feature_keys: KeyScheme
    """How features become vocabulary keys (see :data:`KEY_SCHEMES`)."""
    key_prefix: str
    """Prefix of this modality's vocabulary keys (``"prot:"``); ``""`` shares the unprefixed gene
    keys with every other modality keyed that way (``rna`` and ``gene_activity``: the modality
    embedding tells them apart). A non-empty prefix ends with ``":"`` and belongs to one modality."""
    normalization: Normalization
    """How counts become input values (see :data:`NORMALIZATIONS`)."""
    readout: Readout
    """Units a fine-tuned predictor of this modality learns (see :data:`READOUTS`)."""
    units: str
    """The readout units in words, recorded with predictions."""
    description: str
    """What the modality measures, in a line."""
    default_context: Mapping[str, int] = field(default_factory=dict)
    """Tokens per cell by preset (``tiny``, ``small``, ``base``): measured features first, then
    sampled zeros. Becomes ``config.context_length[name]`` of models built from a preset."""

    def __post_init__(self) -> None:
        def bad(what: str) -> CellWeaveInputError:
            return CellWeaveInputError(f"Modality {self.name!r}: {what}")

        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip().lower():
            raise bad("the name must be a non-empty lower-case string without surrounding spaces.")
        if not isinstance(self.aliases, tuple) or not all(isinstance(a, str) and a.strip() for a in self.aliases):
            raise bad(f"aliases must be a tuple of non-empty strings, not {self.aliases!r}.")
        if self.feature_keys not in KEY_SCHEMES:
            raise bad(f"feature_keys must be one of {KEY_SCHEMES}, not {self.feature_keys!r}.")
        if self.key_prefix and not self.key_prefix.endswith(":"):
            raise bad(f"key_prefix {self.key_prefix!r} must end with ':' (or be '' for shared gene keys).")
        if not self.key_prefix and self.feature_keys != "gene":
            raise bad(f"feature_keys={self.feature_keys!r} needs its own key_prefix (e.g. {self.name + ':'!r}); "
                      "only gene-keyed modalities may share the unprefixed gene keys.")
        if self.normalization not in NORMALIZATIONS:
            raise bad(f"normalization must be one of {NORMALIZATIONS}, not {self.normalization!r}.")
        if self.readout not in READOUTS:
            raise bad(f"readout must be one of {READOUTS}, not {self.readout!r}.")
        context = dict(self.default_context)
        if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for k, v in context.items()):
            raise bad(f"default_context must map preset names to token counts >= 0, not {context!r}.")
        object.__setattr__(self, "default_context", MappingProxyType(context))

    @property
    def needs_organism(self) -> bool:
        """Whether mapping features needs the organism (gene and protein keys do; genomic bins do not)."""
        return self.feature_keys in ("gene", "protein")


_lock = threading.Lock()
_registry: dict[str, Modality] = {}
_by_alias: dict[str, str] = {}


def _lookup_key(name: str) -> str:
    return str(name).strip().lower()


def register(modality: Modality, *, replace: bool = False) -> Modality:
    """Add ``modality`` to the registry (after those already registered) and return it.

    Raises ``CellWeaveInputError`` when its name or an alias is taken by another modality (or is a
    skipped label modality), or its key prefix is another modality's; ``replace=True`` replaces a
    modality of the same name in place.
    """
    if not isinstance(modality, Modality):
        raise CellWeaveInputError(f"register() takes a cellweave.modalities.Modality, not {type(modality).__name__}.")
    with _lock:
        if modality.name in _registry and not replace:
            raise CellWeaveInputError(
                f"A modality named {modality.name!r} is registered already; pass replace=True to replace it."
            )
        spellings = {_lookup_key(modality.name)} | {_lookup_key(a) for a in modality.aliases}
        for spelling in sorted(spellings):
            owner = _by_alias.get(spelling)
            if owner is not None and owner != modality.name:
                raise CellWeaveInputError(
                    f"Modality {modality.name!r}: {spelling!r} already names modality {owner!r}; drop that alias."
                )
            if spelling in SKIPPED:
                raise CellWeaveInputError(
                    f"Modality {modality.name!r}: {spelling!r} is a label modality cellweave skips; choose another name."
                )
        if modality.key_prefix:
            other = next((m.name for m in _registry.values()
                          if m.key_prefix == modality.key_prefix and m.name != modality.name), None)
            if other is not None:
                raise CellWeaveInputError(
                    f"Modality {modality.name!r}: key prefix {modality.key_prefix!r} belongs to {other!r}; "
                    "vocabulary keys of two modalities would collide. Choose another prefix."
                )
        old = _registry.get(modality.name)
        if old is not None:
            for spelling in {_lookup_key(old.name)} | {_lookup_key(a) for a in old.aliases}:
                _by_alias.pop(spelling, None)
        _registry[modality.name] = modality
        for spelling in spellings:
            _by_alias[spelling] = modality.name
    logger.debug("Registered modality %r.", modality.name)
    return modality


def unregister(name: str) -> None:
    """Remove a registered modality (for tests and plugins that registered one themselves)."""
    with _lock:
        modality = _registry.pop(name, None)
        if modality is None:
            raise CellWeaveInputError(f"No modality named {name!r} is registered; registered: {list(_registry)}.")
        for spelling in {_lookup_key(modality.name)} | {_lookup_key(a) for a in modality.aliases}:
            _by_alias.pop(spelling, None)


def lookup(name: str) -> Modality | None:
    """The modality ``name`` is the name or an alias of (case-insensitive), or ``None``."""
    if name in _registry:
        return _registry[name]
    canon = _by_alias.get(_lookup_key(name))
    return _registry[canon] if canon is not None else None


def get(name: str, *, exact: bool = False) -> Modality:
    """The modality named ``name`` or one of its aliases (case-insensitive); ``exact=True``
    accepts the canonical name only (functions whose callers have resolved aliases already).

    Raises ``CellWeaveInputError`` naming the registered modalities when there is none.
    """
    modality = _registry.get(name) if exact else lookup(name)
    if modality is None:
        alias_of = lookup(name) if exact else None
        if alias_of is not None:
            raise CellWeaveInputError(
                f"{name!r} is an alias of modality {alias_of.name!r}; pass the modality's name "
                f"({', '.join(names())}), here {alias_of.name!r}."
            )
        raise CellWeaveInputError(
            f"Unknown modality {name!r}; cellweave knows {', '.join(names())}. "
            "Rename the modality (e.g. 'adt' -> 'prot', 'peaks' -> 'atac') or drop it."
        )
    return modality


def names() -> tuple[str, ...]:
    """Names of the registered modalities, in registration order (built-ins first)."""
    return tuple(_registry)


def registered() -> tuple[Modality, ...]:
    """The registered modalities, in registration order."""
    return tuple(_registry.values())


def modality_of_key(key: str) -> Modality | None:
    """The modality whose ``key_prefix`` a vocabulary key starts with; ``None`` for an unprefixed
    (gene) key, which every gene-keyed modality shares."""
    key = str(key)
    for modality in _registry.values():
        if modality.key_prefix and key.startswith(modality.key_prefix):
            return modality
    return None


def default_context(preset: str, modality_names: tuple[str, ...] | list[str] | None = None) -> dict[str, int]:
    """``{modality: tokens per cell}`` of a preset, for ``modality_names`` (default: all registered).

    Raises ``CellWeaveInputError`` when a modality gives no context for the preset.
    """
    out: dict[str, int] = {}
    for name in names() if modality_names is None else modality_names:
        modality = get(name)
        if preset not in modality.default_context:
            raise CellWeaveInputError(
                f"Modality {modality.name!r} has no default context for preset {preset!r} (it has "
                f"{sorted(modality.default_context)}); add it to its default_context."
            )
        out[modality.name] = modality.default_context[preset]
    return out
