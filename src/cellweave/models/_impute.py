"""The fine-tuned cross-modal predictor (verb ``impute``): an encoder and a feature-query decoder that
predict one modality from others. The fit lives in :func:`cellweave.train.finetune_cross_modal`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cellweave.data import TokenDataset, Tokenizer, collate_tokens
from cellweave.nn import FeatureQueryDecoder

if TYPE_CHECKING:
    from cellweave.data import CellCorpus

    from ._cellweave import CellWeave


@dataclass
class CrossModalPredictor:
    """A fine-tuned encoder and feature-query decoder that predict ``target`` from ``input_modalities``.

    Predictions are in the units of the training matrix (e.g. CLR protein, log1p counts per
    10k for ATAC), de-standardized with the training cells' per-feature mean and scale.
    """

    model: CellWeave
    decoder: FeatureQueryDecoder
    target: str
    input_modalities: list[str]
    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)
    tokenizer: Tokenizer | None = None
    linear: LinearStart | None = None

    @torch.inference_mode()
    def predict(self, corpus: CellCorpus, *, batch_size: int = 64, seed: int = 0, progress: bool = True,
                precision: str = "32-true") -> np.ndarray:
        """Predictions ``(n_cells, n_features)`` for every cell of ``corpus`` (float32); the
        encoder and decoder pass at ``precision`` (``"bf16-mixed"``: under bf16 autocast; the
        autocast refuses another name before any pass)."""
        with self.model.autocast(precision):
            decoded, emb = cross_modal_pass(self.model.module, self.tokenizer or self.model.tokenizer, corpus,
                                            self.input_modalities, decoder=self.decoder, batch_size=batch_size,
                                            seed=seed, progress=progress, desc=f"predicting {self.target}")
        out = decoded if self.linear is None else decoded + self.linear.predict(emb).astype(np.float32)
        return out * self.scale.astype(np.float32) + self.mean.astype(np.float32)


@dataclass
class LinearStart:
    """Ridge regression from the standardized frozen cell embedding to the standardized targets:
    the decoder learns the residual, so training starts from what the embedding already tells
    (a small decoder otherwise spends its first epochs on a plateau, and sometimes never leaves).
    Fitted by :func:`cellweave.train.finetune_cross_modal`."""

    emb_mean: np.ndarray
    emb_scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    alpha: float

    def predict(self, emb: np.ndarray) -> np.ndarray:
        return ((emb - self.emb_mean) / self.emb_scale) @ self.coef.T + self.intercept


@torch.inference_mode()
def cross_modal_pass(module, tokenizer: Tokenizer, corpus: CellCorpus, inputs: list[str], *,
                     decoder: FeatureQueryDecoder | None, batch_size: int, seed: int, progress: bool,
                     desc: str) -> tuple[np.ndarray | None, np.ndarray]:
    """One encoder pass over ``corpus`` (embed-mode tokens of ``inputs``): the decoder's output
    (``None`` without a decoder) and the pooled cell embedding the linear start reads."""
    from tqdm.auto import tqdm

    module.eval()
    if decoder is not None:
        decoder.eval()
    ds = TokenDataset([corpus], tokenizer, mode="embed", seed=seed, modalities=inputs)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate_tokens)
    decoded = None if decoder is None else np.zeros((len(ds), decoder.bias.shape[0]), dtype=np.float32)
    emb = np.zeros((len(ds), module.embedding_dim), dtype=np.float32)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        rows = batch["index"].numpy()
        z, pooled = cross_modal_decode(module, decoder, batch, pool=True)
        emb[rows] = pooled.float().numpy()
        if decoded is not None:
            decoded[rows] = z.float().numpy()
    return decoded, emb


def cross_modal_decode(module: torch.nn.Module, decoder: FeatureQueryDecoder | None, batch: dict[str, torch.Tensor],
                       *, pool: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Decoder output (over the CLS state and every token's contextual state plus its input
    embedding: feature + modality + value; the skip gives the decoder "gene g has value v"
    directly, which a small encoder's contextual states carry only faintly) and, with ``pool``,
    the pooled cell embedding, from one encoder pass."""
    ids, vals, mods, pad = batch["token_ids"], batch["values"], batch["modality_ids"], batch["padding_mask"]
    cls, tokens = module.encode(ids, vals, mods, pad)
    pooled = module.pool(cls, tokens, ids, vals, pad) if pool else None
    if decoder is None:
        return None, pooled
    inputs = module.feature_embedding(ids) + module.modality_embedding(mods) + module.value_encoder(vals, None)
    states = torch.cat([cls.unsqueeze(1), tokens + inputs], dim=1)
    keep = torch.cat([pad.new_ones(cls.shape[0], 1), pad], dim=1)
    return decoder(states, keep), pooled
