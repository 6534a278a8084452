"""User-facing models: configuration presets, save/load, shipped checkpoints, and the fine-tuned
objects a user keeps (perturbation-response and cross-modal models)."""

from ._cellweave import (
    DEFAULT_GENE_MODEL,
    DEFAULT_MODEL,
    CellWeave,
    available_models,
    environment_versions,
    render_model_card,
    resolve_model_path,
)
from ._impute import CrossModalPredictor, LinearStart, cross_modal_decode, cross_modal_pass
from ._insilico import in_silico_profiles
from ._perturb import (
    PerturbationIdentity,
    PerturbationModel,
    identity_vectors,
    perturbation_expression,
    spread_ratio,
    zero_shot_features,
)

__all__ = [
    "DEFAULT_GENE_MODEL",
    "DEFAULT_MODEL",
    "CellWeave",
    "CrossModalPredictor",
    "LinearStart",
    "PerturbationIdentity",
    "PerturbationModel",
    "available_models",
    "cross_modal_decode",
    "cross_modal_pass",
    "environment_versions",
    "identity_vectors",
    "in_silico_profiles",
    "perturbation_expression",
    "render_model_card",
    "resolve_model_path",
    "spread_ratio",
    "zero_shot_features",
]
