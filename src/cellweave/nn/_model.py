"""The CellWeave encoder: pure torch, tensors in and tensors out (no AnnData here)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from cellweave._exceptions import CellWeaveInputError

from ._config import CellWeaveConfig
from ._decoder import LatentReadout

#: Standard deviation of the normal init of every ``nn.Embedding`` and ``nn.Linear`` weight (GPT-2's).
INIT_STD = 0.02


def generated_code(key: str, table: str, dim: int) -> np.ndarray:
    """The fixed random code of feature ``key`` in the feature table named ``table``: ``dim`` values
    drawn from N(0, ``INIT_STD``), the distribution the stored rows were initialized from, by a
    generator seeded with the SHA-256 of ``table`` and ``key``. The same key always gets the same code,
    on any machine and in any order of calls (numpy's PCG64 stream is stable across versions)."""
    seed = int.from_bytes(hashlib.sha256(f"{table}\0{key}".encode()).digest()[:16], "little")
    return (np.random.default_rng(seed).standard_normal(dim) * INIT_STD).astype(np.float32)


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
        dropout_p = self.dropout if self.training else 0.0
        if attention_in_float32(x):
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=attn_mask, dropout_p=dropout_p
                ).to(q.dtype)
        else:
            # SDPA picks flash / memory-efficient kernels on a GPU and a fused CPU kernel here.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


#: Precisions of the forward passes outside pretraining (embedding, annotation, integration, mapping,
#: adaptation): Lightning's names, as ``pretrain --precision`` takes them.
PRECISIONS = ("32-true", "bf16-mixed")


def check_precision(precision: str) -> None:
    """Refuse a precision other than :data:`PRECISIONS`, naming the choices."""
    if precision not in PRECISIONS:
        raise CellWeaveInputError(f"precision {precision!r} is not supported here; choose one of "
                                  f"{', '.join(PRECISIONS)}.")


def precision_autocast(precision: str, device_type: str = "cpu") -> torch.autocast:
    """The autocast of a Lightning precision name outside Lightning: bf16 on ``device_type`` for
    ``"bf16-mixed"``, disabled for ``"32-true"`` (weights stay float32 either way)."""
    check_precision(precision)
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def attention_in_float32(x: torch.Tensor) -> bool:
    """Whether attention on ``x`` runs in float32 although bf16 autocast is on: on a CPU, while
    gradients are recorded. torch's fused CPU attention is fast in bf16 forward but its bf16
    backward is not (torch 2.13, two Xeon cores with AMX bf16 units: 0.86 s against 0.32 s in
    float32 for the tiny preset's 4 layers at 128 x 257 tokens), so mixed-precision training on a
    CPU keeps the matrix products of the linear layers in bf16 (AMX) and attention in float32;
    ``benchmarks/perf.py`` measures both. GPUs keep bf16 attention (flash kernels)."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.is_grad_enabled()


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
        # Per-feature offset of the cell head: the typical value of a feature needs no cell
        # information, so the cell embedding only has to encode how this cell deviates from it.
        self.cell_bias = nn.Linear(d, 1)
        if config.feature_offset:  # the typical value of each feature (config.feature_offset)
            self.feature_offset = nn.Embedding(config.vocab_size, 1)
        if config.profile_skip:
            # The linear path of ``config.profile_skip``: its own feature embedding (the
            # transformer's input embedding is shaped by attention, this one only by what the cell
            # state must reconstruct) and a LayerNorm that gives it the CLS state's scale.
            self.profile_embedding = nn.Embedding(config.vocab_size, d)
            self.profile_norm = nn.LayerNorm(d)
        if config.readout_latent:  # an adapted model's latent readout (config.readout_latent)
            self.readout = LatentReadout(self.pooled_dim, config.readout_latent, config.readout_hidden)
        # Recompute each block's activations in the backward pass instead of keeping them
        # (torch.utils.checkpoint): memory for compute, same outputs and gradients. A training
        # switch set by ``pretrain(gradient_checkpointing=True)``, not part of the architecture,
        # so it is not in the config and never in a saved model's config.json.
        self.gradient_checkpointing = False
        self.apply(self._init_weights)
        # Scaled init of residual projections (GPT-2): keeps the residual stream's variance flat
        # with depth.
        for name, p in self.named_parameters():
            if name.endswith("attn.out.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * config.n_layers))
        if config.feature_offset:
            nn.init.zeros_(self.feature_offset.weight)
        if config.fixed_feature_tables:  # saved with the weights, never trained
            self.set_fixed_feature_tables(True)

    def set_fixed_feature_tables(self, fixed: bool) -> None:
        """Keep the :meth:`feature_tables` out of training (``fixed``) or train them, and record it in
        ``self.config.fixed_feature_tables`` (a new config object; the old one may be shared)."""
        for table in self.feature_tables():
            table.weight.requires_grad_(not fixed)
        self.config = dataclasses.replace(self.config, fixed_feature_tables=bool(fixed))

    def add_features(self, keys: Sequence[str]) -> None:
        """Append one row per key to every per-feature table, growing ``config.vocab_size``.

        Only for a model whose tables are fixed random codes (``config.fixed_feature_tables``): a
        generated code (:func:`generated_code`, from the key) is then a draw from the same
        distribution as the stored ones, which the rest of the network was trained to read, so a
        feature the vocabulary lacked enters the input like any other. The feature offset, if any,
        gets 0 (the init of the stored offsets). Rows stay out of training, as the stored ones."""
        if not self.config.fixed_feature_tables:
            raise ValueError("add_features needs config.fixed_feature_tables: a learned table has no code to generate.")
        keys = list(keys)
        if not keys:
            return
        d = self.config.d_model
        tables = {"feature_embedding": self.feature_embedding}
        if self.config.profile_skip:
            tables["profile_embedding"] = self.profile_embedding
        for name, table in tables.items():
            rows = torch.from_numpy(np.stack([generated_code(k, name, d) for k in keys]))
            weight = torch.cat([table.weight.detach(), rows.to(table.weight)])
            setattr(self, name, nn.Embedding.from_pretrained(weight, freeze=True))
        if self.config.feature_offset:
            old = self.feature_offset.weight
            grown = nn.Embedding.from_pretrained(
                torch.cat([old.detach(), old.new_zeros(len(keys), 1)]), freeze=not old.requires_grad)
            self.feature_offset = grown
        self.config = dataclasses.replace(self.config, vocab_size=self.config.vocab_size + len(keys))

    def feature_tables(self) -> list[nn.Embedding]:
        """The per-feature tables (one row per vocabulary entry): the input feature embedding and,
        with ``config.profile_skip``, the profile path's."""
        return [self.feature_embedding] + ([self.profile_embedding] if self.config.profile_skip else [])

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.feature_embedding.weight.numel()
            if self.config.profile_skip:
                n -= self.profile_embedding.weight.numel()
        return n

    def encode(
        self,
        token_ids: torch.Tensor,
        values: torch.Tensor,
        modality_ids: torch.Tensor,
        padding_mask: torch.Tensor,
        value_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cell state ``(B, d)``, token states ``(B, L, d)``); the cell state feeds the heads.

        The cell state is the CLS state, plus :meth:`profile` of the visible values when
        ``config.profile_skip`` is set."""
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
        checkpointed = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if checkpointed:  # non-reentrant: works under DDP and with inputs that need no grad
                x = torch.utils.checkpoint.checkpoint(block, x, attn_mask, use_reentrant=False)
            else:
                x = block(x, attn_mask)
        x = self.ln_f(x)
        cell = x[:, 0]
        if self.config.profile_skip:
            visible = padding_mask if value_mask is None else padding_mask & ~value_mask
            cell = cell + self.profile(token_ids, values, visible)
        return cell, x[:, 1:]

    def profile(self, token_ids: torch.Tensor, values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """The linear path of ``config.profile_skip``: LayerNorm of the mean over ``visible``
        tokens of value x profile embedding of the feature, ``(B, d)``."""
        w = (values * visible.to(values.dtype)).unsqueeze(-1)
        bag = (self.profile_embedding(token_ids) * w).sum(1) / visible.sum(1, keepdim=True).clamp_min(1)
        return self.profile_norm(bag)

    @property
    def pooled_dim(self) -> int:
        """Width of the pooled embedding (``config.pooling``), before any latent readout."""
        return 2 * self.config.d_model if self.config.pooling == "cls+bag" else self.config.d_model

    @property
    def embedding_dim(self) -> int:
        """Width of the cell embedding that :meth:`embed_cells` returns: the latent readout's
        (``config.readout_latent``) when the model has one, else the pooled embedding's."""
        return self.config.readout_latent or self.pooled_dim

    def embed_cells(
        self,
        token_ids: torch.Tensor,
        values: torch.Tensor,
        modality_ids: torch.Tensor,
        padding_mask: torch.Tensor,
        *,
        readout: bool = True,
    ) -> torch.Tensor:
        """Cell embeddings ``(B, embedding_dim)`` read off as ``config.pooling`` says (then the
        latent readout, if the model has one and ``readout``)."""
        cls, tokens = self.encode(token_ids, values, modality_ids, padding_mask)
        return self.pool(cls, tokens, token_ids, values, padding_mask, readout=readout)

    def pool(
        self,
        cls: torch.Tensor,
        tokens: torch.Tensor,
        token_ids: torch.Tensor,
        values: torch.Tensor,
        padding_mask: torch.Tensor,
        *,
        readout: bool = True,
    ) -> torch.Tensor:
        """The cell embedding of :meth:`embed_cells` from states :meth:`encode` already computed;
        ``readout=False``: the pooled embedding even when the model has a latent readout."""
        pooled = self._pool(cls, tokens, token_ids, values, padding_mask)
        return self.readout(pooled) if readout and self.config.readout_latent else pooled

    def _pool(
        self,
        cls: torch.Tensor,
        tokens: torch.Tensor,
        token_ids: torch.Tensor,
        values: torch.Tensor,
        padding_mask: torch.Tensor,
    ) -> torch.Tensor:
        pooling = self.config.pooling
        if pooling == "cls":
            return cls
        w = padding_mask.unsqueeze(-1).to(cls.dtype)
        if pooling == "mean":
            return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)
        # Value-weighted mean of the input feature embeddings: the learned identity of the
        # features a cell expresses, weighted by how much it expresses them.
        vw = values.unsqueeze(-1) * w
        bag = (self.feature_embedding(token_ids) * vw).sum(1) / vw.sum(1).clamp_min(1e-6)
        if pooling == "bag":
            return bag
        return torch.cat([F.normalize(cls, dim=-1), F.normalize(bag, dim=-1)], dim=-1)

    def predict_from_cell(
        self, cell: torch.Tensor, token_ids: torch.Tensor, modality_ids: torch.Tensor
    ) -> torch.Tensor:
        """Values of features ``token_ids`` (B, T) predicted from cell embeddings (B, d) alone."""
        feature = self.feature_embedding(token_ids) + self.modality_embedding(modality_ids)
        query = self.cell_query(feature)
        bias = self.cell_bias(feature).squeeze(-1) + self._offset(token_ids)
        return (query * self.cell_key(cell).unsqueeze(1)).sum(-1) / math.sqrt(cell.shape[-1]) + bias

    def predict_from_cell_float32(
        self, cell: torch.Tensor, token_ids: torch.Tensor, modality_ids: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`predict_from_cell` computed in float32, also under bf16 autocast (the encoder's pass
        may be bf16): in silico perturbation reads the difference of two such predictions, often
        smaller than bf16's resolution of the predictions themselves (8-bit mantissa)."""
        with torch.autocast(cell.device.type, enabled=False):
            return self.predict_from_cell(cell.float(), token_ids, modality_ids)

    def _offset(self, feature_ids: torch.Tensor) -> torch.Tensor | float:
        """``config.feature_offset``'s learned typical value of each feature (0 without it)."""
        return self.feature_offset(feature_ids).squeeze(-1) if self.config.feature_offset else 0.0

    def predict_features(self, cell: torch.Tensor, feature_ids: torch.Tensor, modality_ids: torch.Tensor) -> torch.Tensor:
        """Values of the same features ``feature_ids`` (T,) for every cell ``(B, d)`` -> ``(B, T)``.

        The same cell head as :meth:`predict_from_cell`, with the feature side computed once
        for all cells (cross-modal imputation asks every cell for every protein or peak)."""
        feature = self.feature_embedding(feature_ids) + self.modality_embedding(modality_ids)
        query = self.cell_query(feature)
        bias = self.cell_bias(feature).squeeze(-1) + self._offset(feature_ids)
        return self.cell_key(cell) @ query.T / math.sqrt(cell.shape[-1]) + bias

    def forward(
        self,
        token_ids: torch.Tensor,
        values: torch.Tensor,
        modality_ids: torch.Tensor,
        padding_mask: torch.Tensor,
        value_mask: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
        target_modality_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        cell, tokens = self.encode(token_ids, values, modality_ids, padding_mask, value_mask)
        out = {
            "cell_embedding": cell,
            "token_states": tokens,
            "token_pred": self.value_head(tokens).squeeze(-1) + self._offset(token_ids),
            "cell_pred": self.predict_from_cell(cell, token_ids, modality_ids),
        }
        if target_ids is not None:
            out["target_pred"] = self.predict_from_cell(cell, target_ids, target_modality_ids)
        return out


def masked_value_loss(
    out: dict[str, torch.Tensor],
    values: torch.Tensor,
    value_mask: torch.Tensor,
    target_values: torch.Tensor | None = None,
    target_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Mean squared errors of hidden input values (token head) and of the values of features
    outside the input (cell head); without targets, the cell head is scored on the hidden values."""
    m = value_mask.to(values.dtype)
    n = m.sum().clamp_min(1.0)
    token = (((out["token_pred"] - values) ** 2) * m).sum() / n
    cell = (((out["cell_pred"] - values) ** 2) * m).sum() / n
    losses = {"token_mse": token, "cell_mse": cell}
    if target_values is not None and "target_pred" in out:
        # With targets, the cell head is trained on features outside the input only: a masked
        # input token is known to be among the cell's top values, a target is not, and one head
        # asked to do both learns neither well.
        tm = target_mask.to(values.dtype)
        target = (((out["target_pred"] - target_values) ** 2) * tm).sum() / tm.sum().clamp_min(1.0)
        losses["target_mse"] = target
        loss = token + target
    else:
        loss = token + cell
    losses["loss"] = loss
    return losses
