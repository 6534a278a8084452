"""``gene_activity``: gene-level summaries of accessibility (ATAC counts over gene bodies and promoters)."""

from __future__ import annotations

from ._registry import Modality, register

GENE_ACTIVITY = register(Modality(
    name="gene_activity",
    aliases=("gene activity",),
    feature_keys="gene",
    key_prefix="",  # shares gene keys with rna; the modality embedding tells the two apart
    normalization="log1p_cp10k",
    readout="log1p_cp10k",
    units="log1p(counts per 10k)",
    description="gene activity scores (accessibility summed over each gene), keyed like RNA genes",
    default_context={"tiny": 128, "small": 512, "base": 1024},
))
