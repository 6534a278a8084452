"""Modalities cellweave knows: one module per modality, each registering a :class:`Modality`.

Everything else (validation aliases, feature keys, normalization, context lengths, command-line
choices) asks this registry. The built-ins are imported here in a fixed order; a model's modality
ids come from its own ``config.json``, never from this order.
"""

# Registration order: the built-ins first, in this order (a new model's default modality rows).
from .rna import RNA
from .prot import PROT
from .atac import ATAC
from .gene_activity import GENE_ACTIVITY
from ._registry import (
    KEY_SCHEMES,
    LEGACY_ORDER,
    NORMALIZATIONS,
    PRIMARY,
    READOUTS,
    SKIPPED,
    Modality,
    default_context,
    get,
    lookup,
    modality_of_key,
    names,
    register,
    registered,
    unregister,
)

__all__ = [
    "ATAC",
    "GENE_ACTIVITY",
    "PROT",
    "RNA",
    "KEY_SCHEMES",
    "LEGACY_ORDER",
    "NORMALIZATIONS",
    "PRIMARY",
    "READOUTS",
    "SKIPPED",
    "Modality",
    "default_context",
    "get",
    "lookup",
    "modality_of_key",
    "names",
    "register",
    "registered",
    "unregister",
]
