"""Errors a user can act on.

Every error raised for bad input names the problem and the fix, so that a user never has to read
a traceback from deep inside numpy or torch to understand what went wrong.
"""

from __future__ import annotations


class CellWeaveInputError(ValueError):
    """The input data cannot be used as given; the message says why and how to fix it."""


class CellWeaveModelError(RuntimeError):
    """A model folder or shipped model name could not be resolved or loaded."""


class CellWeaveDataError(CellWeaveInputError):
    """A dataset or reference table could not be found locally nor fetched; the message names the
    item, its source and the variable that points cellweave at a local mirror."""
