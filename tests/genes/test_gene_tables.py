"""Gene tables: bundled vs referenced, resolution errors, converters, NCBI aliases in the mapper."""

from __future__ import annotations

import gzip
import io
import sqlite3
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from cellweave._exceptions import CellWeaveDataError
from cellweave.genes import GENE_TABLES, Vocabulary, _mapping, _tables, map_features


@pytest.fixture
def no_tables(monkeypatch, tmp_path):
    """No mirror, an empty cache, no network, no apt-get, and no table parsed earlier in the process."""
    import pooch

    monkeypatch.delenv("CELLWEAVE_DATA_DIR", raising=False)
    monkeypatch.setenv("CELLWEAVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(pooch, "retrieve", lambda url, **kw: (_ for _ in ()).throw(ConnectionError("offline")))
    monkeypatch.setattr("shutil.which", lambda name: None)
    caches = (_tables.read_table, _tables.symbol_index, _tables.id_to_symbol, _mapping._mouse_symbol_to_id)
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


def test_bundled_and_referenced_tables() -> None:
    bundled = {n for n, t in GENE_TABLES.items() if t.bundled}
    assert bundled == {_tables.GENCODE_HUMAN, _tables.ORTHOLOGS_HUMAN_MOUSE}
    for name, table in GENE_TABLES.items():
        if not table.bundled:
            assert table.sources and table.build is not None, name
            assert all(s.url.startswith(("https://", "debian:")) for s in table.sources), name
    # the bundled ones are read from the wheel, with no mirror or network
    assert _tables.table_path(_tables.GENCODE_HUMAN).is_file()


def test_missing_table_names_itself_its_source_and_the_variable(no_tables) -> None:
    with pytest.raises(CellWeaveDataError) as err:
        _tables.read_table(_tables.BIOMART_MOUSE)
    msg = str(err.value)
    assert "biomart_mouse_gene_ids" in msg and "CELLWEAVE_DATA_DIR" in msg
    assert "theislab/scvelo_notebooks/2425e7fa" in msg
    with pytest.raises(CellWeaveDataError, match="no apt-get.*CELLWEAVE_DATA_DIR"):
        _tables.read_table(_tables.GENE_ALIASES_HUMAN)
    # a mouse dataset cannot be mapped without the mouse table: the same clear error
    with pytest.raises(CellWeaveDataError, match="biomart_mouse_gene_ids"):
        map_features(pd.DataFrame(index=["Gad2", "Slc32a1"]), modality="rna", organism="mouse")


def test_biomart_converter_reads_a_biomart_export(tmp_path) -> None:
    src = tmp_path / "mart_export_mouse.txt"
    src.write_text("Gene stable ID\tGene name\nENSMUSG00000026787.5\tGad2\nENSMUSG00000037771\tSlc32a1\n\tnone\n")
    out = tmp_path / "t.tsv.gz"
    _tables._build_biomart("mart_export_mouse.txt")({"mart_export_mouse.txt": src}, out)
    table = pd.read_csv(out, sep="\t", dtype=str)
    assert table.to_dict("list") == {"ensembl_gene_id": ["ENSMUSG00000026787", "ENSMUSG00000037771"],
                                     "gene_symbol": ["Gad2", "Slc32a1"]}
    src.write_text("id,name\n1,2\n")
    with pytest.raises(CellWeaveDataError, match="none of the columns"):
        _tables._build_biomart("mart_export_mouse.txt")({"mart_export_mouse.txt": src}, out)


def _fake_orgdb_deb(path: Path) -> None:
    """A Debian package laid out like r-bioc-org.hs.eg.db, holding a tiny org.Hs.eg.sqlite."""
    db = path.parent / "org.Hs.eg.sqlite"
    with sqlite3.connect(db) as con:
        con.executescript(
            "CREATE TABLE alias (_id INTEGER, alias_symbol TEXT);"
            "CREATE TABLE ensembl (_id INTEGER, ensembl_id TEXT);"
            "CREATE TABLE gene_info (_id INTEGER, gene_name TEXT, symbol TEXT);"
            "INSERT INTO alias VALUES (1, 'FAM132A'), (1, 'C1QTNF12'), (2, 'TCEB3');"
            "INSERT INTO ensembl VALUES (1, 'ENSG00000184163'), (2, 'ENSG00000154957');"
            "INSERT INTO gene_info VALUES (1, 'C1q tumor necrosis factor related protein 12', 'C1QTNF12'),"
            " (2, 'elongin A', 'ELOA');"
        )
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        tar.add(db, arcname="./usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite")
    members = [(b"debian-binary", b"2.0\n"), (b"data.tar.xz", data.getvalue())]
    with open(path, "wb") as fh:
        fh.write(b"!<arch>\n")
        for name, body in members:
            fh.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                     + str(len(body)).encode().ljust(10) + b"`\n")
            fh.write(body + (b"\n" if len(body) % 2 else b""))


def test_alias_table_converter_reads_the_debian_package(tmp_path) -> None:
    deb = tmp_path / _tables.ORGDB_HUMAN.filename
    _fake_orgdb_deb(deb)
    out = tmp_path / "aliases.tsv.gz"
    _tables._build_aliases_from_orgdb({deb.name: deb}, out)
    with gzip.open(out, "rt") as fh:
        table = pd.read_csv(fh, sep="\t", dtype=str)
    assert set(map(tuple, table.to_numpy())) == {
        ("FAM132A", "ENSG00000184163"), ("C1QTNF12", "ENSG00000184163"), ("TCEB3", "ENSG00000154957"),
        ("ELOA", "ENSG00000154957"),
    }


@pytest.fixture
def aliases(monkeypatch):
    index = {"FAM132A": ("ENSG00000184163",), "TCEB3": ("ENSG00000011007",), "TCEB3B": ("ENSG00000011007",),
             "AMBIG1": ("ENSG00000000001", "ENSG00000000002"), "CD4": ("ENSG00000010610",)}
    monkeypatch.setattr(_tables, "human_alias_index", lambda: index)


def test_aliases_map_old_symbols_once(aliases) -> None:
    var = pd.DataFrame(index=["FAM132A", "TCEB3", "TCEB3B", "AMBIG1", "CD4", "NOTAGENE123", "ELOA"])
    off = map_features(var, modality="rna", organism="human", aliases=False)
    on = map_features(var, modality="rna", organism="human", aliases=True)
    assert off.keys.tolist()[:4] == ["", "", "", ""]
    keys = dict(zip(var.index, on.keys))
    assert keys["FAM132A"] == "ENSG00000184163"
    # ELOA (the current name) is mapped by GENCODE first; its old names may not claim it again
    assert keys["ELOA"] == "ENSG00000011007" and keys["TCEB3"] == "" and keys["TCEB3B"] == ""
    assert keys["AMBIG1"] == ""  # an alias of two genes is not used
    assert keys["CD4"] == "ENSG00000010610" and keys["NOTAGENE123"] == ""
    # mouse genes never go through the human aliases
    assert map_features(pd.DataFrame(index=["FAM132A"]), modality="rna", organism="mouse",
                        aliases=True).keys.tolist() == [""]


def test_vocabulary_records_the_alias_setting(tmp_path) -> None:
    v = Vocabulary(["ENSG00000141510"], gene_aliases=True)
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").gene_aliases
    Vocabulary(["ENSG00000141510"]).save(tmp_path / "old.json")
    assert "gene_aliases" not in (tmp_path / "old.json").read_text()
    assert not Vocabulary.load(tmp_path / "old.json").gene_aliases


def test_shipped_model_tokenizes_as_it_was_trained() -> None:
    """The shipped model maps gene names with the alias setting its vocabulary file records (a
    vocabulary saved before the alias table has none and keeps its mapping, as tested above)."""
    import json

    from cellweave.models import CellWeave, resolve_model_path

    model = CellWeave.load()
    recorded = json.loads((resolve_model_path(None) / "vocab.json").read_text()).get("gene_aliases", False)
    assert model.vocab.gene_aliases is recorded
    ids = model.gene_token_ids(["TCEB3", "ELOA"])  # TCEB3 is ELOA's previous symbol
    assert ids[0] == -1 and ids[1] >= 0
