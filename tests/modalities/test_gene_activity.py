"""The ``gene_activity`` modality: its spec, and its features (shared with RNA)."""

from __future__ import annotations

import pandas as pd

from cellweave import modalities


def test_spec() -> None:
    ga = modalities.get("Gene Activity")
    assert ga is modalities.GENE_ACTIVITY
    assert (ga.feature_keys, ga.key_prefix, ga.normalization) == ("gene", "", "log1p_cp10k")
    assert dict(ga.default_context) == {"tiny": 128, "small": 512, "base": 1024}


def test_features_share_rna_keys() -> None:
    from cellweave.genes import map_features

    var = pd.DataFrame(index=["TP53", "CD3E"])
    assert list(map_features(var, modality="gene_activity", organism="human").keys) == list(
        map_features(var, modality="rna", organism="human").keys)
