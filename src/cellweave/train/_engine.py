"""One way to run a training plan: the Lightning ``Trainer`` behind every fine-tuning fit.

Pretraining and adaptation build their own trainers (devices, precision, validation curves);
the smaller fits (fine-tuning for annotation, cross-modal decoders, perturbation heads, the
batch-adversarial adapter) all run through :func:`fit_plan`: CPU, no logger, no model summary,
an optional progress bar, and atomic checkpoints with resume when given a folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cellweave._exceptions import CellWeaveInputError
from cellweave._io_utils import remove_stale_temporaries_in

from ._plan import AtomicCheckpointIO

logger = logging.getLogger(__name__)

#: The checkpoint a run writes at the end of every epoch into its ``checkpoint_dir``, and resumes from.
LAST_CHECKPOINT = "last.ckpt"


def latest_checkpoint(folder: str | os.PathLike) -> L.pytorch.callbacks.ModelCheckpoint:
    """A checkpoint callback that keeps the latest epoch as ``folder/last.ckpt`` (what a resume reads),
    overwritten every epoch. Lightning's ``save_last`` beside a monitored top-k writes it only when the
    best checkpoint changes, so a resume after an epoch that did not improve would repeat epochs."""
    return L.pytorch.callbacks.ModelCheckpoint(
        dirpath=folder, filename=Path(LAST_CHECKPOINT).stem, save_top_k=1, every_n_epochs=1,
        enable_version_counter=False,
    )


def seed_fit(seed: int) -> None:
    """Seed Python, NumPy and torch (and dataloader workers) for a fit.

    Call it before the plan's weights are drawn, as pretraining does: the initial weights, the
    dropout masks and any unseeded sampler all come from these generators.
    """
    L.seed_everything(int(seed), workers=True, verbose=False)


class EpochStateCallback(L.Callback):
    """Keeps a fit reproducible across epochs and through a resume.

    - Before the batches of every epoch are drawn, tells the training dataset which epoch it is
      (``set_epoch``: a :class:`~cellweave.data.TokenDataset` draws fresh token samples and
      masks per epoch).
    - Saves in every checkpoint, and restores on resume, the global torch generator (dropout)
      and the ``generators`` that order the batches (a ``DataLoader(shuffle=True,
      generator=g)`` keeps its order in ``g``'s state, which Lightning does not save). A run
      resumed from the checkpoint of epoch k then continues exactly as an uninterrupted one.
    - ``draws_per_epoch``: values drawn from each of ``generators`` before every epoch's
      batches. The hand-written loops these plans replaced wrapped the loader in
      ``tqdm.auto.tqdm``, whose constructor opens (and drops) an iterator of it: one draw
      from the loader's generator per epoch. Drawing it here keeps their batch order, and so
      their published numbers, bit for bit.
    """

    def __init__(self, generators: Sequence[torch.Generator] = (), *, draws_per_epoch: int = 0) -> None:
        self.generators = list(generators)
        self.draws_per_epoch = int(draws_per_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning fetches an epoch's first batch after this hook (its iterator may be opened
        # before: the first epoch of a run, fresh or resumed, opens it at set-up; that draws the
        # DataLoader's base seed, a draw like the ones below, so the order of draws is the same).
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)
        for g in self.generators:
            for _ in range(self.draws_per_epoch):
                torch.empty((), dtype=torch.int64).random_(generator=g)

    def state_dict(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        saved = state_dict.get("generators", [])
        if len(saved) != len(self.generators):
            raise CellWeaveInputError(
                f"The checkpoint holds {len(saved)} batch-order generators but this fit has {len(self.generators)}: "
                "it was written by a different kind of fit. Start without resume, or use another checkpoint folder."
            )
        for g, s in zip(self.generators, saved):
            g.set_state(s)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's start-up lines ("GPU available: ...") and data-loading hints are noise for
    these small CPU fits; the progress bar stays."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
             "lightning.fabric.utilities.seed")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`.*")
            # The plans set their modules' modes themselves (a frozen encoder stays in eval mode).
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
            warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")  # a resumed run's folder
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def fit_plan(
    plan: L.LightningModule,
    train_loader: torch.utils.data.DataLoader,
    *,
    val_loader: torch.utils.data.DataLoader | None = None,
    max_epochs: int = 1,
    max_steps: int = -1,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    generators: Sequence[torch.Generator] = (),
    draws_per_epoch: int = 0,
    callbacks: Sequence[L.Callback] = (),
    precision: str = "32-true",
) -> L.Trainer:
    """Fit ``plan`` on the CPU with Lightning; returns the trainer.

    Parameters
    ----------
    plan
        The :class:`~lightning.LightningModule` (its optimizer, schedule, loss and any
        early stopping are its own).
    train_loader, val_loader
        Batches to train on; held-out batches validated after every epoch (the plan decides
        what to do with them: early stopping, keeping the best epoch).
    max_epochs, max_steps
        Stop after this many epochs, or optimizer steps (``-1``: no cap).
    progress
        Show Lightning's progress bar.
    checkpoint_dir
        Write ``last.ckpt`` (atomically: a killed run leaves the previous one intact) at the end
        of every epoch into this folder. ``None``: no checkpoints.
    resume
        Continue from ``checkpoint_dir/last.ckpt``: weights, optimizer, schedule, epoch, the
        plan's own record and the generators' states, so the run ends as an uninterrupted one.
    generators
        The torch generators that order ``train_loader``'s batches: saved in checkpoints.
    draws_per_epoch
        Values drawn from each of ``generators`` before every epoch (see :class:`EpochStateCallback`).
    callbacks
        More Lightning callbacks.
    precision
        Lightning's precision (``"32-true"``, ``"bf16-mixed"``: the steps under bf16 autocast,
        weights and optimizer float32).

    Seed before building the plan (:func:`seed_fit`): its initial weights come from the seed too.
    """
    ckpt_path = None
    all_callbacks: list[L.Callback] = [EpochStateCallback(generators, draws_per_epoch=draws_per_epoch), *callbacks]
    if checkpoint_dir is not None:
        folder = Path(checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries_in(folder):
            logger.info("Removed %s, left by a run that was killed while writing it", stale.name)
        all_callbacks.append(latest_checkpoint(folder))
        if resume:
            ckpt_path = folder / LAST_CHECKPOINT
            if not ckpt_path.is_file():
                raise CellWeaveInputError(f"resume was asked for but {ckpt_path} does not exist; "
                                          "run without resume first.")
    elif resume:
        raise CellWeaveInputError("resume needs the checkpoint folder of the run to continue (checkpoint_dir).")
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=int(max_epochs),
            max_steps=int(max_steps),
            callbacks=all_callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=checkpoint_dir is not None,
            logger=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=None if val_loader is not None else 0,
            # The CPU kernels these fits use are deterministic already; torch's global
            # deterministic switch would outlive the fit and is left alone.
            deterministic=False,
            default_root_dir=checkpoint_dir,
            precision=precision,
        )
        trainer.fit(plan, train_loader, val_loader, ckpt_path=ckpt_path)
    return trainer
