"""The ``rna`` modality: its spec, and what it does to features and values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellweave import modalities


def test_spec() -> None:
    rna = modalities.get("rna")
    assert rna is modalities.RNA and modalities.PRIMARY == "rna"
    assert {modalities.get(a).name for a in ("RNA", "GEX", "Gene Expression", "gene_expression")} == {"rna"}
    assert (rna.feature_keys, rna.key_prefix, rna.normalization, rna.readout) == ("gene", "", "log1p_cp10k",
                                                                                  "log1p_cp10k")
    assert dict(rna.default_context) == {"tiny": 256, "small": 1024, "base": 2048}


def test_features_are_keyed_on_ensembl_ids() -> None:
    from cellweave.genes import map_features

    fmap = map_features(pd.DataFrame(index=["TP53", "NOTAGENE123"]), modality="rna", organism="human")
    assert list(fmap.keys) == ["ENSG00000141510", ""]


def test_counts_become_log1p_counts_per_10k() -> None:
    from cellweave.data._corpus import _normalize

    X = sp.csr_matrix(np.array([[1.0, 3.0], [0.0, 2.0]], dtype=np.float32))
    got = _normalize(X, "counts", "log1p", modalities.RNA.normalization).toarray()
    np.testing.assert_allclose(got, np.log1p(np.array([[2500.0, 7500.0], [0.0, 10000.0]])), rtol=1e-6)
