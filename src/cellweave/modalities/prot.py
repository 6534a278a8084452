"""``prot``: surface proteins measured by antibody-derived tags (CITE-seq, REAP-seq, ADT panels)."""

from __future__ import annotations

from ._registry import Modality, register

PROT = register(Modality(
    name="prot",
    aliases=("adt", "protein", "proteins", "antibody capture", "antibody_capture"),
    feature_keys="protein",
    key_prefix="prot:",
    normalization="log1p_cp10k",
    readout="clr",
    units="CLR of ADT counts (log1p(x) minus the cell's mean over proteins)",
    description="surface proteins (antibody-derived tag counts), keyed by the antibody's target gene",
    # Panels hold tens to a few hundred antibodies.
    default_context={"tiny": 64, "small": 128, "base": 256},
))
