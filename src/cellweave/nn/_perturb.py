"""Perturbation-response head: pure torch, tensors in and tensors out (no AnnData here).

The head predicts, for a control cell and a perturbation, the change of every readout gene's
log-normalized expression. Perturbations are vectors in the pretrained gene-token space: a
perturbed gene *is* its token embedding, so a gene never seen perturbed in fine-tuning still has
a representation; condition labels that are not genes get a learned vector in the same space.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PerturbationHead(nn.Module):
    """``delta[b, g] = bias[g] + <h(perturbation_b, cell_b), r_g> / sqrt(d_hidden)``.

    Parameters
    ----------
    gene_tokens
        ``(n_genes, d_token)`` frozen pretrained token embeddings of the readout genes (zeros for
        genes outside the vocabulary); readout vectors ``r_g`` are a learned projection of them
        plus a free per-gene vector.
    d_cell
        Width of the control-cell embedding that conditions the response (cell type, state).
    n_labels
        Condition labels that are not genes (scGen-style ``stim``); each gets a learned vector.
    d_hidden
        Width of the joint perturbation x cell representation.
    n_extra
        Width of extra per-perturbation features (e.g. the zero-shot in silico profile).
    dropout
        Dropout on the perturbation representation: with a few dozen training perturbations the
        head overfits easily, and dropout is the cheapest brake.
    """

    def __init__(
        self,
        gene_tokens: torch.Tensor,
        d_cell: int,
        n_labels: int = 0,
        *,
        d_hidden: int = 64,
        n_extra: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        n_genes, d_token = gene_tokens.shape
        self.n_genes, self.d_token, self.d_cell = n_genes, d_token, d_cell
        self.n_labels, self.d_hidden, self.n_extra, self.dropout = n_labels, d_hidden, n_extra, dropout
        self.register_buffer("gene_tokens", gene_tokens.detach().clone().float())
        # Row 0 is the zero vector used by gene perturbations (they carry no label).
        self.label_embedding = nn.Embedding(n_labels + 1, d_token)
        nn.init.normal_(self.label_embedding.weight, std=0.02)
        with torch.no_grad():
            self.label_embedding.weight[0].zero_()
        self.perturbation_norm = nn.LayerNorm(d_token)
        self.perturbation_mlp = nn.Sequential(
            nn.Linear(d_token + n_extra, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_hidden)
        )
        self.cell_proj = nn.Sequential(nn.LayerNorm(d_cell), nn.Linear(d_cell, d_hidden))
        self.joint = nn.Sequential(nn.GELU(), nn.Linear(d_hidden, d_hidden))
        self.gene_proj = nn.Linear(d_token, d_hidden)
        self.gene_free = nn.Parameter(torch.zeros(n_genes, d_hidden))
        self.gene_bias = nn.Parameter(torch.zeros(n_genes))

    def perturbation_vector(self, gene_vector: torch.Tensor, label_index: torch.Tensor) -> torch.Tensor:
        """Token-space vector of each perturbation: summed gene tokens plus its label's vector."""
        return gene_vector + self.label_embedding(label_index)

    def forward(
        self,
        gene_vector: torch.Tensor,
        label_index: torch.Tensor,
        cell: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted change ``(B, n_genes)`` of log-normalized expression.

        ``gene_vector`` (B, d_token): summed token embeddings of the perturbed genes (zeros for
        a label); ``label_index`` (B,): 1 + label id, 0 for gene perturbations; ``cell``
        (B, d_cell): control-cell embedding; ``extra`` (B, n_extra) when ``n_extra > 0``.
        """
        p = self.perturbation_norm(self.perturbation_vector(gene_vector, label_index))
        if self.n_extra:
            if extra is None:
                raise ValueError(f"this head was built with n_extra={self.n_extra}; pass `extra`.")
            p = torch.cat([p, extra], dim=-1)
        h = self.joint(self.perturbation_mlp(p) + self.cell_proj(cell))
        readout = self.gene_proj(self.gene_tokens) + self.gene_free
        return self.gene_bias + h @ readout.T / math.sqrt(self.d_hidden)

    def config(self) -> dict[str, float]:
        """Constructor arguments (besides the gene tokens) to rebuild the head from saved weights."""
        return {"d_cell": self.d_cell, "n_labels": self.n_labels, "d_hidden": self.d_hidden,
                "n_extra": self.n_extra, "dropout": self.dropout}
