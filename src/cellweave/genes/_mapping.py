"""Map a modality's features (``adata.var``) to the model's shared vocabulary keys.

A modality's spec (``cellweave.modalities``) names its key scheme and key prefix; this module
holds one mapper per scheme:

- ``gene`` (``rna``, ``gene_activity``; no prefix): the unversioned human Ensembl gene ID
  (``ENSG...``); mouse genes take their human ortholog's ID when Ensembl lists exactly one, else
  their own ``ENSMUSG...`` ID, so human and mouse data share tokens wherever orthology is one-to-one.
- ``protein`` (``prot``): prefix + target, the target gene's key when it is known, else the
  normalized antibody name (``"prot:ENSG00000010610"``).
- ``genomic_bin`` (``atac``): prefix + ``"{genome}:{chrom}:{bin_start}"``, peaks binned on their
  midpoint, so peaks called separately in two datasets meet in one vocabulary.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cellweave import modalities as _modalities
from cellweave._exceptions import CellWeaveInputError

from . import _tables
from ._ids import canonical_organism, infer_organism, normalize_ensembl_id, strip_uniquify_suffix

logger = logging.getLogger(__name__)

REASON_EMPTY = "empty feature name"
REASON_HUMAN_SYMBOL = "symbol not in GENCODE v44 / BioMart"
REASON_MOUSE_SYMBOL = "symbol not in BioMart mouse / Ensembl orthologs"
REASON_NO_ORGANISM = "no gene table for organism"
REASON_ATAC = "peak name not parseable as chrom:start-end"


@dataclass
class FeatureMap:
    """Per-feature vocabulary keys of one modality.

    Attributes
    ----------
    keys
        One key per feature, ``""`` where the feature could not be mapped.
    reasons
        Why a feature is unmapped, ``""`` where it is mapped.
    modality
        A registered modality's name (``cellweave.modalities.names()``).
    organism
        ``"human"``, ``"mouse"``, another name, or ``None`` if unknown.
    names
        The feature names (``var_names``), for reports.
    keyed_by_name
        Proteins whose target gene is unknown and which are keyed on the antibody name only
        (always ``False`` for other modalities).
    """

    keys: np.ndarray
    reasons: np.ndarray
    modality: str
    organism: str | None = None
    names: np.ndarray | None = None
    keyed_by_name: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.keys = np.asarray(self.keys, dtype=object)
        self.reasons = np.asarray(self.reasons, dtype=object)
        if self.names is None:
            self.names = self.keys.copy()
        self.names = np.asarray(self.names, dtype=object)
        if self.keyed_by_name is None:
            self.keyed_by_name = np.zeros(len(self.keys), dtype=bool)
        self.keyed_by_name = np.asarray(self.keyed_by_name, dtype=bool)
        if not (len(self.keys) == len(self.reasons) == len(self.names) == len(self.keyed_by_name)):
            raise ValueError("FeatureMap fields must have one entry per feature.")

    @property
    def n_features(self) -> int:
        return int(len(self.keys))

    @property
    def mapped_mask(self) -> np.ndarray:
        """Boolean mask of features that have a key."""
        return np.array([bool(k) for k in self.keys], dtype=bool)

    @property
    def n_mapped(self) -> int:
        return int(self.mapped_mask.sum())

    @property
    def name_only_features(self) -> list[str]:
        """Names of proteins keyed by antibody name because their target gene is unknown."""
        return [str(n) for n in self.names[self.keyed_by_name]]


# --------------------------------------------------------------------------------------------
# Genes
# --------------------------------------------------------------------------------------------


def _pick(primary: tuple[str, ...], secondary: tuple[str, ...]) -> tuple[str, str]:
    """One ID from the primary table's candidates, the secondary table breaking ties."""
    if len(primary) == 1:
        return primary[0], ""
    both = [i for i in primary if i in secondary]
    if len(both) == 1:
        return both[0], ""
    return "", f"ambiguous symbol ({len(primary)} Ensembl IDs)"


@functools.lru_cache(maxsize=200_000)
def _human_symbol_to_id(symbol: str) -> tuple[str, str]:
    """(ENSG, "") or ("", reason): GENCODE v44, then BioMart; exact case, then case-insensitive."""
    for fold in (False, True):
        s = symbol.upper() if fold else symbol
        gencode = _tables.symbol_index(_tables.GENCODE_HUMAN, fold).get(s, ())
        biomart = _tables.symbol_index(_tables.BIOMART_HUMAN, fold).get(s, ())
        if gencode:
            return _pick(gencode, biomart)
        if biomart:
            return _pick(biomart, ())
    return "", REASON_HUMAN_SYMBOL


@functools.lru_cache(maxsize=200_000)
def _mouse_symbol_to_id(symbol: str) -> tuple[str, str]:
    """(ENSMUSG, "") or ("", reason) from BioMart mouse; exact case, then case-insensitive."""
    for fold in (False, True):
        s = symbol.upper() if fold else symbol
        ids = _tables.symbol_index(_tables.BIOMART_MOUSE, fold).get(s, ())
        if ids:
            return _pick(ids, ())
    return "", REASON_MOUSE_SYMBOL


@functools.lru_cache(maxsize=200_000)
def _human_ortholog(mouse_symbol: str) -> str:
    """The human ENSG of a mouse gene whose Ensembl orthology is one-to-one, else "".

    One-to-many and many-to-one orthologs (H2-K1/H2-D1/... -> HLA genes, Alyref and its
    pseudogene copies -> ALYREF) keep their mouse IDs: merging them would sum distinct mouse genes
    into one token.
    """
    human = _tables.mouse_to_human_symbols().get(mouse_symbol, ())
    if len(human) != 1 or len(_tables.human_to_mouse_symbols().get(human[0], ())) != 1:
        return ""
    return _human_symbol_to_id(human[0])[0]


@functools.lru_cache(maxsize=200_000)
def _mouse_key(mouse_id: str) -> str:
    """Key of a mouse gene: its one human ortholog's ENSG, else its own ENSMUSG."""
    symbol = _tables.id_to_symbol(_tables.BIOMART_MOUSE).get(mouse_id, "")
    human = _human_ortholog(symbol) if symbol else ""
    return human or mouse_id


def _key_from_ensembl(gene_id: str) -> tuple[str, str]:
    if gene_id.startswith("ENSG"):
        return gene_id, ""
    if gene_id.startswith("ENSMUSG"):
        return _mouse_key(gene_id), ""
    prefix = re.match(r"ENS[A-Z]*G", gene_id)
    return "", f"{REASON_NO_ORGANISM} (Ensembl prefix {prefix.group(0) if prefix else gene_id[:7]})"


def _key_from_symbol(symbol: str, organism: str | None) -> tuple[str, str]:
    if organism == "human":
        return _human_symbol_to_id(symbol)
    if organism == "mouse":
        mouse_id, reason = _mouse_symbol_to_id(symbol)
        if mouse_id:
            return _mouse_key(mouse_id), ""
        human = _human_ortholog(symbol)
        return (human, "") if human else ("", reason)
    return "", f"{REASON_NO_ORGANISM} {organism!r}" if organism else f"{REASON_NO_ORGANISM} (organism unknown)"


def _best(results: list[tuple[str, str]]) -> tuple[str, str]:
    """First mapped result; else the most informative reason (ambiguity beats 'not found')."""
    for key, _ in results:
        if key:
            return key, ""
    reasons = [r for _, r in results if r]
    for r in reasons:
        if r.startswith("ambiguous"):
            return "", r
    return "", reasons[0] if reasons else REASON_EMPTY


def _gene_key(name: str, gene_id: str, symbol_col: str, organism: str | None) -> tuple[str, str]:
    for candidate in (gene_id, name):
        ens = normalize_ensembl_id(candidate)
        if ens:
            return _key_from_ensembl(ens)
    if not name and not symbol_col:
        return "", REASON_EMPTY
    results = []
    for symbol in (name, symbol_col):
        if not symbol:
            continue
        results.append(_key_from_symbol(symbol, organism))
        if results[-1][0]:
            return results[-1]
        base = strip_uniquify_suffix(symbol)
        if base != symbol:
            results.append(_key_from_symbol(base, organism))
            if results[-1][0]:
                return results[-1]
    return _best(results)


# --------------------------------------------------------------------------------------------
# Proteins
# --------------------------------------------------------------------------------------------

_AB_PREFIX = re.compile(r"^(anti[-_ ]|ADT[-_])", re.IGNORECASE)
_AB_SUFFIX = re.compile(
    r"[-_. ]+(TotalSeq[-_]?[ABCD]|Total[-_]?[ABCD]|TS[-_]?[ABCD]|ADT|CITE|prot|protein|antibody|Ab)$",
    re.IGNORECASE,
)
_CD_NAME = re.compile(r"^CD\d", re.IGNORECASE)
# Antibodies that tell splice isoforms of one gene apart (PTPRC: CD45RA, CD45RO, CD45RB, B220):
# they keep the isoform in their key so that they are not merged with each other.
_ISOFORM_NAME = re.compile(r"^(CD45R[A-Z0-9]*|B220)$", re.IGNORECASE)


def antibody_aliases(name: str) -> list[str]:
    """Cleaned antibody name and its parenthesized aliases: ``"B7-H1 (PD-L1)"`` -> ``["B7-H1", "PD-L1"]``."""
    s = _AB_PREFIX.sub("", str(name).strip())
    prev = None
    while prev != s:
        prev, s = s, _AB_SUFFIX.sub("", s).strip()
    main = s.split("(", 1)[0].strip()
    inner = re.findall(r"\(([^)]*)\)", s)
    aliases = [main] + [a.strip() for part in inner for a in re.split(r"[,/;]", part)]
    return [a for a in dict.fromkeys(aliases) if a]


def antibody_name_key(name: str) -> str:
    """Upper-case antibody name used when the target gene is unknown (CD names preferred)."""
    aliases = antibody_aliases(name)
    if not aliases:
        return ""
    cd = [a for a in aliases if _CD_NAME.match(a)]
    return re.sub(r"\s+", "_", (cd[0] if cd else aliases[0]).upper())


@functools.lru_cache(maxsize=4)
def _biolegend_index(organism: str) -> dict[str, frozenset[str]]:
    """Antibody alias (upper-case) -> gene keys of BioLegend TotalSeq antibodies for ``organism``."""
    table = _tables.read_table(_tables.BIOLEGEND_TOTALSEQ)
    out: dict[str, set[str]] = defaultdict(set)
    for spec, reactivity, ids in zip(table["specificity"], table["reactivity"], table["ensembl_gene_id"]):
        if organism not in reactivity.lower() or not ids:
            continue
        keys = {_key_from_ensembl(normalize_ensembl_id(i.strip()))[0] for i in ids.split(",")} - {""}
        for alias in antibody_aliases(spec):
            out[alias.upper()] |= keys
    return {k: frozenset(v) for k, v in out.items() if v}


def _protein_key(name: str, gene_id: str, symbol_col: str, organism: str | None) -> tuple[str, str, bool]:
    """The protein's key without the modality's prefix: target gene key (with the isoform, e.g.
    ``ENSG00000081237:CD45RA``), else the normalized antibody name (``by_name``)."""
    key, reason, by_name = _protein_target(name, gene_id, symbol_col, organism)
    if key and not by_name:
        isoform = [a.upper() for a in antibody_aliases(name) if _ISOFORM_NAME.match(a)]
        if isoform:
            key = f"{key}:{isoform[0]}"
    return key, reason, by_name


def _protein_target(name: str, gene_id: str, symbol_col: str, organism: str | None) -> tuple[str, str, bool]:
    ens = normalize_ensembl_id(gene_id)
    if ens:
        key, _ = _key_from_ensembl(ens)
        if key:
            return key, "", False
    org = organism if organism in ("human", "mouse") else "human"
    if symbol_col and "," not in symbol_col:
        key, _ = _key_from_symbol(symbol_col.strip(), org)
        if key:
            return key, "", False
    aliases = antibody_aliases(name)
    index = _biolegend_index(org)
    for alias in aliases:
        keys = index.get(alias.upper(), frozenset())
        if len(keys) == 1:
            return next(iter(keys)), "", False
    for alias in aliases:
        # The antibody name is often the gene symbol itself (CCR7, CD4, CD8a).
        if re.fullmatch(r"[A-Za-z0-9-]+", alias):
            key, _ = _key_from_symbol(alias, org)
            if key:
                return key, "", False
    name_key = antibody_name_key(name)
    if not name_key:
        return "", REASON_EMPTY, False
    return name_key, "", True


# --------------------------------------------------------------------------------------------
# Peaks
# --------------------------------------------------------------------------------------------

_PEAK = re.compile(r"^(.+?)[:_-](\d+)[-_:](\d+)$")
#: Largest peak coordinate taken as a genome position: the longest chromosomes of any organism
#: cellweave knows are far shorter (human chr1 ~2.5e8 bp); a larger number is not a coordinate.
MAX_GENOME_POSITION = 2**32


def normalize_chrom(chrom: str) -> str:
    """UCSC-style chromosome name: ``"1"`` -> ``"chr1"``, ``"MT"`` -> ``"chrM"``."""
    c = str(chrom).strip()
    if c.lower().startswith("chr"):
        c = c[3:]
    if c.upper() in ("M", "MT"):
        c = "M"
    return "chr" + c if c else ""


def _peak_key(name: str, chrom, start, end, genome: str, bin_size: int) -> tuple[str, str]:
    try:
        if chrom is not None and start is not None and end is not None and str(chrom) not in ("", "nan"):
            c, s, e = normalize_chrom(chrom), int(start), int(end)
        else:
            m = _PEAK.match(str(name).strip())
            if not m:
                return "", REASON_ATAC
            c, s, e = normalize_chrom(m.group(1)), int(m.group(2)), int(m.group(3))
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf) from a float column
        return "", REASON_ATAC
    if not c or e < s or s < 0 or e > MAX_GENOME_POSITION:
        return "", REASON_ATAC
    mid = (s + e) // 2
    return f"{genome}:{c}:{(mid // bin_size) * bin_size}", ""  # the modality's prefix is added by the caller


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _column(var: pd.DataFrame, name: str) -> list:
    if name not in var.columns:
        return [""] * len(var)
    col = var[name]
    return ["" if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v) for v in col.tolist()]


def map_features(
    var: pd.DataFrame,
    *,
    modality: str,
    organism: str | None = None,
    genome: str = "GRCh38",
    atac_bin_size: int = 10_000,
    aliases: bool = True,
) -> FeatureMap:
    """Map features to vocabulary keys.

    Parameters
    ----------
    var
        An AnnData ``.var`` table: index = feature names; optional columns ``gene_id`` (Ensembl,
        may be empty or versioned), ``gene_symbol`` (proteins: the antibody's target gene),
        ``chrom``/``start``/``end`` (peaks).
    modality
        A registered modality (``cellweave.modalities.names()``: ``"rna"``, ``"prot"``, ``"atac"``,
        ``"gene_activity"``); its spec names the key scheme and prefix.
    organism
        ``"human"`` or ``"mouse"``; ``None`` infers it with :func:`infer_organism`.
    genome
        Genome build named in ATAC keys; peaks of different builds never share keys.
    atac_bin_size
        Width in bp of the genomic bins peaks are keyed on (by their midpoint).
    aliases
        Human genes only: a symbol that GENCODE v44 and BioMart do not know is looked up among
        NCBI Gene's previous and alias symbols (``FAM132A`` -> C1QTNF12, ``TCEB3`` -> ELOA), used
        when it names exactly one Ensembl gene that no other feature of ``var`` already maps to.
        A model's vocabulary records whether it was built with aliases
        (:attr:`Vocabulary.gene_aliases`); its callers pass that setting so a model always
        tokenizes the way it was trained.

    Returns
    -------
    A :class:`FeatureMap` with one key (``""`` if unmapped) and one reason per feature.

    Examples
    --------
    >>> fmap = map_features(pd.DataFrame(index=["TP53", "NOTAGENE123"]), modality="rna", organism="human")
    >>> list(fmap.keys)
    ['ENSG00000141510', '']
    """
    spec = _modalities.get(modality, exact=True)
    if not isinstance(var, pd.DataFrame):
        raise CellWeaveInputError(f"`var` must be a pandas DataFrame (adata.var), got {type(var).__name__}.")
    if isinstance(atac_bin_size, bool) or not isinstance(atac_bin_size, (int, np.integer)) or atac_bin_size <= 0:
        raise CellWeaveInputError(f"atac_bin_size must be a positive whole number of base pairs, got {atac_bin_size!r}.")
    names = [str(n) for n in var.index]
    org = canonical_organism(organism)
    if org is None and spec.needs_organism:
        org = infer_organism(names, var["gene_id"] if "gene_id" in var.columns else None)
    n = len(names)
    keys = np.empty(n, dtype=object)
    reasons = np.empty(n, dtype=object)
    by_name = np.zeros(n, dtype=bool)

    if spec.feature_keys == "gene":
        ids, symbols = _column(var, "gene_id"), _column(var, "gene_symbol")
        for i in range(n):
            keys[i], reasons[i] = _gene_key(names[i].strip(), ids[i].strip(), symbols[i].strip(), org)
        if aliases and org == "human":
            _map_aliases(keys, reasons, names, symbols)
    elif spec.feature_keys == "protein":
        ids, symbols = _column(var, "gene_id"), _column(var, "gene_symbol")
        for i in range(n):
            keys[i], reasons[i], by_name[i] = _protein_key(names[i], ids[i].strip(), symbols[i].strip(), org)
    else:
        has_cols = all(c in var.columns for c in ("chrom", "start", "end"))
        chroms = var["chrom"].tolist() if has_cols else [None] * n
        starts = var["start"].tolist() if has_cols else [None] * n
        ends = var["end"].tolist() if has_cols else [None] * n
        for i in range(n):
            keys[i], reasons[i] = _peak_key(names[i], chroms[i], starts[i], ends[i], genome, atac_bin_size)
    if spec.key_prefix:
        keys = np.array([spec.key_prefix + k if k else "" for k in keys], dtype=object)
    fmap = FeatureMap(keys, reasons, modality, org, np.asarray(names, dtype=object), by_name)
    logger.debug("%s: %d of %d features mapped", modality, fmap.n_mapped, fmap.n_features)
    return fmap


def _map_aliases(keys: np.ndarray, reasons: np.ndarray, names: list[str], symbols: list[str]) -> None:
    """Fill unmapped human genes from NCBI Gene aliases, in place (see ``map_features``)."""
    # Only symbols no gene table knows: ambiguous ones stay ambiguous (NCBI would pick silently).
    unmapped = np.flatnonzero((keys == "") & (reasons == REASON_HUMAN_SYMBOL))
    if unmapped.size == 0:
        return
    index = _tables.human_alias_index()
    claimed = set(keys[keys != ""])
    for i in unmapped:
        name = names[i].strip()
        for candidate in dict.fromkeys((name, symbols[i].strip(), strip_uniquify_suffix(name))):
            ids = index.get(candidate, ()) if candidate else ()
            if len(ids) == 1 and ids[0] not in claimed:
                keys[i], reasons[i] = ids[0], ""
                claimed.add(ids[0])
                break


def symbol_for(keys) -> np.ndarray:
    """Display names for vocabulary keys.

    ``ENSG`` keys -> human symbol, ``ENSMUSG`` keys -> mouse symbol, ``prot:`` keys -> the target's
    symbol when the target is a gene (with the isoform, e.g. ``"PTPRC (CD45RA)"``), else the
    antibody name; ``atac:`` keys -> the bin
    (``"GRCh38:chr1:100350000"``); ``""`` when unknown. Prefixes and key schemes are the
    registered modalities' (``cellweave.modalities``).
    """
    human = _tables.human_id_to_symbol()
    mouse = _tables.id_to_symbol(_tables.BIOMART_MOUSE)

    def one(key) -> str:
        key = "" if key is None else str(key)
        owner = _modalities.modality_of_key(key)
        scheme = "gene" if owner is None else owner.feature_keys
        if owner is not None:
            key = key[len(owner.key_prefix):]
        if scheme == "protein":
            target, _, isoform = key.partition(":")
            symbol = human.get(target) or mouse.get(target) or target
            return f"{symbol} ({isoform})" if isoform else symbol
        if scheme == "genomic_bin":
            return key
        return human.get(key) or mouse.get(key) or ""

    return np.array([one(k) for k in keys], dtype=object).astype(str)
