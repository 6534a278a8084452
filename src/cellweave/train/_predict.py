"""Cell embeddings on several devices through Lightning's predict loop, in cell order."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch

from cellweave.data import TokenDataset, collate_tokens

if TYPE_CHECKING:
    from cellweave.data import CellCorpus
    from cellweave.models import CellWeave
    from cellweave.nn import CellWeaveModule

logger = logging.getLogger(__name__)


class CorporaCells(torch.utils.data.Dataset):
    """The cells of several corpora, one after another, each tokenized exactly as
    :meth:`CellWeave.embed_corpus <cellweave.models.CellWeave.embed_corpus>` tokenizes it (the
    token sampling is seeded by the cell's position in its own corpus); an item's ``index`` is
    its position in the concatenation, which puts the gathered embeddings back in order."""

    def __init__(self, corpora: list[CellCorpus], tokenizer, *, seed: int) -> None:
        self.parts = [TokenDataset([c], tokenizer, mode="embed", seed=seed) for c in corpora]
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, idx: int) -> dict:
        k = int(np.searchsorted(self.offsets, idx, side="right") - 1)
        item = self.parts[k][int(idx - self.offsets[k])]
        item["index"] = int(idx)
        return item


class EmbedPlan(L.LightningModule):
    """Predict-only plan: every rank embeds the cells Lightning's distributed sampler gives it
    (each cell on exactly one rank), then the ranks all-gather the (position, embedding) pairs,
    so every rank ends with all embeddings in cell order in :attr:`embeddings`."""

    def __init__(self, module: CellWeaveModule, n_cells: int) -> None:
        super().__init__()
        self.module = module
        self.n_cells = int(n_cells)
        self.embeddings: np.ndarray | None = None

    def on_predict_epoch_start(self) -> None:
        self._positions: list[torch.Tensor] = []
        self._parts: list[torch.Tensor] = []

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        cell = self.module.embed_cells(batch["token_ids"], batch["values"], batch["modality_ids"],
                                       batch["padding_mask"])
        self._positions.append(batch["index"])
        self._parts.append(cell.float())

    def on_predict_epoch_end(self) -> None:
        width = self.module.embedding_dim
        positions = (torch.cat(self._positions) if self._positions
                     else torch.zeros(0, dtype=torch.long, device=self.device))
        parts = torch.cat(self._parts) if self._parts else torch.zeros(0, width, device=self.device)
        if self.trainer.world_size > 1:
            # all_gather needs the same shape on every rank; the distributed sampler of predict
            # gives ranks uneven shares, so pad to the largest and mark padding with position -1.
            counts = self.all_gather(torch.tensor(positions.numel(), device=self.device))
            longest = int(counts.max())
            pad = longest - positions.numel()
            positions = torch.cat([positions, positions.new_full((pad,), -1)])
            parts = torch.cat([parts, parts.new_zeros(pad, width)])
            positions = self.all_gather(positions).reshape(-1)
            parts = self.all_gather(parts).reshape(-1, width)
        keep = positions >= 0
        positions, parts = positions[keep].cpu().numpy(), parts[keep].cpu().numpy()
        if positions.size != self.n_cells or np.unique(positions).size != self.n_cells:
            raise RuntimeError(f"Embedded {np.unique(positions).size} distinct cells of {self.n_cells} "
                               f"({positions.size} embeddings): the distributed sampler did not cover every "
                               "cell exactly once.")
        out = np.zeros((self.n_cells, width), dtype=np.float32)
        out[positions] = parts
        self.embeddings = out


def embed_corpora(
    model: CellWeave,
    corpora: list[CellCorpus],
    *,
    batch_size: int = 128,
    seed: int = 0,
    devices: int | str = 1,
    accelerator: str = "auto",
    num_nodes: int = 1,
    strategy: str = "ddp",
    progress: bool = True,
    precision: str = "32-true",
) -> list[np.ndarray]:
    """Embeddings of each corpus, computed by Lightning's predict on ``devices`` x ``num_nodes``
    processes; the same numbers as :meth:`CellWeave.embed_corpus` per corpus, in the same order.

    Every rank returns all embeddings. With the default ``strategy="ddp"`` Lightning starts the
    other processes by running the calling script (or command) again, as in pretraining; under
    ``torchrun`` or SLURM the launcher has started them. Interactive sessions cannot do this:
    use one device there. Write outputs from global rank 0 only. ``precision``: Lightning's
    (``"bf16-mixed"``: the forward pass under bf16 autocast).
    """
    dataset = CorporaCells(corpora, model.tokenizer, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_tokens)
    device = next(model.module.parameters()).device
    was_training = model.module.training
    model.module.eval()
    plan = EmbedPlan(model.module, len(dataset))
    trainer = L.Trainer(accelerator=accelerator, devices=devices, num_nodes=int(num_nodes), strategy=strategy,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=progress, precision=precision)
    trainer.predict(plan, loader, return_predictions=False)
    model.module.to(device).train(was_training)
    logger.info("Embedded %d cells on %d processes", len(dataset), trainer.world_size)
    bounds = dataset.offsets
    return [plan.embeddings[bounds[k]:bounds[k + 1]] for k in range(len(corpora))]
