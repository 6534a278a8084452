"""Training: Lightning plans, atomic checkpoints, pretraining."""

from ._adapt import DEFAULT_EPOCHS as ADAPT_EPOCHS
from ._adapt import DEFAULT_MAX_STEPS as ADAPT_MAX_STEPS
from ._adapt import AdaptPlan, adapt
from ._crossmodal import CrossModalPredictor, finetune_cross_modal
from ._finetune import finetune_classifier
from ._integrate import AdversarialPlan, fit_batch_adapter
from ._perturb import (
    PerturbationIdentity,
    PerturbationModel,
    finetune_perturbation,
    fit_head,
    identity_vectors,
    rna_with_cell_obs,
    spread_ratio,
    zero_shot_features,
)
from ._plan import AtomicCheckpointIO, CellLogCallback, HistoryCallback, PretrainPlan
from ._predict import EmbedPlan, embed_corpora
from ._pretrain import evaluate_masked, feature_mean_baselines, pretrain, split_cells

__all__ = ["ADAPT_EPOCHS", "ADAPT_MAX_STEPS", "AdaptPlan", "adapt", "AdversarialPlan", "fit_batch_adapter", "AtomicCheckpointIO", "CellLogCallback", "CrossModalPredictor", "EmbedPlan", "embed_corpora", "finetune_cross_modal", "PerturbationModel", "finetune_classifier", "finetune_perturbation", "HistoryCallback", "PretrainPlan", "evaluate_masked", "feature_mean_baselines", "pretrain", "split_cells",
           # perturbation building blocks (the perturb benchmark task)
           "PerturbationIdentity", "fit_head", "identity_vectors", "rna_with_cell_obs", "spread_ratio",
           "zero_shot_features"]
