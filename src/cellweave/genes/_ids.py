"""Ensembl ID normalization and organism inference."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

from . import _tables

# ENSG (human), ENSMUSG (mouse) and the other Ensembl species prefixes (ENSDARG, ENSMMUG, ...).
_ENSEMBL_GENE = re.compile(r"^(ENS[A-Z]{0,6}G\d{11})(?:\.\d+)?(?:_PAR_Y)?$")
# scanpy / Seurat make duplicate names unique by appending "-1", ".1", ...
_UNIQUIFY_SUFFIX = re.compile(r"^(.+?)[-.]\d+$")

_ORGANISM_ALIASES = {
    "human": "human", "homo sapiens": "human", "homo_sapiens": "human", "hsapiens": "human", "hs": "human",
    "mouse": "mouse", "mus musculus": "mouse", "mus_musculus": "mouse", "mmusculus": "mouse", "mm": "mouse",
}

#: A symbol-based guess needs at least this fraction of names found in one organism's tables.
MIN_SYMBOL_HIT_RATE = 0.3


def normalize_ensembl_id(x: str) -> str:
    """The unversioned Ensembl gene ID in ``x``, or ``""`` if ``x`` is not one.

    Parameters
    ----------
    x
        A gene identifier such as ``"ENSG00000141510.17"`` or ``"ENSG00000002586.20_PAR_Y"``.

    Returns
    -------
    The stable ID without version and ``_PAR_Y`` suffix; ``""`` for symbols, empty or missing values.

    Examples
    --------
    >>> normalize_ensembl_id("ENSG00000141510.17")
    'ENSG00000141510'
    >>> normalize_ensembl_id("TP53")
    ''
    """
    if not isinstance(x, str):
        return ""
    m = _ENSEMBL_GENE.match(x.strip())
    return m.group(1) if m else ""


def canonical_organism(organism: str | None) -> str | None:
    """``"human"``/``"mouse"`` for the usual spellings; other names are returned lower-cased."""
    if organism is None:
        return None
    name = str(organism).strip().lower()
    return _ORGANISM_ALIASES.get(name, name) or None


def strip_uniquify_suffix(name: str) -> str:
    """``"GENE-1"``/``"GENE.1"`` -> ``"GENE"``; other names unchanged."""
    m = _UNIQUIFY_SUFFIX.match(name)
    return m.group(1) if m else name


def _as_str_list(values: Iterable | None) -> list[str]:
    if values is None:
        return []
    arr = pd.Series(np.asarray(list(values), dtype=object)).fillna("").astype(str)
    return arr.tolist()


def infer_organism(var_names: Iterable[str], gene_ids: Iterable[str] | None = None) -> Literal["human", "mouse"] | None:
    """Guess whether features are human or mouse genes.

    Ensembl IDs decide first (``ENSG`` vs ``ENSMUSG``, in ``gene_ids`` or in the names); without
    them, the fraction of names found among human symbols (GENCODE v44, BioMart) and mouse symbols
    (BioMart, Ensembl orthologs) decides, exact case, since human symbols are upper-case and mouse
    symbols capitalized.

    Parameters
    ----------
    var_names
        Feature names (``adata.var_names``).
    gene_ids
        Optional Ensembl IDs per feature (``adata.var["gene_id"]``); empty values are ignored.

    Returns
    -------
    ``"human"``, ``"mouse"``, or ``None`` when neither matches at least
    ``MIN_SYMBOL_HIT_RATE`` of the names (for example fly genes or protein panels).
    """
    names = _as_str_list(var_names)
    ids = [normalize_ensembl_id(x) for x in _as_str_list(gene_ids) + names]
    n_human = sum(i.startswith("ENSG") for i in ids)
    n_mouse = sum(i.startswith("ENSMUSG") for i in ids)
    if n_human or n_mouse:
        return "human" if n_human >= n_mouse else "mouse"
    names = [n for n in names if n]
    if not names:
        return None
    hs, mm = _tables.human_symbols(), _tables.mouse_symbols()

    def rate(symbols: frozenset[str]) -> float:
        return sum((n in symbols) or (strip_uniquify_suffix(n) in symbols) for n in names) / len(names)

    r_human, r_mouse = rate(hs), rate(mm)
    if max(r_human, r_mouse) < MIN_SYMBOL_HIT_RATE:
        return None
    return "human" if r_human >= r_mouse else "mouse"
