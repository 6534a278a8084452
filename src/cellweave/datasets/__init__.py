"""Registered public datasets: pinned sources, a local mirror, a cache, and converters.

``cellweave.datasets.load(name)`` reads from ``$CELLWEAVE_DATA_DIR`` (a mirror), then the user
cache, then downloads the pinned source and converts it. ``cellweave datasets list|info|fetch``
is the command-line face.
"""

from ._info import DatasetInfo
from ._registry import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    REGISTRY,
    convert,
    data_dir,
    fetch,
    has_converter,
    info,
    is_available,
    list,
    load,
    path,
)

list_datasets = list

__all__ = [
    "CACHE_DIR_ENV", "DATA_DIR_ENV", "REGISTRY", "DatasetInfo", "convert", "data_dir", "fetch", "has_converter",
    "info", "is_available", "list", "list_datasets", "load", "path",
]
