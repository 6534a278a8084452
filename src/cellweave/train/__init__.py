"""Training: Lightning plans, atomic checkpoints, pretraining."""

from ._adapt import DEFAULT_EPOCHS as ADAPT_EPOCHS
from ._adapt import DEFAULT_MAX_STEPS as ADAPT_MAX_STEPS
from ._adapt import HEAD_EPOCHS, HEAD_LATENT
from ._adapt import METHODS as ADAPT_METHODS
from ._adapt import STARTS as ADAPT_STARTS
from ._adapt import AdaptPlan, adapt, decoded_counts, fit_count_readout, start_module
from ._impute import finetune_cross_modal
from ._annotate import finetune_classifier
from ._integrate import AdversarialPlan, fit_batch_adapter
from ._perturb import finetune_perturbation, fit_head, rna_with_cell_obs
from ._monitor import KNN_METRIC, KnnMonitorCallback, module_copy_embedder
from ._plan import AtomicCheckpointIO, CellLogCallback, HistoryCallback, PretrainPlan, SnapshotCallback
from ._predict import EmbedPlan, embed_corpora
from ._pretrain import SELECT_EPOCHS, cell_labels, evaluate_masked, feature_mean_baselines, monitor_cells_of, neighbour_partners, pretrain, principal_targets, split_cells

# The fitted objects and their inference helpers moved to cellweave.models (issue 13: models/ holds what a
# user saves and loads); these aliases keep `from cellweave.train import ...` working until 0.3.
from cellweave.models import (
    CrossModalPredictor,
    PerturbationIdentity,
    PerturbationModel,
    identity_vectors,
    spread_ratio,
    zero_shot_features,
)

__all__ = ["ADAPT_EPOCHS", "ADAPT_MAX_STEPS", "ADAPT_METHODS", "ADAPT_STARTS", "HEAD_EPOCHS", "HEAD_LATENT", "AdaptPlan", "adapt", "decoded_counts", "fit_count_readout", "start_module", "AdversarialPlan", "fit_batch_adapter", "AtomicCheckpointIO", "CellLogCallback", "EmbedPlan", "embed_corpora", "finetune_cross_modal", "finetune_classifier", "finetune_perturbation", "HistoryCallback", "PretrainPlan", "SnapshotCallback", "KNN_METRIC", "KnnMonitorCallback", "module_copy_embedder", "SELECT_EPOCHS", "monitor_cells_of", "evaluate_masked", "feature_mean_baselines", "neighbour_partners", "principal_targets", "cell_labels",
    "pretrain", "split_cells",
           # perturbation building blocks (the perturb benchmark task)
           "fit_head", "rna_with_cell_obs",
           # moved to cellweave.models; aliases kept until 0.3
           "CrossModalPredictor", "PerturbationModel", "PerturbationIdentity", "identity_vectors", "spread_ratio",
           "zero_shot_features"]
