"""The ``prot`` modality: its spec, and what it does to features and values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellweave import modalities


def test_spec() -> None:
    prot = modalities.get("prot")
    assert prot is modalities.PROT
    assert {modalities.get(a).name for a in ("ADT", "protein", "Proteins", "Antibody Capture")} == {"prot"}
    assert (prot.feature_keys, prot.key_prefix, prot.readout) == ("protein", "prot:", "clr")
    assert dict(prot.default_context) == {"tiny": 64, "small": 128, "base": 256}


def test_antibodies_are_keyed_on_their_target_gene() -> None:
    from cellweave.genes import map_features, symbol_for

    var = pd.DataFrame({"gene_symbol": ["CD3E", ""]}, index=["CD3_TotalSeqB", "CD45RA"])
    fmap = map_features(var, modality="prot", organism="human")
    assert list(fmap.keys) == ["prot:ENSG00000198851", "prot:ENSG00000081237:CD45RA"]
    assert symbol_for(fmap.keys).tolist() == ["CD3E", "PTPRC (CD45RA)"]


def test_reference_values_are_clr() -> None:
    import anndata as ad

    from cellweave.tl._impute import reference_target_values

    counts = np.array([[1.0, 3.0, 0.0], [4.0, 0.0, 2.0]], dtype=np.float32)
    values, units = reference_target_values(ad.AnnData(counts), "prot")
    L = np.log1p(counts.astype(np.float64))
    np.testing.assert_allclose(values, L - L.mean(1, keepdims=True))
    assert units == modalities.PROT.units and units.startswith("CLR")
