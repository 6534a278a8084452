"""Training: Lightning plans, atomic checkpoints, pretraining."""

from ._adapt import AdaptPlan, adapt
from ._crossmodal import CrossModalPredictor, finetune_cross_modal
from ._finetune import finetune_classifier
from ._perturb import PerturbationModel, finetune_perturbation
from ._plan import AtomicCheckpointIO, HistoryCallback, PretrainPlan
from ._pretrain import evaluate_masked, feature_mean_baselines, pretrain, split_cells

__all__ = ["AdaptPlan", "adapt", "AtomicCheckpointIO", "CrossModalPredictor", "finetune_cross_modal", "PerturbationModel", "finetune_classifier", "finetune_perturbation", "HistoryCallback", "PretrainPlan", "evaluate_masked", "feature_mean_baselines", "pretrain", "split_cells"]
