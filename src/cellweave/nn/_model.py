"""The CellWeave encoder: pure torch, tensors in and tensors out (no AnnData here)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._config import CellWeaveConfig


class ValueEncoder(nn.Module):
    """Continuous value -> vector; a learned vector stands in for hidden (masked) values."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(1, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.mask_embedding = nn.Parameter(torch.zeros(d_model))

    def forward(self, values: torch.Tensor, value_mask: torch.Tensor | None) -> torch.Tensor:
        out = self.proj(values.unsqueeze(-1))
        if value_mask is not None:
            out = torch.where(value_mask.unsqueeze(-1), self.mask_embedding.to(out.dtype), out)
        return out


class SelfAttention(nn.Module):
    def __init__(self, config: CellWeaveConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        # SDPA picks flash / memory-efficient kernels on a GPU and a fused CPU kernel here.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (stable without warm-up tricks at small scale)."""

    def __init__(self, config: CellWeaveConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff), nn.GELU(), nn.Linear(config.d_ff, config.d_model)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), attn_mask))
        return x + self.drop(self.mlp(self.ln2(x)))


class CellWeaveModule(nn.Module):
    """Embeddings -> transformer encoder -> cell embedding and value heads.

    Inputs are padded token batches (see ``cellweave.data``): ``token_ids`` index the shared
    feature vocabulary (genes, proteins, peak bins), ``values`` are normalized measurements,
    ``modality_ids`` say which modality each token came from, ``padding_mask`` is True on real
    tokens and ``value_mask`` is True where the value is hidden and must be predicted.
    """

    def __init__(self, config: CellWeaveConfig) -> None:
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("config.vocab_size must be set (build the vocabulary first).")
        self.config = config
        d = config.d_model
        self.feature_embedding = nn.Embedding(config.vocab_size, d)
        self.modality_embedding = nn.Embedding(config.n_modalities, d)
        self.value_encoder = ValueEncoder(d)
        self.cls_embedding = nn.Parameter(torch.zeros(d))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        # Token head: predicts a hidden value from its token's contextual state (masked modelling).
        self.value_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        # Cell head: predicts a hidden value from the cell embedding and the feature's identity
        # alone (scGPT's GEPC/MVC idea). It forces the cell embedding to summarize the cell.
        self.cell_query = nn.Linear(d, d)
        self.cell_key = nn.Linear(d, d)
        self.apply(self._init_weights)
        # Scaled init of residual projections (GPT-2): keeps the residual stream's variance flat
        # with depth.
        for name, p in self.named_parameters():
            if name.endswith("attn.out.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.feature_embedding.weight.numel()
        return n

    def encode(
        self,
        token_ids: torch.Tensor,
        values: torch.Tensor,
        modality_ids: torch.Tensor,
        padding_mask: torch.Tensor,
        value_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cell_embedding ``(B, d)``, token states ``(B, L, d)``)."""
        b = token_ids.shape[0]
        x = (
            self.feature_embedding(token_ids)
            + self.modality_embedding(modality_ids)
            + self.value_encoder(values, value_mask)
        )
        cls = self.cls_embedding.expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1)
        keep = torch.cat([padding_mask.new_ones(b, 1), padding_mask], dim=1)
        # Boolean mask: True = may attend. Shape (B, 1, 1, L+1) broadcasts over heads and queries.
        attn_mask = keep[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask)
        x = self.ln_f(x)
        tokens = x[:, 1:]
        if self.config.pooling == "cls":
            cell = x[:, 0]
        else:
            w = padding_mask.unsqueeze(-1).to(x.dtype)
            cell = (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)
        return cell, tokens

    def forward(
        self,
        token_ids: torch.Tensor,
        values: torch.Tensor,
        modality_ids: torch.Tensor,
        padding_mask: torch.Tensor,
        value_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        cell, tokens = self.encode(token_ids, values, modality_ids, padding_mask, value_mask)
        token_pred = self.value_head(tokens).squeeze(-1)
        query = self.cell_query(self.feature_embedding(token_ids) + self.modality_embedding(modality_ids))
        cell_pred = (query * self.cell_key(cell).unsqueeze(1)).sum(-1) / math.sqrt(cell.shape[-1])
        return {"cell_embedding": cell, "token_pred": token_pred, "cell_pred": cell_pred}


def masked_value_loss(
    out: dict[str, torch.Tensor], values: torch.Tensor, value_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Mean squared error on hidden values, for the token head and the cell head."""
    m = value_mask.to(values.dtype)
    n = m.sum().clamp_min(1.0)
    token = (((out["token_pred"] - values) ** 2) * m).sum() / n
    cell = (((out["cell_pred"] - values) ** 2) * m).sum() / n
    return {"loss": token + cell, "token_mse": token, "cell_mse": cell}
