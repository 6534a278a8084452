"""Pure torch modules: embeddings, encoder, heads and losses (no AnnData here)."""

from ._config import PRESETS, CellWeaveConfig
from ._model import CellWeaveModule, masked_value_loss

__all__ = ["PRESETS", "CellWeaveConfig", "CellWeaveModule", "masked_value_loss"]
