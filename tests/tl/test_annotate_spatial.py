"""Label transfer with tissue context: auto/on/off, sections, the record in uns, the CLI.

The tissue is synthetic: zone A holds cells of ``type_0`` and ``type_1``, zone B cells of
``type_0`` and ``type_2``, and the label to transfer is the zone. A ``type_0`` cell's own
expression says nothing about its zone; only its neighbours do.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import cellweave
from cellweave._exceptions import CellWeaveInputError
from cellweave.cli import main
from cellweave.data import synthetic_adata

LABEL = "zone"


def _tissue(seed: int = 3, n_cells: int = 480) -> ad.AnnData:
    adata = synthetic_adata(n_cells=n_cells, n_genes=200, n_batches=1, seed=seed)  # the tiny model's genes
    del adata.obs["batch"]  # else taken as the section column
    rng = np.random.default_rng(seed)
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    ambiguous = rng.random(adata.n_obs) < 0.5
    zone = np.where(cell_type == "type_1", "A", np.where(cell_type == "type_2", "B", np.where(ambiguous, "A", "B")))
    adata.obs[LABEL] = zone
    xy = rng.uniform(0.0, 10.0, size=(adata.n_obs, 2))
    xy[zone == "B", 0] += 30.0  # zones apart: no neighbourhood straddles them
    adata.obsm["spatial"] = xy
    return adata


@pytest.fixture(scope="module")
def tissue(tiny_rna_model):
    """Reference (300 cells) and query (180 cells) of one tissue, both embedded once (no context)."""
    adata = _tissue()
    perm = np.random.default_rng(0).permutation(adata.n_obs)
    reference, query = adata[perm[:300]].copy(), adata[perm[300:]].copy()
    for data in (reference, query):
        cellweave.tl.embed(data, model=tiny_rna_model, progress=False)
    return reference, query


def _type0_accuracy(out: ad.AnnData) -> tuple[float, float]:
    """Zone accuracy on the ``type_0`` cells not called unknown, and the share of those cells unknown."""
    pred = out.obs["cellweave_prediction"].astype(str).to_numpy()
    type0 = (out.obs["cell_type"] == "type_0").to_numpy()
    known = type0 & (pred != "unknown")
    return float((pred[known] == out.obs[LABEL].to_numpy()[known]).mean()), float(1 - known.sum() / type0.sum())


def test_auto_uses_context_when_both_have_coordinates(tissue, tiny_rna_model) -> None:
    reference, query = tissue
    out = cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=tiny_rna_model, progress=False,
                                copy=True)
    rec = out.uns["cellweave"]["annotate"]
    assert rec["spatial"] is True
    assert rec["spatial_context"] == {
        "spatial_key": "spatial", "n_neighbors": 10, "reference_section_key": "", "reference_n_sections": 1,
        "query_section_key": "", "query_n_sections": 1,
    }
    with_context, unknown = _type0_accuracy(out)
    without = cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=tiny_rna_model,
                                    spatial=False, progress=False, copy=True)
    assert without.uns["cellweave"]["annotate"]["spatial"] is False
    assert "spatial_context" not in without.uns["cellweave"]["annotate"]
    without_context, _ = _type0_accuracy(without)
    # Measured 1.00 with context (14% of type_0 cells unknown) vs 0.67 without; chance is 0.5.
    assert with_context > 0.95 and unknown < 0.3
    assert without_context < 0.85
    # The stored embedding is the cells' own (context is recomputed, never stored twice over).
    assert out.obsm["X_cellweave"].shape[1] == tiny_rna_model.module.embedding_dim


def test_auto_is_off_when_one_side_lacks_coordinates(tissue, tiny_rna_model) -> None:
    reference, query = tissue
    bare_query = query.copy()
    del bare_query.obsm["spatial"]
    out = cellweave.tl.annotate(bare_query, reference=reference, label_key=LABEL, model=tiny_rna_model,
                                progress=False, copy=True)
    assert out.uns["cellweave"]["annotate"]["spatial"] is False
    bare_reference = reference.copy()
    del bare_reference.obsm["spatial"]
    out = cellweave.tl.annotate(query, reference=bare_reference, label_key=LABEL, model=tiny_rna_model,
                                progress=False, copy=True)
    assert out.uns["cellweave"]["annotate"]["spatial"] is False
    # Without context the same as spatial=False, to the cell.
    off = cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=tiny_rna_model, spatial=False,
                                progress=False, copy=True)
    np.testing.assert_array_equal(out.obs["cellweave_prediction"], off.obs["cellweave_prediction"])


def test_spatial_true_names_the_side_without_coordinates(tissue, tiny_rna_model) -> None:
    reference, query = tissue
    bare_query = query.copy()
    del bare_query.obsm["spatial"]
    missing_query = r"spatial=True but the query has no obsm\['spatial'\].*spatial=False"
    with pytest.raises(CellWeaveInputError, match=missing_query):
        cellweave.tl.annotate(bare_query, reference=reference, label_key=LABEL, model=tiny_rna_model, spatial=True)
    bare_reference = reference.copy()
    del bare_reference.obsm["spatial"]
    with pytest.raises(CellWeaveInputError, match="the reference has no obsm"):
        cellweave.tl.annotate(query, reference=bare_reference, label_key=LABEL, model=tiny_rna_model, spatial=True)
    with pytest.raises(CellWeaveInputError, match=r"the reference and the query have no obsm\['xy'\]"):
        cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=tiny_rna_model, spatial=True,
                              spatial_key="xy")
    with pytest.raises(CellWeaveInputError, match="'slide' is not a column of reference.obs"):
        cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=tiny_rna_model, section_key="slide")
    with pytest.raises(CellWeaveInputError, match="n_spatial_neighbors must be at least 1"):
        cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=tiny_rna_model,
                              n_spatial_neighbors=0)
    assert "cellweave_prediction" not in bare_query.obs and "cellweave_prediction" not in query.obs


def test_neighbourhoods_stay_within_each_side_and_section(tissue, tiny_rna_model, monkeypatch) -> None:
    """Two query sections laid over the same coordinates: neighbours come from the cell's own section."""
    import cellweave.data._spatial as spatial_module  # where tl.annotate's neighbour search runs

    reference, query = tissue
    stacked = query.copy()
    zone = stacked.obs[LABEL].to_numpy()
    stacked.obs["section"] = np.where(zone == "A", "s1", "s2")
    xy = stacked.obsm["spatial"].copy()
    xy[zone == "B", 0] -= 30.0  # both sections now over the same square
    stacked.obsm["spatial"] = xy

    calls = []
    real = spatial_module.spatial_neighbors

    def recording(coords, sections, *, n_neighbors):
        out = real(coords, sections, n_neighbors=n_neighbors)
        calls.append((np.asarray(coords), np.asarray(sections), out))
        return out

    monkeypatch.setattr(spatial_module, "spatial_neighbors", recording)
    k = 6
    out = cellweave.tl.annotate(stacked, reference=reference, label_key=LABEL, model=tiny_rna_model,
                                n_spatial_neighbors=k, progress=False, copy=True)
    assert len(calls) == 2  # reference and query, each on its own
    (ref_coords, _, ref_nbr), (coords, sections, nbr) = calls
    assert ref_nbr.shape == (reference.n_obs, k) and ref_coords.shape[0] == reference.n_obs
    assert nbr.shape == (stacked.n_obs, k)  # indices into the query: never reference cells
    np.testing.assert_array_equal(sections, stacked.obs["section"].to_numpy())

    dist = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    within = np.where(sections[:, None] == sections[None], dist, np.inf)
    for i in range(stacked.n_obs):
        assert set(nbr[i]) == set(np.argsort(within[i])[:k])
    # The test has teeth: ignoring sections would pick neighbours from the other section.
    mixed = sum(len(set(np.argsort(dist[i])[:k]) - set(nbr[i])) > 0 for i in range(stacked.n_obs))
    assert mixed > stacked.n_obs // 2

    rec = out.uns["cellweave"]["annotate"]["spatial_context"]
    assert (rec["query_section_key"], rec["query_n_sections"]) == ("section", 2)
    assert (rec["reference_section_key"], rec["reference_n_sections"]) == ("", 1)
    assert rec["n_neighbors"] == k
    # Per-section neighbourhoods still tell the zones apart; one section over the overlap cannot.
    # Measured 1.00 per section vs 0.47 with the sections merged.
    assert _type0_accuracy(out)[0] > 0.95
    monkeypatch.undo()
    merged = stacked.copy()
    del merged.obs["section"]
    out = cellweave.tl.annotate(merged, reference=reference, label_key=LABEL, model=tiny_rna_model,
                                n_spatial_neighbors=k, progress=False, copy=True)
    assert out.uns["cellweave"]["annotate"]["spatial_context"]["query_n_sections"] == 1
    assert _type0_accuracy(out)[0] < 0.9


def test_stored_spatial_embedding_is_reused_without_doubling(tissue, tiny_rna_model) -> None:
    reference, query = tissue
    pre = query.copy()
    cellweave.tl.embed(pre, model=tiny_rna_model, spatial=True, progress=False)  # 2 x width, context inside
    assert pre.obsm["X_cellweave"].shape[1] == 2 * tiny_rna_model.module.embedding_dim
    out = cellweave.tl.annotate(pre, reference=reference, label_key=LABEL, model=tiny_rna_model, progress=False,
                                copy=True)
    fresh = cellweave.tl.annotate(query, reference=reference, label_key=LABEL, model=tiny_rna_model,
                                  progress=False, copy=True)
    np.testing.assert_array_equal(out.obs["cellweave_prediction"], fresh.obs["cellweave_prediction"])
    np.testing.assert_allclose(out.obs["cellweave_novelty"], fresh.obs["cellweave_novelty"], rtol=1e-5)


def test_finetune_with_context_and_unlabelled_neighbours(tissue, tiny_rna_model) -> None:
    reference, query = tissue
    partly, query = reference[:150].copy(), query[:90].copy()  # small: fine-tuning is the slow part
    partly.obs[LABEL] = partly.obs[LABEL].astype(object)
    partly.obs.iloc[:30, partly.obs.columns.get_loc(LABEL)] = None  # neighbours, not training labels
    out = cellweave.tl.annotate(query, reference=partly, label_key=LABEL, model=tiny_rna_model, finetune=True,
                                finetune_epochs=1, progress=False, copy=True)
    rec = out.uns["cellweave"]["annotate"]
    assert rec["spatial"] is True and rec["n_reference"] == 120
    assert rec["finetune"]["max_epochs"] == 1 and len(rec["finetune"]["train_loss"]) == 1
    # The fine-tuned embedding is the cells' own; the context is appended only for the classifier.
    assert out.obsm["X_cellweave_finetuned"].shape == (query.n_obs, tiny_rna_model.module.embedding_dim)
    assert _type0_accuracy(out)[0] > 0.9  # measured 1.00; 0.45 with spatial=False


def test_cli_spatial_flags(tissue, tiny_rna_model, tmp_path, capsys) -> None:
    reference, query = tissue
    model_dir = tiny_rna_model.save(tmp_path / "model")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    bare = query.copy()
    del bare.obsm["spatial"]
    bare.write_h5ad(tmp_path / "bare.h5ad")
    args = ["-q", "annotate", "--reference", str(tmp_path / "ref.h5ad"), "--label-key", LABEL,
            "--model", str(model_dir)]

    assert main([*args, str(tmp_path / "query.h5ad"), "--out", str(tmp_path / "auto.h5ad"),
                 "--n-spatial-neighbors", "5"]) == 0
    rec = ad.read_h5ad(tmp_path / "auto.h5ad").uns["cellweave"]["annotate"]
    assert rec["spatial"] and rec["spatial_context"]["n_neighbors"] == 5

    assert main([*args, str(tmp_path / "query.h5ad"), "--out", str(tmp_path / "off.h5ad"),
                 "--no-spatial"]) == 0
    assert not ad.read_h5ad(tmp_path / "off.h5ad").uns["cellweave"]["annotate"]["spatial"]

    assert main([*args, str(tmp_path / "bare.h5ad"), "--out", str(tmp_path / "bad.h5ad"),
                 "--spatial"]) == 2
    err = capsys.readouterr().err
    assert "query has no obsm['spatial']" in err and "--no-spatial" in err and "Traceback" not in err
    assert not (tmp_path / "bad.h5ad").exists()

    assert main([*args, str(tmp_path / "query.h5ad"), "--out", str(tmp_path / "s.h5ad"),
                 "--section-key", "cell_type", "--spatial-key", "spatial"]) == 0
    ctx = ad.read_h5ad(tmp_path / "s.h5ad").uns["cellweave"]["annotate"]["spatial_context"]
    assert ctx["query_section_key"] == "cell_type" and ctx["query_n_sections"] == 3
