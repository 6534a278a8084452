"""The ``atac`` modality: its spec, and what it does to features."""

from __future__ import annotations

import pandas as pd

from cellweave import modalities


def test_spec() -> None:
    atac = modalities.get("Peaks")
    assert atac is modalities.ATAC
    assert (atac.feature_keys, atac.key_prefix, atac.needs_organism) == ("genomic_bin", "atac:", False)
    assert dict(atac.default_context) == {"tiny": 128, "small": 512, "base": 1024}


def test_peaks_are_keyed_on_genomic_bins() -> None:
    from cellweave.genes import map_features, symbol_for

    fmap = map_features(pd.DataFrame(index=["chr1:1000-1500", "1:19999-20001", "not_a_peak"]), modality="atac")
    assert list(fmap.keys) == ["atac:GRCh38:chr1:0", "atac:GRCh38:chr1:20000", ""]
    assert symbol_for(fmap.keys[:1]).tolist() == ["GRCh38:chr1:0"]
