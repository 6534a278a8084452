"""Gene identity: Ensembl ID normalization, symbol and ortholog mapping, vocabularies, coverage."""

from ._coverage import CoverageReport, coverage, coverage_table
from ._ids import infer_organism, normalize_ensembl_id
from ._mapping import FeatureMap, map_features, symbol_for
from ._tables import BIOLEGEND_TOTALSEQ, BIOMART_HUMAN, BIOMART_MOUSE, GENCODE_HUMAN
from ._tables import TABLES as GENE_TABLES
from ._tables import aliases_available, human_id_to_symbol, symbol_index
from ._tables import read_table as gene_table
from ._tf import tf_list
from ._vocab import Vocabulary

__all__ = [
    # Names of the gene tables (keys of GENE_TABLES) that the dataset converters read.
    "BIOLEGEND_TOTALSEQ",
    "BIOMART_HUMAN",
    "BIOMART_MOUSE",
    "GENCODE_HUMAN",
    "CoverageReport",
    "FeatureMap",
    "Vocabulary",
    "GENE_TABLES",
    "aliases_available",
    "gene_table",
    "human_id_to_symbol",
    "symbol_index",
    "coverage",
    "coverage_table",
    "infer_organism",
    "map_features",
    "normalize_ensembl_id",
    "symbol_for",
    "tf_list",
]
