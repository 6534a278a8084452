"""Reference cells without a label (NaN, empty or blank string) in annotate and map_query: left out
with a warning that counts them; a reference with no label at all is refused with the fix."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import cellweave
from cellweave._exceptions import CellWeaveInputError


@pytest.fixture()
def reference_and_query(tiny_vocab_and_data):
    _, adata = tiny_vocab_and_data
    reference, query = adata[:90].copy(), adata[90:].copy()
    labels = reference.obs["cell_type"].astype(str).to_numpy(dtype=object)
    labels[:3] = np.nan
    labels[3:5] = ""
    labels[5:7] = "  "
    reference.obs["label"] = labels
    return reference, query


@pytest.mark.parametrize("verb", ["annotate", "map_query"])
@pytest.mark.parametrize("categorical", [False, True])
def test_unlabelled_reference_cells_are_left_out_with_a_count(reference_and_query, tiny_rna_model, caplog, verb,
                                                              categorical) -> None:
    reference, query = reference_and_query
    if categorical:
        reference.obs["label"] = reference.obs["label"].astype("category")
    with caplog.at_level(logging.WARNING, logger="cellweave"):
        getattr(cellweave.tl, verb)(query, reference=reference, label_key="label", model=tiny_rna_model,
                                    progress=False)
    warned = [r.getMessage() for r in caplog.records if "Leaving out" in r.getMessage()]
    assert warned and warned[0].startswith("Leaving out 7 of 90 reference cells with no 'label' label (NaN or empty)")
    predicted = set(query.obs["cellweave_prediction"].astype(str))
    assert "" not in predicted and "  " not in predicted and "nan" not in predicted
    record = query.uns["cellweave"][verb]
    assert record["n_reference"] == 83  # 90 cells, 7 without a label
    assert set(record["classes"]) == set(reference.obs["cell_type"].astype(str)[7:])


def test_a_reference_without_any_label_is_refused(reference_and_query, tiny_rna_model) -> None:
    reference, query = reference_and_query
    reference.obs["label"] = ["", " ", np.nan] * (reference.n_obs // 3)
    for verb in ("annotate", "map_query"):
        with pytest.raises(CellWeaveInputError,
                           match=r"^reference.obs\['label'\] has no label in any of its 90 cells \(all NaN or empty\)\. "
                                 r"Fill in the labels, or pass the column that holds them as label_key"):
            getattr(cellweave.tl, verb)(query, reference=reference, label_key="label", model=tiny_rna_model)
    assert "cellweave_prediction" not in query.obs
