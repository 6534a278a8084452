"""Gene identity layer, checked against the real bundled tables and the shared example data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellweave._exceptions import CellWeaveInputError
from cellweave.genes import (
    FeatureMap,
    Vocabulary,
    coverage,
    coverage_table,
    infer_organism,
    map_features,
    normalize_ensembl_id,
    symbol_for,
    tf_list,
)

TP53 = "ENSG00000141510"
CD4 = "ENSG00000010610"
DATA = Path(os.environ.get("CELLWEAVE_DATA", "/work/shared/data"))


def _var(names, **cols) -> pd.DataFrame:
    return pd.DataFrame(cols, index=pd.Index(names))


def _data(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"example data not found: {path} (set CELLWEAVE_DATA)")
    return path


# ---------------------------------------------------------------- IDs and organisms


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ENSG00000141510.17", TP53),
        ("ENSG00000141510", TP53),
        ("ENSG00000002586.20_PAR_Y", "ENSG00000002586"),
        ("ENSMUSG00000059552.3", "ENSMUSG00000059552"),
        ("TP53", ""),
        ("", ""),
        (None, ""),
        ("ENSG0000014151", ""),  # too short
        ("ENST00000269305", ""),  # a transcript, not a gene
    ],
)
def test_normalize_ensembl_id(raw, expected):
    assert normalize_ensembl_id(raw) == expected


def test_infer_organism_by_ids_and_symbols():
    assert infer_organism(["a", "b"], ["ENSG00000141510.1", ""]) == "human"
    assert infer_organism(["ENSMUSG00000059552", "x"]) == "mouse"
    assert infer_organism(["TP53", "CD4", "GAPDH", "ACTB"]) == "human"
    assert infer_organism(["Trp53", "Cd4", "Gapdh", "Actb"]) == "mouse"
    assert infer_organism(["CD3_TotalSeqB", "IgG1", "foo"]) is None


def test_infer_organism_osmfish_is_mouse():
    ad = pytest.importorskip("anndata")
    adata = ad.read_h5ad(_data("spatial_osmfish_scvi/spatial_osmfish_scvi.h5ad"))
    assert infer_organism(adata.var_names) == "mouse"  # by symbols alone
    assert infer_organism(adata.var_names, adata.var.get("gene_id")) == "mouse"


# ---------------------------------------------------------------- genes


def test_human_symbols_and_ids():
    var = _var(
        ["TP53", "tp53", "ENSG00000141510.17", "CD8A-1", "CD4.2", "NOTAGENE123", "x"],
        gene_id=["", "", "", "", "", "", "ENSG00000010610.9"],
    )
    fmap = map_features(var, modality="rna", organism="human")
    assert list(fmap.keys) == [TP53, TP53, TP53, "ENSG00000153563", CD4, "", CD4]
    assert fmap.reasons[5] == "symbol not in GENCODE v44 / BioMart"
    assert (fmap.reasons[fmap.mapped_mask] == "").all()
    assert fmap.n_features == 7 and fmap.n_mapped == 6


def test_ambiguous_symbol_reason():
    # Symbols GENCODE v44 gives to several genes (and BioMart does not settle) are reported.
    from cellweave.genes import _tables

    index = _tables.symbol_index(_tables.GENCODE_HUMAN)
    biomart = _tables.symbol_index(_tables.BIOMART_HUMAN)
    symbol = next(s for s, ids in index.items() if len(ids) > 1 and s not in biomart)
    fmap = map_features(_var([symbol]), modality="rna", organism="human")
    assert fmap.keys[0] == ""
    assert fmap.reasons[0] == f"ambiguous symbol ({len(index[symbol])} Ensembl IDs)"


def test_mouse_orthologs_share_human_tokens():
    fmap = map_features(_var(["Trp53", "Cd4", "Gm1992", "H2-K1", "ENSMUSG00000059552"]), modality="rna", organism="mouse")
    assert fmap.keys[0] == TP53
    assert fmap.keys[1] == CD4
    assert fmap.keys[4] == TP53  # Trp53's Ensembl ID
    # No one-to-one human ortholog: keyed by the mouse ID itself.
    assert fmap.keys[2].startswith("ENSMUSG") and fmap.keys[3].startswith("ENSMUSG")
    assert list(symbol_for(fmap.keys)) == ["TP53", "CD4", "Gm1992", "H2-K1", "TP53"]


def test_unknown_organism_and_gene_activity():
    fmap = map_features(_var(["Antp", "ENSG00000141510"]), modality="gene_activity", organism="fly")
    assert fmap.keys[0] == "" and fmap.reasons[0].startswith("no gene table for organism")
    assert fmap.keys[1] == TP53


def test_unknown_modality_raises():
    with pytest.raises(CellWeaveInputError, match="rna, prot, atac, gene_activity"):
        map_features(_var(["a"]), modality="adt")


# ---------------------------------------------------------------- proteins


def test_protein_keys():
    names = ["CD3_TotalSeqB", "CD4_TotalSeqB", "CD8a_TotalSeqB", "B7-H1 (PD-L1)", "anti-CCR7", "CD45RA_TotalA", "CD45RO", ""]
    fmap = map_features(_var(names), modality="prot", organism="human")
    keys = list(fmap.keys)
    assert keys[0] == "prot:CD3"  # BioLegend: CD3 antibodies target CD3D or CD3E, so name only
    assert keys[1] == f"prot:{CD4}"
    assert keys[2] == "prot:ENSG00000153563"  # CD8A
    assert keys[3] == "prot:ENSG00000120217"  # CD274
    assert keys[4] == "prot:ENSG00000126353"  # CCR7
    assert keys[5] != keys[6] and keys[5].startswith("prot:ENSG00000081237")  # PTPRC isoforms kept apart
    assert keys[7] == "" and fmap.reasons[7]
    assert fmap.name_only_features == ["CD3_TotalSeqB"]
    assert list(symbol_for(keys[:2])) == ["CD3", "CD4"]


def test_protein_uses_var_columns():
    var = _var(["weird1", "weird2"], gene_id=[f"{CD4}.3", ""], gene_symbol=["", "TP53"])
    fmap = map_features(var, modality="prot", organism="human")
    assert list(fmap.keys) == [f"prot:{CD4}", f"prot:{TP53}"]


# ---------------------------------------------------------------- peaks


def test_atac_bins():
    names = ["chr1:100350982-100353664", "chr1:100359172-100359510", "2:100350982-100353664", "chrX-5-10", "junk"]
    fmap = map_features(_var(names), modality="atac")
    assert fmap.keys[0] == fmap.keys[1] == "atac:GRCh38:chr1:100350000"
    assert fmap.keys[2] == "atac:GRCh38:chr2:100350000" != fmap.keys[0]
    assert fmap.keys[3] == "atac:GRCh38:chrX:0"
    assert fmap.keys[4] == "" and "not parseable" in fmap.reasons[4]
    cols = _var(["p1"], chrom=["1"], start=[15_000], end=[15_100])
    assert map_features(cols, modality="atac", genome="GRCm39", atac_bin_size=1000).keys[0] == "atac:GRCm39:chr1:15000"


# ---------------------------------------------------------------- vocabulary


def test_vocabulary_lookup_and_roundtrip(tmp_path):
    vocab = Vocabulary([TP53, CD4, "prot:CD3", "atac:GRCh38:chr1:0"])
    assert len(vocab) == 4 and CD4 in vocab and "nope" not in vocab
    ids = vocab.lookup(np.array(["prot:CD3", "", "nope", TP53], dtype=object))
    assert ids.dtype == np.int64 and ids.tolist() == [2, -1, -1, 0]
    path = tmp_path / "vocab.json"
    vocab.save(path)
    again = Vocabulary.load(path)
    assert again == vocab and again.sha256 == vocab.sha256 and again.keys == vocab.keys
    assert Vocabulary.from_dict(json.loads(path.read_text())) == vocab
    assert Vocabulary([CD4, TP53]).sha256 != vocab.sha256


def test_vocabulary_rejects_duplicates_and_corruption():
    with pytest.raises(CellWeaveInputError, match="unique"):
        Vocabulary([TP53, CD4, TP53])
    d = Vocabulary([TP53]).to_dict()
    d["keys"] = [CD4]
    with pytest.raises(CellWeaveInputError, match="sha256"):
        Vocabulary.from_dict(d)


def test_vocabulary_lookup_is_vectorized():
    keys = [f"ENSG{i:011d}" for i in range(30_000)]
    vocab = Vocabulary(keys)
    ids = vocab.lookup(keys[::-1])
    assert ids[0] == 29_999 and ids[-1] == 0


def test_vocabulary_from_feature_maps():
    a = map_features(_var(["TP53", "CD4", "NOTAGENE123"]), modality="rna", organism="human")
    b = map_features(_var(["CD4", "GAPDH"]), modality="rna", organism="human")
    vocab = Vocabulary.from_feature_maps([a, b])
    assert vocab.keys[:2] == [TP53, CD4] and len(vocab) == 3
    rare = Vocabulary.from_feature_maps([a, b], counts_per_key={TP53: 5, CD4: 1}, min_count=2)
    assert rare.keys == [TP53]


# ---------------------------------------------------------------- coverage


def test_coverage_counts_add_up():
    fmap = map_features(_var(["TP53", "CD4", "GAPDH", "NOTAGENE123", "ALSO_NOT_A_GENE"]), modality="rna", organism="human")
    report = coverage(fmap, Vocabulary([TP53, CD4]), dataset="toy")
    assert (report.n_in_vocab, report.not_in_vocab, report.n_mapped) == (2, 1, 3)
    assert report.n_in_vocab + report.not_in_vocab + sum(report.not_mapped.values()) == report.n_features
    assert report.not_mapped == {"symbol not in GENCODE v44 / BioMart": 2}
    assert report.examples["not in model vocabulary"] == ["GAPDH"]
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert "toy/rna" in str(report) and "NOTAGENE123" in str(report)
    table = coverage_table([report, report])
    assert len(table) == 2 and table["fraction_in_vocab"].iloc[0] == pytest.approx(0.4)


def test_featuremap_is_a_plain_dataclass():
    fmap = FeatureMap(np.array(["a", ""]), np.array(["", "why"]), "rna", "human")
    assert fmap.n_mapped == 1 and fmap.mapped_mask.tolist() == [True, False]


# ---------------------------------------------------------------- TF lists


def test_tf_list():
    human = tf_list("human")
    assert len(human) > 1500 and "TP53" in human and len(set(human)) == len(human)
    assert "Trp53" in tf_list("mouse")
    with pytest.raises(CellWeaveInputError):
        tf_list("yeast")


# ---------------------------------------------------------------- real datasets


def _self_coverage(adata, modality):
    fmap = map_features(adata.var, modality=modality)
    vocab = Vocabulary(dict.fromkeys(fmap.keys[fmap.mapped_mask]))
    report = coverage(fmap, vocab)
    assert report.n_in_vocab + report.not_in_vocab + sum(report.not_mapped.values()) == report.n_features
    return report


def test_cellbench_rna_mapped_fraction():
    ad = pytest.importorskip("anndata")
    adata = ad.read_h5ad(_data("multibatch_cellbench_sc_mixology/multibatch_cellbench_sc_mixology.h5ad"))
    report = _self_coverage(adata, "rna")
    assert report.organism == "human"
    assert report.fraction_mapped > 0.99  # measured 0.998; the rest are ERCC spike-ins
    assert set(report.not_mapped) == {"symbol not in GENCODE v44 / BioMart"}


def test_eccite_rna_and_prot_mapped_fraction():
    md = pytest.importorskip("mudata")
    mdata = md.read_h5mu(_data("citeseq_citefuse_eccite/citeseq_citefuse_eccite.h5mu"))
    rna = _self_coverage(mdata.mod["rna"], "rna")
    assert rna.fraction_mapped > 0.75  # measured 0.81: the rest are hg19-era clone names (AL627309.1)
    prot = _self_coverage(mdata.mod["prot"], "prot")
    assert prot.fraction_mapped == 1.0
    assert prot.n_keyed_by_name <= 8  # measured 7: CD3, CD77, IgG1, IgG2a, Siglec-8, TCRb, TCRg
