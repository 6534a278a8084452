"""Training: Lightning plans, atomic checkpoints, pretraining."""

from ._finetune import finetune_classifier
from ._plan import AtomicCheckpointIO, HistoryCallback, PretrainPlan
from ._pretrain import evaluate_masked, feature_mean_baselines, pretrain, split_cells

__all__ = ["AtomicCheckpointIO", "finetune_classifier", "HistoryCallback", "PretrainPlan", "evaluate_masked", "feature_mean_baselines", "pretrain", "split_cells"]
