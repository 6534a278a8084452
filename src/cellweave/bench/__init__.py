"""Baselines, metrics and reports: cellweave beside simple methods on the same cells."""

from ._knn import dataset_mixing, knn_accuracy, pca_hvg_embedding, tissue_scores
from ._report import HtmlReport
from ._results import CELLWEAVE, Record, comparison_table, make_records, read_results, records_frame, summarize, write_results
from ._runner import RENAMED_TASKS, TASKS, BenchmarkContext, available_tasks, resolve_tasks, run_benchmark, run_tasks
from .tasks.panel import TISSUE_GROUPS, tissue_groups
from cellweave.tl import umap_coordinates

__all__ = [
    "CELLWEAVE",
    "BenchmarkContext",
    "HtmlReport",
    "RENAMED_TASKS",
    "Record",
    "TASKS",
    "TISSUE_GROUPS",
    "available_tasks",
    "comparison_table",
    "dataset_mixing",
    "knn_accuracy",
    "make_records",
    "pca_hvg_embedding",
    "read_results",
    "records_frame",
    "resolve_tasks",
    "run_benchmark",
    "run_tasks",
    "summarize",
    "tissue_groups",
    "tissue_scores",
    "umap_coordinates",
    "write_results",
]
