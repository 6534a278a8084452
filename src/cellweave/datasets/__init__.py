"""Small real datasets bundled in the repository's ``data/`` folder (see data/README.md)."""

from ._registry import REGISTRY, DatasetInfo, data_dir, list, load, path

list_datasets = list

__all__ = ["REGISTRY", "DatasetInfo", "data_dir", "list", "list_datasets", "load", "path"]
