"""Names shared by every layer (pure Python: importable from ``genes`` as well as ``nn``)."""

from __future__ import annotations

#: Modalities the model has embeddings for, in the order of their modality ids.
MODALITIES: tuple[str, ...] = ("rna", "prot", "atac", "gene_activity")

#: Modalities found in bundled MuData files that carry labels rather than cell state.
#: They are skipped (with a log message) instead of raising "unknown modality".
NON_MODEL_MODALITIES: tuple[str, ...] = ("guide", "hto")

MODALITY_ID: dict[str, int] = {name: i for i, name in enumerate(MODALITIES)}

#: Keys written into AnnData by cellweave.
EMBEDDING_KEY = "X_cellweave"
UNS_KEY = "cellweave"
