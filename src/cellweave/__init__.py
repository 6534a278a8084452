"""cellweave: multimodal foundation models for molecular cell biology."""

from __future__ import annotations

import logging

from ._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

from . import datasets, genes, io, pl, tl  # noqa: E402
from .models import CellWeave  # noqa: E402
from .nn import CellWeaveConfig  # noqa: E402

__all__ = ["CellWeave", "CellWeaveConfig", "__version__", "datasets", "genes", "io", "pl", "tl"]
