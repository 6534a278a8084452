"""``pl.training``: loss curves of a model's training history."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellweave._exceptions import CellWeaveInputError

from ._keys import _listing, finish
from ._plots import loss_curves

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _history(model_or_history: Any) -> list[dict[str, Any]]:
    if isinstance(model_or_history, (str, os.PathLike)):
        path = Path(model_or_history)
        path = path / "history.json" if path.is_dir() else path
        if not path.is_file():
            raise CellWeaveInputError(f"No training history at {path}: a model folder written by `cellweave pretrain` "
                                      "keeps it in history.json.")
        return json.loads(path.read_text())
    if hasattr(model_or_history, "history"):
        return list(model_or_history.history)
    return list(model_or_history)


def training(
    model_or_history: Any,
    *,
    title: str = "Pretraining losses",
    ax: Axes | None = None,
    show: bool | None = None,
) -> Figure | Axes:
    """Training and validation losses per epoch (epoch 0 = before training), on a log scale.

    Parameters
    ----------
    model_or_history
        A :class:`~cellweave.CellWeave` (its ``history``), a model folder or its ``history.json``,
        or the list of per-epoch records (``epoch``, ``train_loss``, ``val_loss``, ``val_token_mse``).
    title
        Axes title.
    ax, show
        Draw into this Axes (returned); call ``plt.show()``.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, or ``ax`` when given.

    Examples
    --------
    >>> cellweave.pl.training("my_model/")
    >>> cellweave.pl.training(cellweave.CellWeave.load("my_model/"))
    """
    history = _history(model_or_history)
    if not history:
        raise CellWeaveInputError("The training history is empty: this model has no per-epoch record (the shipped "
                                  "models and models trained before history.json was written have none).")
    if any("epoch" not in h for h in history):
        raise CellWeaveInputError(f"Every record of the history needs an 'epoch'; the first has {_listing(history[0])}.")
    fig = loss_curves(history, title=title, ax=ax)
    return finish(fig, ax, show)
