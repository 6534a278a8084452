"""cellweave: multimodal foundation models for molecular cell biology."""

from __future__ import annotations

import logging

from ._system import keep_torch_threads
from ._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())
keep_torch_threads()  # numba's pool would otherwise reset torch's thread limit at the first HVG call

from . import datasets, genes, io, pl, tl  # noqa: E402
from .models import CellWeave  # noqa: E402
from .nn import CellWeaveConfig  # noqa: E402

__all__ = ["CellWeave", "CellWeaveConfig", "__version__", "datasets", "genes", "io", "pl", "tl"]
