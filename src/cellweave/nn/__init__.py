"""Pure torch modules: embeddings, encoder, heads and losses (no AnnData here)."""

from ._config import PRESETS, CellWeaveConfig
from ._decoder import CountDecoder, nb_nll, vicreg_loss
from ._model import CellWeaveModule, masked_value_loss

__all__ = ["PRESETS", "CellWeaveConfig", "CellWeaveModule", "CountDecoder", "masked_value_loss", "nb_nll", "vicreg_loss"]
