"""Cells to tokens: corpus preparation, tokenizer, torch datasets, synthetic test data."""

from ._corpus import (
    TARGET_SUM,
    CellCorpus,
    ModalityBlock,
    build_vocabulary,
    clr,
    corpus_counts,
    hvg_features,
    log_normalize,
    prepare_cells,
)
from ._store import (
    DEFAULT_CHUNK_SIZE,
    StoreCorpus,
    StoreCSR,
    open_store,
    prepare_store,
    is_store,
    read_store_manifest,
    store_vocabulary,
)
from ._soma import LAYER_ORDER as SOMA_LAYER_ORDER
from ._soma import VAR_NAME_COLUMNS as SOMA_VAR_NAME_COLUMNS
from ._soma import SomaCorpus, SomaCSR, SomaSelection, is_soma, open_soma, soma_vocabulary
from ._spatial import neighbourhood_mean, section_neighbors, spatial_coordinates
from ._tokenize import (EpochShuffleSampler, Tokenizer, TokenDataset, adopt_token_space, collate_tokens,
                        feature_means, feature_modules, variable_columns)
from .synthetic import synthetic_adata, synthetic_mudata

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SOMA_LAYER_ORDER",
    "SOMA_VAR_NAME_COLUMNS",
    "TARGET_SUM",
    "CellCorpus",
    "EpochShuffleSampler",
    "ModalityBlock",
    "SomaCSR",
    "SomaCorpus",
    "SomaSelection",
    "StoreCSR",
    "StoreCorpus",
    "TokenDataset",
    "Tokenizer",
    "adopt_token_space",
    "build_vocabulary",
    "clr",
    "collate_tokens",
    "corpus_counts",
    "feature_means",
    "feature_modules",
    "variable_columns",
    "hvg_features",
    "is_soma",
    "is_store",
    "log_normalize",
    "neighbourhood_mean",
    "open_soma",
    "open_store",
    "prepare_cells",
    "prepare_store",
    "read_store_manifest",
    "section_neighbors",
    "soma_vocabulary",
    "spatial_coordinates",
    "store_vocabulary",
    "synthetic_adata",
    "synthetic_mudata",
]
