"""Batch integration, reference mapping and fine-tuned annotation: real data for the behaviour,
a tiny synthetic model for fine-tuning mechanics, and the bad-input paths."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_score
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import cellweave
from cellweave._exceptions import CellWeaveInputError
from cellweave._io_utils import sha256_file
from cellweave.cli import main
from cellweave.models import CellWeave
from cellweave.tl._integrate import integrate_embedding


def _knn_acc(x, y) -> float:
    return float(cross_val_score(KNeighborsClassifier(15), x, y, cv=3).mean())


def test_integrate_mixes_batches_and_keeps_cell_types(cellbench, model) -> None:
    out = cellweave.tl.integrate(cellbench, batch_key="batch", model=model, progress=False, copy=True)
    z, raw = out.obsm["X_cellweave_integrated"], out.obsm["X_cellweave"]
    batch, label = out.obs["batch"].astype(str), out.obs["cell_type"].astype(str)
    # Batches are less separable after integration, cell types no less.
    assert silhouette_score(z, batch) < silhouette_score(raw, batch) - 0.02
    assert _knn_acc(z, label) >= _knn_acc(raw, label) - 0.02
    rec = out.uns["cellweave"]["integrate"]
    assert rec["method"] == "harmony" and rec["model_sha256"] == model.model_hash and len(rec["batches"]) == 5
    assert "X_cellweave_integrated" not in cellbench.obsm  # copy=True left the input alone


def test_adversarial_adapter_removes_a_batch_shift() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    batch = rng.integers(0, 2, 600)
    x = rng.normal(size=(600, 16)) + 4.0 * np.eye(16)[labels] + 3.0 * np.eye(16)[8 + batch]
    z = integrate_embedding(x.astype(np.float32), batch.astype(str), method="adversarial", max_epochs=60, seed=0)
    assert z.shape == (600, 32)
    assert _knn_acc(x, batch) > 0.95
    assert _knn_acc(z, batch) < 0.75  # batch is hard to predict from z
    assert _knn_acc(z, labels) > 0.75  # cell types stay apart (chance: 0.33)


def test_integrate_bad_batch_key(cellbench) -> None:
    with pytest.raises(CellWeaveInputError, match="not a column of obs"):
        cellweave.tl.integrate(cellbench, batch_key="sample", copy=True)
    one = cellbench[cellbench.obs["batch"] == "sc_dropseq"].copy()
    with pytest.raises(CellWeaveInputError, match="single batch"):
        cellweave.tl.integrate(one, batch_key="batch", copy=True)
    with pytest.raises(CellWeaveInputError, match="Unknown integration method"):
        cellweave.tl.integrate(cellbench, batch_key="batch", method="combat", copy=True)


@pytest.fixture(scope="module")
def protocols(cellbench):
    """Reference = the CEL-seq2 batches, query = the Drop-seq batch (a different protocol)."""
    ref = cellbench[cellbench.obs["protocol"] == "CEL-seq2"].copy()
    query = cellbench[cellbench.obs["protocol"] == "Drop-seq"].copy()
    del query.obs["cell_type"]
    truth = cellbench.obs.loc[query.obs_names, "cell_type"].astype(str).to_numpy()
    return ref, query, truth


def test_map_query_across_protocols(protocols, model) -> None:
    ref, query, truth = protocols
    out = cellweave.tl.map_query(query, reference=ref, label_key="cell_type", model=model, progress=False, copy=True)
    pred = out.obs["cellweave_prediction"].astype(str).to_numpy()
    known = pred != "unknown"
    acc = float(np.mean(pred[known] == truth[known]))
    assert acc > 0.5  # 3 lines in the query: chance is about 0.33
    # Another protocol, the same lines: annotate's rule leaves them known (the distance rule before: 30% unknown).
    assert np.mean(~known) < 0.05
    unc = out.obs["cellweave_uncertainty"].to_numpy()
    assert ((0 <= unc) & (unc < 1)).all()
    wrong = pred != truth
    assert unc[wrong].mean() > unc[~wrong].mean()  # the uncertainty points at the errors
    assert out.obsm["X_cellweave_reference_umap"].shape == (query.n_obs, 2)
    rec = out.uns["cellweave"]["map_query"]
    assert rec["index"] == "faiss" and np.asarray(rec["reference_umap"]).shape == (ref.n_obs, 2)


def _stored(emb: np.ndarray, model, labels=None):
    """An AnnData whose ``obsm["X_cellweave"]`` is recorded as ``model``'s embedding (reused, not recomputed)."""
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame(index=[f"c{i}" for i in range(len(emb))])
    if labels is not None:
        obs["cell_type"] = labels
    a = ad.AnnData(obs=obs)
    a.obsm["X_cellweave"] = emb.astype(np.float32)
    a.uns["cellweave"] = {"X_cellweave": {"model_sha256": model.model_hash}}
    return a


def _three_types_and_a_missing_one(model, *, spread: float, offset: float):
    """Stored embeddings: a reference of three types (500 cells each), each raised on its own quarter of
    the dimensions, and a query of the same types (100 each, noise times ``spread``, ``offset`` added on
    4 dimensions) plus 40 cells of a fourth type; returns reference, query, true query types, novel mask."""
    rng = np.random.default_rng(0)
    width = model.module.embedding_dim
    centres = 4.0 * np.kron(np.eye(4), np.ones(width // 4))
    ref_codes = np.repeat(np.arange(3), 500)
    ref = _stored(centres[ref_codes] + rng.normal(size=(1500, width)), model,
                  labels=np.array(["a", "b", "c"])[ref_codes])
    query_codes = np.r_[np.repeat(np.arange(3), 100), np.full(40, 3)]
    shifted = centres[query_codes] + spread * rng.normal(size=(340, width)) + offset * (np.arange(width) < 4)
    truth = np.array(["a", "b", "c", "d"])[query_codes]
    return ref, _stored(shifted, model), truth, query_codes == 3


def test_map_query_calls_a_missing_type_unknown_and_not_a_shifted_query(tiny_rna_model) -> None:
    """map_query decides "unknown" by annotate's rule: a query of known types shifted as a whole (wider
    spread) is not called unknown wholesale, a type missing from the reference is; the
    reference-distance rule before (distance alone, unadjusted) calls most of the shifted query unknown."""
    model = tiny_rna_model
    ref, query, truth, novel = _three_types_and_a_missing_one(model, spread=1.25, offset=0.0)
    out = cellweave.tl.map_query(query, reference=ref, label_key="cell_type", model=model, progress=False, copy=True)
    pred = out.obs["cellweave_prediction"].astype(str).to_numpy()
    assert np.mean(pred[~novel] == truth[~novel]) > 0.95
    assert np.mean(pred[~novel] == "unknown") < 0.05
    assert np.mean(pred[novel] == "unknown") > 0.8
    rec = out.uns["cellweave"]["map_query"]
    assert rec["novelty_score"] == "combined+composition" and rec["shift_adjust"] and rec["shift_factor"] < 1.0
    assert not rec["align"]
    assert rec["n_unknown"] == int((pred == "unknown").sum())
    assert (out.obs["cellweave_distance"].to_numpy() > 0).all()

    before = cellweave.tl.map_query(query, reference=ref, label_key="cell_type", model=model, novelty_score="distance",
                                    shift_adjust=False, progress=False, copy=True)
    assert np.mean(before.obs["cellweave_prediction"].astype(str).to_numpy()[~novel] == "unknown") > 0.15


def test_map_query_align_takes_out_a_batch_offset(tiny_rna_model) -> None:
    """align=True: Harmony on reference + query moves a query offset as a whole (a batch effect) onto the
    reference, so the distance rule, unadjusted, no longer calls its known cells unknown; the missing type
    stays unknown."""
    model = tiny_rna_model
    ref, query, _, novel = _three_types_and_a_missing_one(model, spread=1.0, offset=3.0)
    kw = dict(reference=ref, label_key="cell_type", model=model, novelty_score="distance", shift_adjust=False,
              progress=False, copy=True)
    unknown = {}
    for align in (False, True):
        out = cellweave.tl.map_query(query, align=align, **kw)
        pred = out.obs["cellweave_prediction"].astype(str).to_numpy()
        unknown[align] = np.mean(pred[~novel] == "unknown")
        assert np.mean(pred[novel] == "unknown") > 0.8
        assert bool(out.uns["cellweave"]["map_query"]["align"]) == align
    assert unknown[False] > 0.2 and unknown[True] < 0.05


def test_map_query_bad_novelty_options(protocols) -> None:
    ref, query, _ = protocols
    with pytest.raises(CellWeaveInputError, match="novelty_score='knn' is not one of"):
        cellweave.tl.map_query(query, reference=ref, label_key="cell_type", novelty_score="knn", copy=True)
    with pytest.raises(CellWeaveInputError, match="batch_key='donor' is not a column of reference.obs"):
        cellweave.tl.map_query(query, reference=ref, label_key="cell_type", batch_key="donor", copy=True)


@pytest.mark.slow  # pynndescent compiles with numba on first use (a minute or more on 2 cores)
def test_pynndescent_index_agrees_with_faiss() -> None:
    from cellweave.tl._map_query import NeighborIndex

    rng = np.random.default_rng(0)
    ref, query = rng.normal(size=(2000, 20)), rng.normal(size=(200, 20))
    exact, _ = NeighborIndex(ref, backend="faiss").query(query, 10)
    approx, dist = NeighborIndex(ref, backend="pynndescent", seed=0).query(query, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.9 and (np.diff(dist, axis=1) >= -1e-5).all()


def test_map_query_cli_leaves_reference_untouched(protocols, tmp_path, capsys) -> None:
    ref, query, truth = protocols
    ref_path, query_path, out = tmp_path / "ref.h5ad", tmp_path / "query.h5ad", tmp_path / "out.h5ad"
    ref.write_h5ad(ref_path)
    query.write_h5ad(query_path)
    before = sha256_file(ref_path)
    args = ["map-query", str(query_path), "--reference", str(ref_path), "--out", str(out)]
    assert main([*args, "--label-key", "cell_type", "--batch-key", "batch", "--no-softmax-when-far",
                 "--no-sharpen-when-far", "--no-weight-parts", "--no-sharpen-when-shifted", "--cross-fit", "off"]) == 0
    assert sha256_file(ref_path) == before
    mapped = cellweave.io.read(out)
    assert mapped.obs["cellweave_prediction"].notna().all() and "X_cellweave" in mapped.obsm
    rec = mapped.uns["cellweave"]["map_query"]  # the novelty options reach tl.map_query
    assert rec["batch_key"] == "batch" and rec["calibration_batches"] == 4 and not rec["softmax_when_far"]
    assert not rec["sharpen_when_far"] and not rec["sharpen_when_shifted"] and rec["temperature"] == 1.0
    assert not rec["weight_parts"] and set(rec["part_weights"].values()) == {1 / 3}  # equal, as asked
    assert rec["cross_fit"] == "off" and not rec["cross_fitted"]
    assert main([*args[:-1], str(tmp_path / "bad.h5ad"), "--label-key", "celltype"]) == 2
    assert "label_key 'celltype' is not a column" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5ad").exists()


def test_finetune_learns_labels_and_leaves_the_base_model(tiny_vocab_and_data) -> None:
    from cellweave.train import finetune_classifier

    vocab, adata = tiny_vocab_and_data
    base = CellWeave.from_preset("tiny", vocab, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    before = base.model_hash
    corpus = base.prepare(adata, dataset="synthetic")
    tuned, summary = finetune_classifier(base, corpus, adata.obs["cell_type"].to_numpy(), max_epochs=4,
                                         lr=1e-3, seed=0, progress=False)
    assert summary["train_loss"][-1] < summary["train_loss"][0]
    assert base.model_hash == before and tuned.model_hash != before
    assert tuned.card["finetune"]["base_model_sha256"] == before
    # Same seed, same result: fine-tuning is reproducible on the CPU.
    again, _ = finetune_classifier(base, corpus, adata.obs["cell_type"].to_numpy(), max_epochs=4, lr=1e-3, seed=0,
                                   progress=False)
    assert again.model_hash == tuned.model_hash


def test_annotate_finetune_writes_its_embedding(tiny_vocab_and_data) -> None:
    vocab, adata = tiny_vocab_and_data
    base = CellWeave.from_preset("tiny", vocab, d_model=32, n_layers=1, n_heads=2, d_ff=64)
    ref, query = adata[:90].copy(), adata[90:].copy()
    cellweave.tl.annotate(query, reference=ref, label_key="cell_type", model=base, finetune=True,
                          finetune_epochs=2, progress=False)
    assert query.obsm["X_cellweave_finetuned"].shape == (30, base.module.embedding_dim)
    assert "X_cellweave" not in query.obsm
    rec = query.uns["cellweave"]["annotate"]
    assert len(rec["finetune"]["train_loss"]) == 2 and rec["finetune"]["base_model_sha256"] == base.model_hash


def test_align_reference_query_moves_a_shifted_query_onto_its_types() -> None:
    from cellweave.tl import align_reference_query

    rng = np.random.default_rng(1)
    centres = 4.0 * np.eye(16)[:3]
    ref_labels, query_labels = rng.integers(0, 3, 400), rng.integers(0, 3, 200)
    ref = rng.normal(size=(400, 16)) + centres[ref_labels]
    query = rng.normal(size=(200, 16)) + centres[query_labels] + 3.0 * np.eye(16)[10]  # a shift of the query
    a_ref, a_query = align_reference_query(ref.astype(np.float32), query.astype(np.float32), seed=0)
    assert a_ref.shape[0] == 400 and a_query.shape[0] == 200 and a_ref.shape[1] == a_query.shape[1]

    def shift(r, q):
        """Query-to-reference distance of each type's centroid, over the reference's type spacing."""
        rc = np.stack([r[ref_labels == t].mean(0) for t in range(3)])
        qc = np.stack([q[query_labels == t].mean(0) for t in range(3)])
        spacing = np.mean([np.linalg.norm(rc[i] - rc[j]) for i in range(3) for j in range(i)])
        return np.linalg.norm(qc - rc, axis=1).mean() / spacing

    assert shift(ref, query) > 0.4 and shift(a_ref, a_query) < 0.5 * shift(ref, query)
    # Types stay apart: a query cell's nearest reference cell has its type.
    nearest = ((a_query[:, None, :] - a_ref[None, :, :]) ** 2).sum(-1).argmin(1)
    assert (ref_labels[nearest] == query_labels).mean() > 0.9
    with pytest.raises(CellWeaveInputError, match="same model"):
        align_reference_query(ref, query[:, :8])


def test_annotate_align_and_shift_adjust_call_fewer_shifted_cells_unknown(protocols, model) -> None:
    ref, query, truth = protocols
    kw = dict(reference=ref, label_key="cell_type", model=model, progress=False, copy=True)
    plain = cellweave.tl.annotate(query, shift_adjust=False, **kw)
    aligned = cellweave.tl.annotate(query, align=True, shift_adjust=False, **kw)
    adjusted = cellweave.tl.annotate(query, **kw)  # the default: shift_adjust=True
    unknown = {name: (out.obs["cellweave_prediction"] == "unknown").mean() for name, out in
               (("plain", plain), ("aligned", aligned), ("adjusted", adjusted))}
    # Measured with the shipped model: 10% of the Drop-seq cells (all of types in the CEL-seq2
    # reference) called unknown with neither, 4% with alignment (24% and 6% before genes outside its
    # vocabulary got generated codes), UNKNOWN_ADJUSTED with the shift adjustment alone.
    assert unknown["plain"] > 0.05 and unknown["aligned"] < 0.5 * unknown["plain"]
    assert unknown["adjusted"] < 0.5 * unknown["plain"]
    assert adjusted.uns["cellweave"]["annotate"]["shift_factor"] < 1
    assert aligned.uns["cellweave"]["annotate"]["align"] and not plain.uns["cellweave"]["annotate"]["align"]
    known = (aligned.obs["cellweave_prediction"] != "unknown").to_numpy()
    assert (aligned.obs["cellweave_prediction"].astype(str).to_numpy()[known] == truth[known]).mean() > 0.4


def test_annotate_tokenizes_the_query_in_the_reference_space(model) -> None:
    # Two files, as a user has them: nothing embedded yet, so annotate embeds both.
    raw = cellweave.datasets.load("multibatch_cellbench_sc_mixology")
    ref = raw[raw.obs["protocol"] == "CEL-seq2"].copy()
    query = raw[raw.obs["protocol"] == "Drop-seq"].copy()
    del query.obs["cell_type"]
    kw = dict(reference=ref, label_key="cell_type", model=model, progress=False, copy=True)
    own = cellweave.tl.annotate(query, reference_token_space=False, shift_adjust=False, **kw)
    shared = cellweave.tl.annotate(query, **kw)  # the default: the reference's token space, shift adjusted
    unknown = {name: (out.obs["cellweave_prediction"] == "unknown").mean() for name, out in
               (("own", own), ("shared", shared))}
    # Measured with the shipped model: 60% of the Drop-seq cells called unknown when each side chose
    # its own HVGs and gene means, 0.4% in the reference's token space with the shift adjustment.
    assert unknown["own"] > 0.3 and unknown["shared"] < 0.05
    assert own.uns["cellweave"]["annotate"]["query_token_space"] == "own"
    assert shared.uns["cellweave"]["annotate"]["query_token_space"] == "reference"
    assert shared.uns["cellweave"]["X_cellweave"]["token_space"] == "reference"
    assert "X_cellweave" not in ref.obsm  # the reference is only read
    # An embedding already stored with the same weights is reused as it is.
    again = cellweave.tl.annotate(shared, **kw)
    assert again.uns["cellweave"]["annotate"]["query_token_space"] == "stored"
    np.testing.assert_array_equal(again.obsm["X_cellweave"], shared.obsm["X_cellweave"])
