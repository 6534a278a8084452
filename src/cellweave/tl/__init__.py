"""Downstream tasks, scanpy-style: ``adata`` first, keyword-only options, results in AnnData."""

from ._annotate import annotate
from ._embed import embed, embed_store
from ._gene_map import gene_map, gene_sets, score_programs
from ._grn import grn
from ._markers import markers, markers_frame
from ._integrate import integrate
from ._map_query import map_query
from ._perturb import perturb, predict_perturbation
from ._impute import impute

# Building blocks of the verbs, public for the benchmark tasks (bench/ uses public names only) and
# for pipelines that need one step of a task rather than the whole verb.
from ._gene_map import gene_embedding_table
from ._gene_utils import (
    local_columns,
    log_normalized,
    prepare_rna,
    rna_adata,
    token_batches,
    var_token_ids,
    vocab_to_col_map,
)
from ._grn import attention_scores, combine_scores, embedding_scores, perturbation_scores
from ._impute import feature_keys
from ._integrate import align_reference_query, harmony, integrate_embedding
from ._map_query import NeighborIndex, kernel_vote
from ._markers import attribution_scores, corpus_var_names, fit_group_classifier
from ._transfer import LabelTransfer
from ._umap import umap_coordinates

__all__ = [
    # verbs, scanpy-style (adata first)
    "gene_map", "gene_sets", "grn", "markers", "markers_frame", "score_programs", "impute", "annotate", "embed",
    "embed_store",
    "integrate", "map_query", "perturb", "predict_perturbation",
    # building blocks
    "LabelTransfer", "NeighborIndex", "attention_scores", "attribution_scores", "combine_scores",
    "corpus_var_names", "embedding_scores", "feature_keys", "fit_group_classifier", "gene_embedding_table",
    "align_reference_query", "harmony", "integrate_embedding", "kernel_vote", "local_columns", "log_normalized", "perturbation_scores",
    "prepare_rna", "rna_adata", "token_batches", "umap_coordinates", "var_token_ids", "vocab_to_col_map",
]
