"""``atac``: chromatin accessibility (scATAC-seq peaks, the ATAC half of a multiome)."""

from __future__ import annotations

from ._registry import Modality, register

ATAC = register(Modality(
    name="atac",
    aliases=("peaks",),
    feature_keys="genomic_bin",
    key_prefix="atac:",
    normalization="log1p_cp10k",
    readout="log1p_cp10k",
    units="log1p(counts per 10k)",
    description="chromatin accessibility: peak counts, keyed by fixed genomic bins of a named genome build",
    default_context={"tiny": 128, "small": 512, "base": 1024},
))
