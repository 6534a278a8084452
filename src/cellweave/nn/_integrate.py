"""A batch-adversarial, batch-conditional autoencoder over frozen cell embeddings (pure torch)."""

from __future__ import annotations

import torch
from torch import nn


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D102
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-scale`` backward (Ganin & Lempitsky 2015)."""
    return _GradReverse.apply(x, scale)


class BatchAdversarialAdapter(nn.Module):
    """Encoder ``z = f(e)``, decoder ``e' = g(z, batch)``, discriminator ``batch <- h(z)``.

    The decoder is told the batch, so ``z`` need not carry it; the discriminator, trained
    through a gradient-reversal layer, pushes ``z`` to not carry it. ``z`` is the integrated
    embedding.
    """

    def __init__(self, d_in: int, n_batches: int, *, d_latent: int = 32, d_hidden: int = 256,
                 adversary_weight: float = 1.0) -> None:
        super().__init__()
        self.n_batches = n_batches
        self.adversary_weight = adversary_weight
        self.encoder = nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_latent))
        self.decoder = nn.Sequential(nn.Linear(d_latent + n_batches, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_in))
        self.discriminator = nn.Sequential(nn.Linear(d_latent, d_hidden // 2), nn.GELU(),
                                           nn.Linear(d_hidden // 2, n_batches))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(x)
        onehot = nn.functional.one_hot(batch, self.n_batches).to(z.dtype)
        recon = self.decoder(torch.cat([z, onehot], dim=1))
        logits = self.discriminator(grad_reverse(z, self.adversary_weight))
        recon_loss = nn.functional.mse_loss(recon, x)
        adv_loss = nn.functional.cross_entropy(logits, batch)
        return {"z": z, "loss": recon_loss + adv_loss, "recon_loss": recon_loss, "adversary_loss": adv_loss}
