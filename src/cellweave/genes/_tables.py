"""Gene tables, read lazily and once per process.

Tables are bundled only where their source allows it: GENCODE v44 names and the Ensembl 105
human-mouse orthologs come from the celltypist wheel on PyPI (MIT), and the gene sets are our own
(``resources/PROVENANCE.md``). Tables that another repository publishes (the BioMart exports, the
pySCENIC TF lists, the BioLegend TotalSeq catalogue) are referenced, not copied: they are read from
the data mirror (``$CELLWEAVE_DATA_DIR/resources/``), then the user cache, then downloaded from
their pinned source and converted (:mod:`cellweave._fetch`). Every loader is wrapped in
``functools.lru_cache``: the first call costs about a second of parsing, later calls are free.
"""

from __future__ import annotations

import functools
import gzip
import io
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from cellweave import _fetch
from cellweave._exceptions import CellWeaveDataError
from cellweave._fetch import SourceFile

logger = logging.getLogger(__name__)

GENCODE_HUMAN = "gencode_v44_human_gene_id2name.tsv.gz"
BIOMART_HUMAN = "biomart_human_gene_ids.tsv.gz"
BIOMART_MOUSE = "biomart_mouse_gene_ids.tsv.gz"
ORTHOLOGS_HUMAN_MOUSE = "orthologs_ensembl105_human_to_mouse.tsv.gz"
BIOLEGEND_TOTALSEQ = "biolegend_totalseq.tsv.gz"
TF_LISTS = "tf_lists_pyscenic.tsv.gz"
GENE_ALIASES_HUMAN = "gene_aliases_human_ncbi.tsv.gz"

_SCVELO_NB = "https://raw.githubusercontent.com/theislab/scvelo_notebooks/2425e7fa35871a47d5b5d7d8e52c5a12c59b9395"
_PYSCENIC = "https://raw.githubusercontent.com/aertslab/pySCENIC/06bafba412792f6efa5a552a23bb221cc3bdea1b"
#: pySCENIC list name -> organism.
TF_SOURCES = {"hs_hgnc_tfs": "human", "hs_hgnc_curated_tfs": "human", "lambert2018": "human",
              "mm_mgi_tfs": "mouse", "allTFs_dmel": "fly"}


@dataclass(frozen=True)
class GeneTable:
    """One gene table: what it holds, its licence, and where it comes from.

    ``bundled`` tables ship in the wheel (``genes/resources``); the others are resolved through
    the mirror, the cache or their pinned ``sources`` (converted by ``build``).
    """

    filename: str
    description: str
    licence: str
    bundled: bool
    sources: tuple[SourceFile, ...] = ()
    build: Callable[[dict[str, Path], Path], None] | None = None


def _write_tsv_gz(table: pd.DataFrame, out: Path) -> None:
    with gzip.open(out, "wt", encoding="utf-8") as fh:
        table.to_csv(fh, sep="\t", index=False)


def _find_column(columns: list[str], candidates: tuple[str, ...], what: str) -> str:
    for name in candidates:
        for col in columns:
            if col.strip().lower() == name.lower():
                return col
    raise CellWeaveDataError(f"{what}: none of the columns {candidates} in the downloaded table (it has {columns}).")


def _build_biomart(source: str) -> Callable[[dict[str, Path], Path], None]:
    """BioMart export (tab- or comma-separated, header row) -> ensembl_gene_id, gene_symbol."""

    def build(paths: dict[str, Path], out: Path) -> None:
        raw = pd.read_csv(paths[source], sep=None, engine="python", dtype=str, keep_default_na=False)
        gid = _find_column(list(raw.columns), ("Gene stable ID", "Ensembl gene ID", "ensembl_gene_id"), source)
        sym = _find_column(list(raw.columns), ("Gene name", "Approved symbol", "gene_symbol", "external_gene_name"),
                           source)
        table = pd.DataFrame({"ensembl_gene_id": raw[gid].str.split(".").str[0].str.strip(),
                              "gene_symbol": raw[sym].str.strip()})
        _write_tsv_gz(table[table["ensembl_gene_id"] != ""].drop_duplicates(), out)

    return build


def _build_tf_lists(paths: dict[str, Path], out: Path) -> None:
    """pySCENIC ``resources/*.txt`` (one symbol a line) -> the long table, Ensembl IDs added from
    GENCODE v44 / BioMart (human lists) or BioMart mouse (mouse list); '' where unmatched."""
    human = {**{k: v[0] for k, v in symbol_index(BIOMART_HUMAN).items()},
             **{k: v[0] for k, v in symbol_index(GENCODE_HUMAN).items()}}
    mouse = {k: v[0] for k, v in symbol_index(BIOMART_MOUSE).items()}
    rows = []
    for list_name, organism in TF_SOURCES.items():
        ids = human if organism == "human" else mouse if organism == "mouse" else {}
        for line in Path(paths[f"{list_name}.txt"]).read_text().splitlines():
            symbol = line.strip()
            if symbol:
                rows.append((list_name, organism, symbol, ids.get(symbol, "")))
    _write_tsv_gz(pd.DataFrame(rows, columns=["list_name", "organism", "gene_symbol", "ensembl_gene_id"]), out)


def _build_biolegend(paths: dict[str, Path], out: Path) -> None:
    """BioLegend TotalSeq CSV -> the documented columns; Excel quoting (="...") removed and
    gene_symbol added from the Ensembl IDs."""
    text = Path(paths["totalseq.csv"]).read_text(encoding="utf-8", errors="replace")
    raw = pd.read_csv(io.StringIO(text.replace('="', '"')), dtype=str, keep_default_na=False)
    raw.columns = [c.strip().lower().replace(" ", "_").replace("\u2122", "") for c in raw.columns]
    names = human_id_to_symbol() | id_to_symbol(BIOMART_MOUSE)
    ids = raw.get("ensembl_gene_id", pd.Series([""] * len(raw)))
    raw["gene_symbol"] = [",".join(names.get(i.strip(), "") for i in v.split(",")) if v else "" for v in ids]
    _write_tsv_gz(raw, out)


#: org.Hs.eg.db (Bioconductor 3.16; NCBI Gene 2022-09-12) as Debian packages it: the SQLite
#: database whose ``alias`` and ``ensembl`` tables give previous and alias symbols per gene.
ORGDB_HUMAN = SourceFile("debian:r-bioc-org.hs.eg.db=3.16.0-1",
                         "0f61810d35b858915b1a9787d8dcab08b7e164c14c20a9e1d86eb9837308c2c2",
                         "r-bioc-org.hs.eg.db_3.16.0-1_all.deb")


def _deb_member(deb: Path, suffix: str) -> bytes:
    """The bytes of the file ending in ``suffix`` inside a Debian package (an ar archive holding
    ``data.tar.*``), read without dpkg."""
    import tarfile

    with open(deb, "rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise CellWeaveDataError(f"{deb} is not a Debian package (no ar header).")
        while header := fh.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
            body = fh.read(size)
            fh.read(size % 2)  # members are 2-byte aligned
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                    for member in tar.getmembers():
                        if member.isfile() and member.name.endswith(suffix):
                            extracted = tar.extractfile(member)
                            assert extracted is not None
                            return extracted.read()
    raise CellWeaveDataError(f"{deb} holds no file ending in {suffix}.")


def _build_aliases_from_orgdb(paths: dict[str, Path], out: Path) -> None:
    """alias_symbol, ensembl_gene_id: every NCBI Gene symbol and alias (previous HGNC symbols
    included) of a human gene with an Ensembl ID, from org.Hs.eg.db's SQLite database."""
    import sqlite3
    import tempfile

    blob = _deb_member(paths[ORGDB_HUMAN.filename], "org.Hs.eg.sqlite")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "org.Hs.eg.sqlite"
        db.write_bytes(blob)
        del blob
        with sqlite3.connect(db) as con:
            rows = con.execute(
                "SELECT DISTINCT a.alias_symbol, e.ensembl_id FROM alias a JOIN ensembl e ON a._id = e._id "
                "UNION SELECT g.symbol, e.ensembl_id FROM gene_info g JOIN ensembl e ON g._id = e._id "
                "ORDER BY 1, 2"
            ).fetchall()
    _write_tsv_gz(pd.DataFrame(rows, columns=["alias_symbol", "ensembl_gene_id"]), out)


TABLES: dict[str, GeneTable] = {t.filename: t for t in (
    GeneTable(GENCODE_HUMAN, "human Ensembl ID -> GENCODE v44 name", "MIT (celltypist wheel); GENCODE data free",
              bundled=True),
    GeneTable(ORTHOLOGS_HUMAN_MOUSE, "Ensembl 105 human-mouse ortholog symbols",
              "MIT (celltypist wheel); Ensembl data free", bundled=True),
    GeneTable(BIOMART_HUMAN, "Ensembl BioMart human export (ID -> symbol)", "none stated; Ensembl data free",
              bundled=False, sources=(SourceFile(f"{_SCVELO_NB}/data/biomart/mart_export_human.txt", None,
                                                 "mart_export_human.txt"),),
              build=_build_biomart("mart_export_human.txt")),
    GeneTable(BIOMART_MOUSE, "Ensembl BioMart mouse export (ID -> symbol)", "none stated; Ensembl data free",
              bundled=False, sources=(SourceFile(f"{_SCVELO_NB}/data/biomart/mart_export_mouse.txt", None,
                                                 "mart_export_mouse.txt"),),
              build=_build_biomart("mart_export_mouse.txt")),
    GeneTable(TF_LISTS, "pySCENIC transcription-factor lists", "GPL-3 (pySCENIC)", bundled=False,
              sources=tuple(SourceFile(f"{_PYSCENIC}/resources/{n}.txt", None, f"{n}.txt") for n in TF_SOURCES),
              build=_build_tf_lists),
    GeneTable(BIOLEGEND_TOTALSEQ, "BioLegend TotalSeq antibody catalogue (antibody -> gene)",
              "none stated (BioLegend catalogue)", bundled=False,
              sources=(SourceFile(f"{_SCVELO_NB}/data/biolegend/totalseq.csv", None, "totalseq.csv"),),
              build=_build_biolegend),
    GeneTable(GENE_ALIASES_HUMAN, "NCBI Gene symbols and aliases of human genes with an Ensembl ID "
              "(org.Hs.eg.db 3.16)", "Artistic-2.0 (org.Hs.eg.db); NCBI Gene data public domain", bundled=False,
              sources=(ORGDB_HUMAN,), build=_build_aliases_from_orgdb),
)}


def table_path(name: str) -> Path:
    """Local path of a gene table (bundled, mirror, cache, or downloaded and converted).

    Raises
    ------
    CellWeaveDataError
        The table is not bundled, not in the mirror or the cache, and cannot be downloaded; the
        message names the table, its source and ``CELLWEAVE_DATA_DIR``.
    """
    spec = TABLES[name]
    if spec.bundled:
        return Path(str(resources.files("cellweave.genes").joinpath("resources", name)))
    return _fetch.obtain(f"resources/{name}", what=f"Gene table {name} ({spec.description})",
                         sources=spec.sources, build=spec.build)


@functools.lru_cache(maxsize=None)
def read_table(name: str) -> pd.DataFrame:
    """One gene table as strings ('' for missing values)."""
    with open(table_path(name), "rb") as fh:
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


def _one_to_many(table_name: str, key_col: str, value_col: str) -> dict[str, tuple[str, ...]]:
    """``key_col`` value -> the distinct non-empty ``value_col`` values it is listed with, in table order."""
    table = read_table(table_name)
    out: dict[str, list[str]] = defaultdict(list)
    for key, value in zip(table[key_col].to_numpy(), table[value_col].to_numpy()):
        if key and value and value not in out[key]:
            out[key].append(value)
    return {k: tuple(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def mouse_to_human_symbols() -> dict[str, tuple[str, ...]]:
    """Mouse symbol -> human ortholog symbols (Ensembl 105)."""
    return _one_to_many(ORTHOLOGS_HUMAN_MOUSE, "mouse_gene_symbol", "human_gene_symbol")


@functools.lru_cache(maxsize=None)
def human_to_mouse_symbols() -> dict[str, tuple[str, ...]]:
    """Human symbol -> mouse ortholog symbols (Ensembl 105)."""
    return _one_to_many(ORTHOLOGS_HUMAN_MOUSE, "human_gene_symbol", "mouse_gene_symbol")


def aliases_available() -> bool:
    """Whether the NCBI alias table can be had (mirror, cache or download); logs why not."""
    try:
        table_path(GENE_ALIASES_HUMAN)
    except CellWeaveDataError as err:
        logger.warning("No NCBI gene aliases (old human symbols stay unmapped): %s", err)
        return False
    return True


@functools.lru_cache(maxsize=None)
def human_alias_index() -> dict[str, tuple[str, ...]]:
    """Human symbol or alias (exact case) -> the Ensembl IDs NCBI Gene lists for it."""
    return _one_to_many(GENE_ALIASES_HUMAN, "alias_symbol", "ensembl_gene_id")


@functools.lru_cache(maxsize=None)
def human_symbols() -> frozenset[str]:
    """Every human symbol of GENCODE v44 and BioMart (exact case)."""
    return frozenset(symbol_index(GENCODE_HUMAN)) | frozenset(symbol_index(BIOMART_HUMAN))


@functools.lru_cache(maxsize=None)
def mouse_symbols() -> frozenset[str]:
    """Every mouse symbol of BioMart mouse and the ortholog table (exact case)."""
    return frozenset(symbol_index(BIOMART_MOUSE)) | frozenset(mouse_to_human_symbols())
