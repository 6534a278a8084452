"""Choosing a pretraining run's epoch by a held-out transfer score: the kNN monitor.

Issue 12 found that the masked-value loss on validation cells keeps falling while the cell embedding
carries less of the cell types of new data (the synthetic positive control's 12-epoch run: validation
loss lower at every epoch, held-out kNN macro-F1 highest at epoch 6 of 12). Self-supervised vision
models are watched the same way: DINO (Caron et al., 2021) reports a weighted kNN classifier on
frozen features during training, and solo-learn (da Costa et al., 2022) and lightly ship it as an
online callback. Here the classifier is the development panel's own (k = 15, stratified 5-fold
macro-F1 within each monitor dataset), the features are the embedding the saved model would give,
and the monitor datasets are labelled cells outside the pretraining corpus.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch

from cellweave._metrics import knn_accuracy

#: The metric the monitor logs (mean over its datasets), in the history, the cards and the checkpoints.
KNN_METRIC = "val_knn_f1"


class KnnMonitorCallback(L.Callback):
    """After every validation, the kNN macro-F1 of the current cell embedding on held-out labelled cells.

    ``embed(module)`` returns each monitor dataset's embedding ``{name: (n_cells, dim)}`` by the
    training module's current weights (it must not change the module: embed a copy where the
    embedding could add features); ``labels`` holds each dataset's cell labels in the same order.
    The mean over datasets is logged as :data:`KNN_METRIC` (``val_knn_f1``), so it enters the
    run's history, its snapshots' cards and can be monitored by a ``ModelCheckpoint``; each
    dataset's score is kept in :attr:`scores`, with the seconds the scoring took (its cost per epoch).
    ``seed`` draws the folds (``pretrain`` keeps 0, the panel's, so runs of any seed are scored
    alike). With ``keep_best`` the weights of the epoch with the highest mean are kept (on the
    CPU) in :attr:`best`, for the run to end on them. The embedding runs under the trainer's
    precision (bf16 autocast in a bf16-mixed run). Every rank computes the same score from the
    same weights, so nothing is gathered. State (scores, best epoch and its
    weights) travels in the checkpoint, so a resumed run chooses among all its epochs.
    """

    def __init__(self, embed: Callable[[torch.nn.Module], dict[str, np.ndarray]], labels: dict[str, np.ndarray], *,
                 k: int = 15, n_splits: int = 5, seed: int = 0, keep_best: bool = False) -> None:
        self.embed = embed
        self.labels = {name: np.asarray(y) for name, y in labels.items()}
        self.k, self.n_splits, self.seed = int(k), int(n_splits), int(seed)
        self.keep_best = bool(keep_best)
        self.scores: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    def score(self, module: torch.nn.Module) -> dict[str, float]:
        """Each monitor dataset's kNN macro-F1 under ``module``'s weights."""
        embeddings = self.embed(module)
        return {name: knn_accuracy(embeddings[name], y, k=self.k, n_splits=self.n_splits, seed=self.seed)["macro_f1"]
                for name, y in self.labels.items()}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        start = time.perf_counter()
        with trainer.precision_plugin.forward_context():
            per_dataset = self.score(pl_module.module)
        seconds = time.perf_counter() - start
        value = float(np.mean(list(per_dataset.values())))
        pl_module.log(KNN_METRIC, value, on_step=False, on_epoch=True)
        epoch, step = trainer.current_epoch + 1, int(trainer.global_step)
        self.scores = [s for s in self.scores if s["epoch"] != epoch]  # a resumed run repeats an epoch
        self.scores.append({"epoch": epoch, "step": step, KNN_METRIC: value, "per_dataset": per_dataset,
                            "seconds": round(seconds, 2)})
        if self.keep_best and (self.best is None or value > self.best[KNN_METRIC]):
            self.best = {"epoch": epoch, "step": step, KNN_METRIC: value,
                         "state": {k: v.detach().cpu().clone() for k, v in pl_module.module.state_dict().items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scores = list(state_dict.get("scores", []))
        self.best = state_dict.get("best")


def module_copy_embedder(wrap: Callable[[torch.nn.Module], Any], datasets: dict[str, Any], *, seed: int = 0,
                         ) -> Callable[[torch.nn.Module], dict[str, np.ndarray]]:
    """``embed`` for :class:`KnnMonitorCallback`: each dataset embedded by ``wrap(copy of the module)``
    (a :class:`~cellweave.models.CellWeave` with the config the run saves), as the saved model would
    embed it. The module is copied because embedding new data may add generated feature codes to the
    model that embeds it."""

    def embed(module: torch.nn.Module) -> dict[str, np.ndarray]:
        model = wrap(copy.deepcopy(module))
        return {name: model.embed(data, seed=seed, progress=False)[0] for name, data in datasets.items()}

    return embed
