"""Label transfer on real bundled data with the shipped model: accuracy, novelty, errors, CLI."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

import cellweave
from cellweave._exceptions import CellWeaveInputError
from cellweave.cli import main

LABEL = "cell_type"


@pytest.fixture(scope="module")
def split(cellbench):
    """Random 70/30 reference/query split of the cells (seed 0)."""
    perm = np.random.default_rng(0).permutation(cellbench.n_obs)
    n_ref = int(0.7 * cellbench.n_obs)
    return cellbench[perm[:n_ref]].copy(), cellbench[perm[n_ref:]].copy()


def test_within_dataset_label_transfer(split, model) -> None:
    reference, query = split
    out = cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=model, progress=False, copy=True)
    assert "cellweave_prediction" not in query.obs  # copy=True leaves the input alone

    pred = out.obs["cellweave_prediction"]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    classes = sorted(reference.obs[LABEL].astype(str).unique())
    assert list(pred.cat.categories) == [*classes, "unknown"]
    conf, novelty = out.obs["cellweave_confidence"], out.obs["cellweave_novelty"]
    assert conf.dtype == np.float32 and ((conf >= 0) & (conf <= 1)).all()
    # The default score is a mean of two conformal ranks among held-out reference cells.
    assert novelty.dtype == np.float32 and ((novelty >= 0) & (novelty <= 1)).all()

    known = (pred != "unknown").to_numpy()
    truth = out.obs[LABEL].astype(str).to_numpy()
    # Measured 0.975 balanced (macro) accuracy on 420/423 known cells; chance is 0.2.
    assert balanced_accuracy_score(truth[known], pred.astype(str).to_numpy()[known]) > 0.9
    assert known.mean() > 0.95  # measured 3 of 423 cells unknown at the 0.99 quantile

    rec = out.uns["cellweave"]["annotate"]
    assert rec["model"] == model.name and rec["model_sha256"] == model.model_hash
    assert rec["label_key"] == LABEL and list(rec["classes"]) == classes
    assert rec["n_unknown"] == int((~known).sum()) and rec["threshold"] > 0 and rec["seed"] == 0
    assert rec["novelty_score"] == "combined+composition"
    assert "annotate" not in reference.uns["cellweave"]


def test_held_out_cell_line_is_more_novel(cellbench, split, model) -> None:
    reference, query = split[0], split[1].copy()
    held_out = cellbench.obs[LABEL].value_counts().index[0]  # the most frequent cell line, A549
    reference = reference[reference.obs[LABEL] != held_out].copy()
    cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=model, progress=False)

    is_novel = (query.obs[LABEL] == held_out).to_numpy()
    novelty = query.obs["cellweave_novelty"].to_numpy()
    assert novelty[is_novel].mean() > novelty[~is_novel].mean()
    # Measured AUROC 0.944 for A549 held out with the default combined score (distance alone 0.822,
    # max-softmax alone 0.905). Over the five lines held out in turn the combined score averages
    # 0.854 (distance 0.731, softmax 0.786) but is only 0.754 for H2228, so this checks the
    # direction of the score on one line, not that it finds every novel type.
    assert roc_auc_score(is_novel, novelty) > 0.85
    assert held_out not in query.obs["cellweave_prediction"].cat.categories


def test_bad_labels_are_refused_with_the_fix(split) -> None:
    reference, query = split[0], split[1].copy()
    with pytest.raises(CellWeaveInputError, match="not a column of reference.obs.*batch"):
        cellweave.tl.annotate(query, reference=reference, label_key="celltype")
    with pytest.raises(CellWeaveInputError, match="batch_key='donor' is not a column of reference.obs.*batch"):
        cellweave.tl.annotate(query, reference=reference, label_key=LABEL, batch_key="donor")
    one_class = reference[reference.obs[LABEL] == "A549"].copy()
    with pytest.raises(CellWeaveInputError, match="at least 2"):
        cellweave.tl.annotate(query, reference=one_class, label_key=LABEL)
    rare = reference.copy()
    rare.obs["label"] = rare.obs[LABEL].astype(str)
    rare.obs.iloc[0, rare.obs.columns.get_loc("label")] = "singleton"
    with pytest.raises(CellWeaveInputError, match="fewer than 2 cells: singleton"):
        cellweave.tl.annotate(query, reference=rare, label_key="label")
    assert "cellweave_prediction" not in query.obs


def test_cli_round_trip_and_bad_label_key(cellbench, tmp_path, capsys) -> None:
    # Raw files, no stored embedding: the command embeds reference and query itself.
    raw = cellweave.datasets.load("multibatch_cellbench_sc_mixology")
    perm = np.random.default_rng(1).permutation(raw.n_obs)
    raw[perm[:200]].copy().write_h5ad(tmp_path / "ref.h5ad")
    raw[perm[200:260]].copy().write_h5ad(tmp_path / "query.h5ad")
    args = ["-q", "annotate", str(tmp_path / "query.h5ad"), "--reference", str(tmp_path / "ref.h5ad")]

    assert main([*args, "--label-key", LABEL, "--out", str(tmp_path / "out.h5ad")]) == 0
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    for col in ("cellweave_prediction", "cellweave_confidence", "cellweave_novelty"):
        assert col in out.obs
    assert out.n_obs == 60 and "X_cellweave" in out.obsm
    assert out.uns["cellweave"]["annotate"]["label_key"] == LABEL
    assert not list(tmp_path.glob("*.tmp*"))
    assert not out.uns["cellweave"]["annotate"]["align"]
    assert out.uns["cellweave"]["annotate"]["calibration_batches"] == 0
    rec = out.uns["cellweave"]["annotate"]
    assert rec["shift_adjust"] and 0 < rec["shift_factor"] <= 1  # on by default; 60 query cells
    assert rec["softmax_when_far"] and not rec["distance_ignored"]  # on by default; a query near its reference
    assert rec["sharpen_when_far"] and rec["sharpen_when_shifted"]  # on by default (the temperature: below)
    assert rec["cross_fit"] == "auto" and rec["cross_fitted"]  # 200 reference cells: 40 would be held out
    weights = rec["part_weights"]  # on by default: three parts, weighed on the reference's own types
    assert rec["weight_parts"] and set(weights) == {"distance", "softmax", "composition"}
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    assert main([*args, "--label-key", LABEL, "--align", "--novelty-score", "distance", "--batch-key", "batch",
                 "--no-shift-adjust", "--no-softmax-when-far", "--no-sharpen-when-far", "--no-weight-parts",
                 "--no-sharpen-when-shifted", "--cross-fit", "on",
                 "--out", str(tmp_path / "aligned.h5ad")]) == 0
    aligned = ad.read_h5ad(tmp_path / "aligned.h5ad")
    assert not aligned.uns["cellweave"]["annotate"]["softmax_when_far"]
    assert not aligned.uns["cellweave"]["annotate"]["sharpen_when_far"]
    assert not aligned.uns["cellweave"]["annotate"]["shift_adjust"]
    assert not aligned.uns["cellweave"]["annotate"]["weight_parts"]
    assert not aligned.uns["cellweave"]["annotate"]["sharpen_when_shifted"]
    assert aligned.uns["cellweave"]["annotate"]["temperature"] == 1.0  # nothing sharpened, as asked
    assert dict(aligned.uns["cellweave"]["annotate"]["part_weights"]) == {"distance": 1.0}  # one part
    assert aligned.uns["cellweave"]["annotate"]["shift_factor"] == 1.0
    assert aligned.uns["cellweave"]["annotate"]["align"]
    # Asked for, but the batches are calibrated on instead.
    assert aligned.uns["cellweave"]["annotate"]["cross_fit"] == "on"
    assert not aligned.uns["cellweave"]["annotate"]["cross_fitted"]
    assert aligned.uns["cellweave"]["annotate"]["novelty_score"] == "distance"
    n_batches = raw[perm[:200]].obs["batch"].nunique()
    assert n_batches >= 2 and aligned.uns["cellweave"]["annotate"]["calibration_batches"] == n_batches
    assert aligned.obs["cellweave_novelty"].max() > 1  # a distance in the standardized space, not a rank

    assert main([*args, "--label-key", "celltype", "--out", str(tmp_path / "bad.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "celltype" in err and "cell_type" in err and "Traceback" not in err
    assert not (tmp_path / "bad.h5ad").exists()
