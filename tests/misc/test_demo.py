"""The demo's answer to "do datasets of one tissue overlap by cell type?" (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from cellweave._exceptions import CellWeaveInputError


@pytest.fixture(scope="module")
def two_datasets():
    from cellweave.data import synthetic_adata

    data = synthetic_adata(n_cells=200, n_genes=200, n_batches=2, seed=1)
    data.obs["dataset"] = data.obs["batch"].astype(str)
    labels = data.obs["cell_type"].astype(str).to_numpy().astype(object)
    labels[data.obs["dataset"].to_numpy() == sorted(set(data.obs["dataset"]))[1]] = ""  # second one unlabelled
    return data, labels


def test_tissue_overlap_scores_baselines_zero_shot_and_adapted(tiny_rna_model, two_datasets) -> None:
    from cellweave.demo import tissue_overlap

    data, labels = two_datasets
    table, reps = tissue_overlap(data, labels, model=tiny_rna_model, seed=0, progress=False)
    assert table["representation"].tolist() == [
        "PCA (HVG)", "Harmony on PCA", "cellweave zero-shot", "cellweave zero-shot + Harmony",
        "cellweave adapted", "cellweave adapted + Harmony"]
    by = table.set_index("representation")
    assert by.loc["PCA (HVG)", "labelled kNN macro-F1"] > 0.9  # the types are 6-fold blocks of genes
    assert by.loc["Harmony on PCA", "dataset mixing"] > by.loc["PCA (HVG)", "dataset mixing"]
    assert ((by["dataset mixing"] >= 0) & (by["dataset mixing"] <= 1)).all()
    # Only the adaptation is timed, and the adapted model embeds cells as its readout's latent.
    assert by["seconds to adapt"].notna().tolist() == [False, False, False, False, True, False]
    assert reps["cellweave adapted"].shape == (data.n_obs, 10)
    assert reps["cellweave zero-shot"].shape[1] != 10


def test_tissue_overlap_without_adaptation_and_bad_input(tiny_rna_model, two_datasets) -> None:
    from cellweave.demo import tissue_overlap

    data, labels = two_datasets
    table, reps = tissue_overlap(data, labels, model=tiny_rna_model, adapt=False, seed=0, progress=False)
    assert len(table) == 4 and "cellweave adapted" not in reps
    # F1 reads labelled cells only: giving the unlabelled dataset's cells random types would change it.
    noisy = labels.copy()
    blank = noisy == ""
    noisy[blank] = np.random.default_rng(0).choice(["A", "B", "C"], blank.sum())
    other, _ = tissue_overlap(data, noisy, model=tiny_rna_model, adapt=False, seed=0, progress=False)
    assert other.loc[0, "labelled kNN macro-F1"] < table.loc[0, "labelled kNN macro-F1"]
    assert other.loc[0, "dataset mixing"] == pytest.approx(table.loc[0, "dataset mixing"])
    with pytest.raises(CellWeaveInputError, match="one per cell"):
        tissue_overlap(data, labels[:10], model=tiny_rna_model, adapt=False, progress=False)
    with pytest.raises(CellWeaveInputError, match="batch_key="):
        tissue_overlap(data, labels, model=tiny_rna_model, batch_key="study", adapt=False, progress=False)
