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
from ._tokenize import EpochShuffleSampler, Tokenizer, TokenDataset, collate_tokens
from .synthetic import synthetic_adata, synthetic_mudata

__all__ = [
    "TARGET_SUM",
    "CellCorpus",
    "EpochShuffleSampler",
    "ModalityBlock",
    "TokenDataset",
    "Tokenizer",
    "build_vocabulary",
    "clr",
    "collate_tokens",
    "corpus_counts",
    "hvg_features",
    "log_normalize",
    "prepare_cells",
    "synthetic_adata",
    "synthetic_mudata",
]
