"""Bundled gene tables, read lazily and once per process.

Every loader is wrapped in ``functools.lru_cache``: the first call costs about a second of
parsing, later calls are free. The tables are documented in ``resources/PROVENANCE.md``.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from importlib import resources

import pandas as pd

GENCODE_HUMAN = "gencode_v44_human_gene_id2name.tsv.gz"
BIOMART_HUMAN = "biomart_human_gene_ids.tsv.gz"
BIOMART_MOUSE = "biomart_mouse_gene_ids.tsv.gz"
ORTHOLOGS_HUMAN_MOUSE = "orthologs_ensembl105_human_to_mouse.tsv.gz"
BIOLEGEND_TOTALSEQ = "biolegend_totalseq.tsv.gz"
TF_LISTS = "tf_lists_pyscenic.tsv.gz"


@functools.lru_cache(maxsize=None)
def read_table(name: str) -> pd.DataFrame:
    """One bundled table as strings ('' for missing values)."""
    with resources.files("cellweave.genes").joinpath("resources", name).open("rb") as fh:
        table = pd.read_csv(fh, sep="\t", compression="gzip", dtype=str, keep_default_na=False)
    return table


def _symbol_to_ids(table: pd.DataFrame, fold_case: bool) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = defaultdict(list)
    for gid, sym in zip(table["ensembl_gene_id"].to_numpy(), table["gene_symbol"].to_numpy()):
        if not gid or not sym:
            continue
        key = sym.upper() if fold_case else sym
        if gid not in out[key]:
            out[key].append(gid)
    return {k: tuple(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def symbol_index(table_name: str, fold_case: bool = False) -> dict[str, tuple[str, ...]]:
    """Gene symbol (upper-cased when ``fold_case``) -> the Ensembl IDs it names, in table order."""
    return _symbol_to_ids(read_table(table_name), fold_case)


@functools.lru_cache(maxsize=None)
def id_to_symbol(table_name: str) -> dict[str, str]:
    """Ensembl ID -> symbol (first occurrence wins)."""
    table = read_table(table_name)
    out: dict[str, str] = {}
    for gid, sym in zip(table["ensembl_gene_id"].to_numpy(), table["gene_symbol"].to_numpy()):
        if gid and sym and gid not in out:
            out[gid] = sym
    return out


@functools.lru_cache(maxsize=None)
def human_id_to_symbol() -> dict[str, str]:
    """Human ENSG -> symbol, GENCODE v44 first and BioMart for IDs GENCODE lacks."""
    return {**id_to_symbol(BIOMART_HUMAN), **id_to_symbol(GENCODE_HUMAN)}


@functools.lru_cache(maxsize=None)
def mouse_to_human_symbols() -> dict[str, tuple[str, ...]]:
    """Mouse symbol -> human ortholog symbols (Ensembl 105)."""
    table = read_table(ORTHOLOGS_HUMAN_MOUSE)
    out: dict[str, list[str]] = defaultdict(list)
    for hs, mm in zip(table["human_gene_symbol"].to_numpy(), table["mouse_gene_symbol"].to_numpy()):
        if hs and mm and hs not in out[mm]:
            out[mm].append(hs)
    return {k: tuple(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def human_to_mouse_symbols() -> dict[str, tuple[str, ...]]:
    """Human symbol -> mouse ortholog symbols (Ensembl 105)."""
    table = read_table(ORTHOLOGS_HUMAN_MOUSE)
    out: dict[str, list[str]] = defaultdict(list)
    for hs, mm in zip(table["human_gene_symbol"].to_numpy(), table["mouse_gene_symbol"].to_numpy()):
        if hs and mm and mm not in out[hs]:
            out[hs].append(mm)
    return {k: tuple(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def human_symbols() -> frozenset[str]:
    """Every human symbol of GENCODE v44 and BioMart (exact case)."""
    return frozenset(symbol_index(GENCODE_HUMAN)) | frozenset(symbol_index(BIOMART_HUMAN))


@functools.lru_cache(maxsize=None)
def mouse_symbols() -> frozenset[str]:
    """Every mouse symbol of BioMart mouse and the ortholog table (exact case)."""
    return frozenset(symbol_index(BIOMART_MOUSE)) | frozenset(mouse_to_human_symbols())
