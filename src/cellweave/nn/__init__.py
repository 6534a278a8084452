"""Pure torch modules: embeddings, encoder, heads and losses (no AnnData here)."""

from ._integrate import BatchAdversarialAdapter
from ._config import PRESETS, CellWeaveConfig
from ._decoder import CountDecoder, FeatureQueryDecoder, LatentReadout, nb_nll, nb_nll_sum, vicreg_loss
from ._model import PRECISIONS, CellWeaveModule, check_precision, generated_code, masked_value_loss, precision_autocast
from ._perturb import PerturbationHead

__all__ = ["PRECISIONS", "PRESETS", "BatchAdversarialAdapter", "CellWeaveConfig", "CellWeaveModule", "CountDecoder",
           "FeatureQueryDecoder", "LatentReadout",
           "PerturbationHead", "check_precision", "generated_code", "masked_value_loss", "nb_nll", "nb_nll_sum",
           "precision_autocast", "vicreg_loss"]
