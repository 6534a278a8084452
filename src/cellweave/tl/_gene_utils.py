"""Shared plumbing of the gene-level tasks (grn, markers, gene_map): which vocabulary token each
gene of the data is, batches of tokenized cells, and the model's attention maps.

Only public model APIs are used (``CellWeave.prepare``, ``CellWeave.tokenizer``,
``CellWeaveModule.encode`` / ``predict_from_cell``, the feature embedding table); attention is
recomputed from each block's ``qkv`` weights inside a forward hook, so the encoder itself is
untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cellweave._exceptions import CellWeaveInputError

if TYPE_CHECKING:
    from anndata import AnnData

    from cellweave.data import CellCorpus
    from cellweave.models import CellWeave

logger = logging.getLogger(__name__)


def rna_adata(data: Any) -> AnnData:
    """The RNA AnnData of an AnnData (itself) or a MuData (:func:`cellweave.io.rna_modality`)."""
    from cellweave.io import rna_modality

    return rna_modality(data, purpose="a gene-level task")


def var_token_ids(adata: AnnData, model: CellWeave, *, organism: str | None = None) -> np.ndarray:
    """Vocabulary id of every gene (``var``) of ``adata``; -1 where the model does not know it."""
    from cellweave.genes import infer_organism, map_features

    org = organism or infer_organism(adata.var_names, adata.var.get("gene_id"))
    fmap = map_features(adata.var, modality="rna", organism=org, aliases=model.vocab.gene_aliases)
    return model.vocab.lookup(fmap.keys).astype(np.int64)


def prepare_rna(adata: AnnData, model: CellWeave, *, layer: str | None = None,
                organism: str | None = None) -> tuple[CellCorpus, np.ndarray]:
    """The RNA corpus of ``adata`` and its columns' vocabulary ids (the genes the model sees)."""
    corpus = model.prepare(adata, layer=layer, organism=organism, modalities=["rna"])
    block = corpus.blocks[0]
    if block.token_ids.size < 2:
        raise CellWeaveInputError(
            f"Only {block.token_ids.size} gene(s) of the data are in the model's vocabulary; gene-level "
            "tasks need at least 2. Check that var_names are gene symbols or var['gene_id'] holds Ensembl IDs."
        )
    return corpus, block.token_ids


def token_batches(
    model: CellWeave, corpus: CellCorpus, cells: np.ndarray, *, batch_size: int = 64, seed: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Padded token batches of ``cells`` (positions in ``corpus``), tokenized as ``embed`` does."""
    from cellweave.data import TokenDataset, collate_tokens

    dataset = TokenDataset([corpus.subset(np.asarray(cells))], model.tokenizer, mode="embed", seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_tokens)
    device = next(model.module.parameters()).device
    for batch in loader:
        yield {k: v.to(device) for k, v in batch.items()}


def local_columns(token_ids: torch.Tensor, padding_mask: torch.Tensor, vocab_to_col: torch.Tensor) -> torch.Tensor:
    """Column (gene of the data) of every token; -1 on padding and on tokens of other modalities."""
    safe = token_ids.clamp(0, vocab_to_col.numel() - 1)
    col = vocab_to_col[safe]
    return torch.where(padding_mask, col, torch.full_like(col, -1))


def vocab_to_col_map(model: CellWeave, col_token_ids: np.ndarray) -> torch.Tensor:
    """A lookup vocab id -> column index (-1 for ids that are not columns)."""
    m = torch.full((len(model.vocab),), -1, dtype=torch.long)
    m[torch.as_tensor(col_token_ids, dtype=torch.long)] = torch.arange(len(col_token_ids))
    return m


class AttentionRecorder:
    """Collects each block's attention probabilities (heads averaged) during ``encode``.

    The probabilities are recomputed from the block's ``qkv`` projection and the boolean mask
    the block receives, exactly as ``scaled_dot_product_attention`` forms them (no dropout at
    eval). Use as a context manager around forward passes.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.maps: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def _hook(self, attn: torch.nn.Module, inputs: tuple, _output: Any) -> None:
        x, mask = inputs[0], inputs[1] if len(inputs) > 1 else None
        b, n, d = x.shape
        h = attn.n_heads
        q, k, _ = attn.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k = q.float(), k.float()  # bf16 under autocast: the probabilities in float32 from its q and k
        with torch.autocast(q.device.type, enabled=False):
            scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            self.maps.append(scores.softmax(-1).mean(1))  # (B, n, n), heads averaged

    def __enter__(self) -> AttentionRecorder:
        blocks = getattr(self.module, "blocks", [])
        for block in blocks:
            self._handles.append(block.attn.register_forward_hook(self._hook))
        if not self._handles:
            raise CellWeaveInputError("This model has no attention blocks to read attention from.")
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def pop_mean(self) -> torch.Tensor:
        """Mean attention over the recorded layers, ``(B, n, n)``, and forget them."""
        out = torch.stack(self.maps).mean(0)
        self.maps.clear()
        return out


def subsample(n: int, k: int | None, rng: np.random.Generator, idx: np.ndarray | None = None) -> np.ndarray:
    """At most ``k`` sorted positions of ``idx`` (default ``arange(n)``), drawn without replacement."""
    idx = np.arange(n) if idx is None else np.asarray(idx)
    if k is None or len(idx) <= k:
        return idx
    return np.sort(rng.choice(idx, size=k, replace=False))


def log_normalized(adata: AnnData, layer: str | None = None) -> Any:
    """log1p(counts per 10k) of ``adata`` as CSR (see :func:`cellweave.data.log_normalize`)."""
    from cellweave.data import log_normalize

    return log_normalize(adata, layer=layer)
