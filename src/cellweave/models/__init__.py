"""User-facing models: configuration presets, save/load, shipped checkpoints."""

from ._cellweave import (
    DEFAULT_MODEL,
    CellWeave,
    available_models,
    environment_versions,
    render_model_card,
    resolve_model_path,
)
from ._insilico import in_silico_profiles

__all__ = [
    "DEFAULT_MODEL",
    "CellWeave",
    "available_models",
    "environment_versions",
    "in_silico_profiles",
    "render_model_card",
    "resolve_model_path",
]
