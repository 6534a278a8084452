"""Cross-modal decoder: one learned query per target feature attends over a cell's token states."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureQueryDecoder(nn.Module):
    """Predicts ``n_features`` values of a cell from its encoder states ``(B, L, d)``.

    Each target feature (a protein, a peak bin, a gene) owns a query vector that attends over
    the cell's token states, so a protein's prediction can read its own gene's token (CD4 RNA
    for CD4 protein) and the cell's broader programme at once; a per-feature readout maps the
    attended state to a value. Queries can start from the pretrained feature embeddings of the
    targets (``init_queries``), so features the encoder already knows start in a sensible place.
    Cost is ``B x n_features x L`` attention scores, small for proteins and peak bins.
    """

    def __init__(self, d_model: int, n_features: int, *, n_heads: int = 4,
                 init_queries: torch.Tensor | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}).")
        self.n_heads = n_heads
        q = torch.randn(n_features, d_model) * 0.02 if init_queries is None else init_queries.detach().clone()
        self.queries = nn.Parameter(q)
        self.ln_q = nn.LayerNorm(d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.ln_h = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU())
        # Per-feature readout: feature f's value is <mlp(h_f), w_f> + b_f.
        self.readout = nn.Parameter(torch.zeros(n_features, d_model))
        self.bias = nn.Parameter(torch.zeros(n_features))
        nn.init.normal_(self.readout, std=0.02)

    def forward(self, states: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """``states`` (B, L, d) and ``key_mask`` (B, L; True = real token) -> values (B, n_features)."""
        b, _, d = states.shape
        h = self.n_heads
        q = self.q_proj(self.ln_q(self.queries)).view(1, -1, h, d // h).transpose(1, 2).expand(b, -1, -1, -1)
        k, v = self.kv_proj(states).view(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        att = self.out_proj(att.transpose(1, 2).reshape(b, -1, d)) + self.queries
        return (self.mlp(self.ln_h(att)) * self.readout).sum(-1) + self.bias
