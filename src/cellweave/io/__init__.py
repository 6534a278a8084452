"""Reading, writing and validating AnnData / MuData input."""

from . import _validate as validate
from ._read_write import SUPPORTED_SUFFIXES, check_readable, h5ad_matrix_bytes, read, write
from ._validate import (
    ValidationReport,
    as_modalities,
    check_modalities,
    check_unique_cell_names,
    detect_x_kind,
    rna_modality,
    validate_matrix,
)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ValidationReport",
    "as_modalities",
    "check_modalities",
    "check_readable",
    "h5ad_matrix_bytes",
    "check_unique_cell_names",
    "detect_x_kind",
    "read",
    "rna_modality",
    "validate",
    "validate_matrix",
    "write",
]
