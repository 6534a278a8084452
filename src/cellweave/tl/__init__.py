"""Downstream tasks, scanpy-style: ``adata`` first, keyword-only options, results in AnnData."""

from ._annotate import annotate
from ._embed import embed
from ._gene_map import gene_map, gene_sets, score_programs
from ._grn import grn
from ._markers import markers, markers_frame
from ._integrate import integrate
from ._map_query import map_query
from ._perturb import perturb, predict_perturbation
from ._impute import impute

__all__ = ["gene_map", "gene_sets", "grn", "markers", "markers_frame", "score_programs", "impute", "annotate", "embed", "integrate", "map_query", "perturb", "predict_perturbation"]
