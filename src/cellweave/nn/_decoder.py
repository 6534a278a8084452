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


class CountDecoder(nn.Module):
    """Negative-binomial decoder of a cell's counts from its embedding, scVI's generative model.

    The mean of gene ``g`` is ``library x softmax(f(z, batch))_g`` with ``f`` a one-hidden-layer
    MLP of the cell embedding ``z`` and a one-hot batch covariate, and each gene has its own inverse
    dispersion (Lopez et al. 2018, "Deep generative modeling for single-cell transcriptomics").
    Differences from scVI: the "encoder" is the CellWeave transformer and ``z`` is its CLS state
    (not a variational posterior sample), and the library size is the cell's observed total over
    the decoded genes (scVI's ``use_observed_lib_size``, its default). The batch covariate lets the
    decoder explain technical variation, so the embedding need not carry it.
    """

    def __init__(self, d_in: int, n_genes: int, n_batches: int = 1, *, d_hidden: int = 256) -> None:
        super().__init__()
        self.n_batches = max(int(n_batches), 1)
        self.net = nn.Sequential(
            nn.Linear(d_in + self.n_batches, d_hidden), nn.LayerNorm(d_hidden), nn.ReLU(), nn.Linear(d_hidden, n_genes)
        )
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def forward(self, z: torch.Tensor, batch: torch.Tensor, library: torch.Tensor,
                gene_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """NB mean ``(B, G)`` and inverse dispersion ``(G,)`` of cells ``z`` (B, d) in batches
        ``batch`` (B,) with library sizes ``library`` (B, 1). ``gene_mask`` (B, G; True = measured):
        the expression shares are normalized over each cell's measured genes only, so a corpus of
        datasets with different gene panels shares one decoder."""
        h = torch.cat([z, F.one_hot(batch, self.n_batches).to(z.dtype)], dim=-1)
        logits = self.net(h)
        if gene_mask is not None:
            logits = logits.masked_fill(~gene_mask, torch.finfo(logits.dtype).min)
        return torch.softmax(logits, dim=-1) * library, self.log_theta.exp()


def nb_nll(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative log-likelihood of counts ``x`` under NB(mean ``mu``, inverse dispersion ``theta``),
    elementwise."""
    log_theta_mu = torch.log(theta + mu + eps)
    ll = (theta * (torch.log(theta + eps) - log_theta_mu) + x * (torch.log(mu + eps) - log_theta_mu)
          + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))
    return -ll


def nb_nll_sum(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``nb_nll(x, mu, theta).sum()`` with the log-gamma terms evaluated only where ``x > 0`` (they
    cancel at 0): several times faster on sparse counts, where they dominate the cost."""
    log_theta_mu = torch.log(theta + mu + eps)
    ll = (theta * (torch.log(theta + eps) - log_theta_mu) + x * (torch.log(mu + eps) - log_theta_mu)).sum()
    nz = x > 0
    xv, tv = x[nz], theta.expand_as(x)[nz]
    return -(ll + (torch.lgamma(xv + tv) - torch.lgamma(tv) - torch.lgamma(xv + 1)).sum())


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, *, sim: float = 25.0, var: float = 25.0,
                cov: float = 1.0) -> torch.Tensor:
    """VICReg between two views' projections ``(B, D)`` (Bardes et al. 2022): invariance (MSE),
    a hinge keeping each dimension's standard deviation at 1, and decorrelated dimensions."""
    inv = F.mse_loss(z1, z2)
    terms = []
    for z in (z1, z2):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        c = (z.T @ z) / max(z.shape[0] - 1, 1)
        off = c - torch.diag(torch.diag(c))
        terms.append(var * F.relu(1 - std).mean() + cov * (off**2).sum() / z.shape[1])
    return sim * inv + (terms[0] + terms[1]) / 2


class LatentReadout(nn.Module):
    """Encoder of a count-likelihood VAE read off a frozen cell embedding: ``(B, d_in)`` -> latent.

    ``adapt(method="head")`` trains it on the user's cells with :class:`CountDecoder` as the
    generative model: scVI's variational autoencoder (Lopez et al. 2018; its defaults: one hidden
    layer of 128 units, a 10-d Gaussian latent, KL warm-up) whose encoder reads the foundation
    model's embedding instead of the cell's log counts, so the model stays frozen and only this
    small network learns what in the embedding explains the user's counts (with the batch given
    to the decoder, not embedded). The embedding is standardized with the adapted cells' mean
    and scale, kept as buffers. :meth:`forward` returns the posterior mean, the cell's
    representation; :meth:`posterior` also the log variance, for training.
    """

    def __init__(self, d_in: int, n_latent: int = 10, d_hidden: int = 128) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.LayerNorm(d_hidden), nn.ReLU(),
                                 nn.Linear(d_hidden, 2 * n_latent))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance ``(B, n_latent)`` each of the latent given embeddings ``x``. Always
        in float32, also under bf16 autocast: the latent is the adapted model's whole representation
        (10 numbers a cell by default), which bf16's 8-bit mantissa would round, and this network
        costs nothing beside the encoder."""
        with torch.autocast(x.device.type, enabled=False):
            mu, logvar = self.net((x.float() - self.mean) / self.scale).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """A reparameterized draw from the posterior N(``mu``, exp(``logvar``)), differentiable in both."""
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Each cell's KL divergence of the posterior from N(0, I), summed over the latent, ``(B,)``."""
        return -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]
