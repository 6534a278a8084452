"""``rna``: gene expression counts (scRNA-seq, snRNA-seq, spatial transcriptomics)."""

from __future__ import annotations

from ._registry import Modality, register

RNA = register(Modality(
    name="rna",
    aliases=("gex", "gene expression", "gene_expression"),
    feature_keys="gene",
    key_prefix="",
    normalization="log1p_cp10k",
    readout="log1p_cp10k",
    units="log1p(counts per 10k)",
    description="gene expression (UMI or read counts per gene)",
    # RNA dominates cost: thousands of genes are detected per cell; the top ones carry cell type.
    default_context={"tiny": 256, "small": 1024, "base": 2048},
))
