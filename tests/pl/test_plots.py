"""Report plots: colours that never reuse the grey of missing labels, one legend per dataset,
reference coloured by type under the query, and predicted-vs-observed panels with labelled axes
and the identity line."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from cellweave.pl import (  # noqa: E402
    category_colors,
    embedding_panels,
    embedding_scatter,
    predicted_vs_observed,
    reference_query_scatter,
)
from cellweave.pl._plots import MISSING_COLOR  # noqa: E402


def _grey(c) -> bool:
    r, g, b = to_rgb(c)
    return max(r, g, b) - min(r, g, b) < 0.05


@pytest.mark.parametrize("n", [3, 9, 10, 18, 19, 54])
def test_category_colors_are_distinct_and_never_grey(n):
    cats = [f"type {i}" for i in range(n)] + ["unlabelled"]
    colors = category_colors(cats)
    assert colors["unlabelled"] == MISSING_COLOR
    labelled = [to_rgb(colors[c]) for c in cats[:-1]]
    assert not any(_grey(c) for c in labelled)
    assert len(set(labelled)) == n  # no two labels share a colour up to 54 labels


def test_embedding_panels_give_each_dataset_its_own_legend():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(300, 2))
    groups = np.repeat(["intestine", "osmFISH", "cellbench"], 100)
    labels = np.concatenate([[f"zone={i % 7}" for i in range(100)], [f"neuron {i % 12}" for i in range(100)],
                             [f"line {i % 5}" for i in range(100)]])
    fig = embedding_panels(xy, labels, groups, ncols=2)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in axes] == ["intestine", "osmFISH", "cellbench"]
    for ax, n in zip(axes, (7, 12, 5)):
        entries = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(entries) == n  # only this dataset's labels
        colors = [to_rgb(h.get_facecolor()[0]) for h in ax.collections]
        assert len(set(colors)) == n and not any(_grey(c) for c in colors)
        assert ax.get_xlabel() == "UMAP 1"
    plt.close(fig)


def test_embedding_scatter_keeps_grey_for_unlabelled_only():
    labels = np.array(["unlabelled"] * 5 + [f"t{i}" for i in range(20)])
    fig = embedding_scatter(np.random.default_rng(1).normal(size=(25, 2)), labels, max_legend=30)
    ax = fig.axes[0]
    by_label = {t.get_text().split(" (")[0]: to_rgb(c.get_facecolor()[0])
                for t, c in zip(ax.get_legend().get_texts(), ax.collections)}
    assert by_label["unlabelled"] == to_rgb(MISSING_COLOR)
    assert sum(_grey(c) for c in by_label.values()) == 1
    plt.close(fig)


def test_reference_query_scatter_colours_reference_by_type():
    rng = np.random.default_rng(2)
    ref_xy, q_xy = rng.normal(size=(60, 2)), rng.normal(size=(20, 2))
    ref_lab = np.repeat(["A", "B", "C"], 20)
    q_lab = np.repeat(["A", "B"], 10)
    wrong = np.zeros(20, bool)
    wrong[:3] = True
    fig = reference_query_scatter(ref_xy, ref_lab, q_xy, q_lab, query_wrong=wrong)
    ax = fig.axes[0]
    colors = category_colors(["A", "B", "C"])
    ref_colors = {to_rgb(c.get_facecolor()[0]) for c in ax.collections[:3]}
    assert ref_colors == {to_rgb(colors[k]) for k in "ABC"}  # the reference is not one grey
    # The query is drawn on top, in its type's colour, with a dark edge; wrong predictions crossed.
    q_a = ax.collections[3]
    assert to_rgb(q_a.get_facecolor()[0]) == to_rgb(colors["A"]) and to_rgb(q_a.get_edgecolor()[0]) == (0, 0, 0)
    assert len(ax.collections[-1].get_offsets()) == 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"A", "B", "C"} <= set(legend) and any("predicted wrong (3)" in t for t in legend)
    plt.close(fig)


def test_predicted_vs_observed_has_axis_labels_and_identity_line():
    fig, ax = plt.subplots()
    obs = np.array([-1.0, 0.0, 2.0])
    predicted_vs_observed(ax, obs, obs * 0.5, xlabel="measured (CLR)", ylabel="predicted (CLR)", title="CD3")
    assert ax.get_xlabel() == "measured (CLR)" and ax.get_ylabel() == "predicted (CLR)" and ax.get_title() == "CD3"
    (line,) = ax.get_lines()
    x, y = line.get_data()
    assert np.allclose(x, y)  # the identity line
    assert ax.get_xlim() == ax.get_ylim() and ax.get_xlim()[0] <= -1.0 and ax.get_xlim()[1] >= 2.0
    plt.close(fig)


# ---------------------------------------------------------------------- adata-level functions (cellweave.pl)
import json  # noqa: E402

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402

import cellweave  # noqa: E402
from cellweave import pl  # noqa: E402
from cellweave._exceptions import CellWeaveInputError  # noqa: E402


@pytest.fixture()
def cells():
    """Synthetic cells with a hand-made UMAP (the plots only read obsm["X_umap"])."""
    adata = cellweave.data.synthetic_adata(n_cells=90, n_genes=60, n_cell_types=4, seed=0)
    adata.obsm["X_umap"] = np.random.default_rng(0).normal(size=(adata.n_obs, 2)).astype(np.float32)
    adata.obs["n_counts"] = np.asarray(adata.X.sum(axis=1)).ravel()
    return adata


@pytest.fixture(autouse=True)
def _no_show(monkeypatch):
    """Library code never calls plt.show() unless show=True; close every figure after each test."""
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(1))
    yield calls
    plt.close("all")


def _panels(fig):
    """The scatter panels of a figure (colour bars and blank grid cells left out)."""
    return [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>" and ax.collections]


def _legend(ax) -> list[str]:
    return [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()]


def test_umap_one_panel_per_key_with_legend_of_the_categories(cells, _no_show):
    fig = pl.umap(cells, color=["cell_type", "batch", "n_counts"])
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["cell_type", "batch", "n_counts"]
    assert _legend(panels[0]) == sorted(cells.obs["cell_type"].cat.categories)
    assert _legend(panels[1]) == sorted(cells.obs["batch"].cat.categories)
    assert panels[2].get_legend() is None and len(fig.axes) == len(panels) + 1  # a colour bar, no legend
    assert all(ax.get_xlabel() == "UMAP 1" and ax.get_ylabel() == "UMAP 2" for ax in panels)
    assert not _no_show  # no plt.show() unless asked
    pl.umap(cells, color="cell_type", show=True)
    assert _no_show == [1]


def test_category_colour_is_stable_across_calls_and_subsets(cells):
    def colours(adata):
        ax = pl.umap(adata, color="cell_type").axes[0]
        return {lab: to_rgb(c.get_facecolor()[0]) for lab, c in zip(_legend(ax), ax.collections)}

    full = colours(cells)
    sub = colours(cells[cells.obs["cell_type"] != "type_0"])  # one category absent from the subset
    assert "type_0" not in sub and all(sub[k] == full[k] for k in sub)
    assert colours(cells) == full
    assert len(set(full.values())) == len(full) and not any(_grey(c) for c in full.values())


def test_embedding_gene_colour_split_by_and_ax(cells):
    gene = str(cells.var_names[0])
    fig = pl.embedding(cells, "X_umap", color=gene)
    (ax,) = _panels(fig)
    values = np.asarray(cells[:, gene].X.toarray()).ravel()
    assert ax.get_title() == gene and np.allclose(np.sort(ax.collections[-1].get_array()), np.sort(values))
    fig = pl.umap(cells, color="cell_type", split_by="batch")
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == list(dict.fromkeys(cells.obs["batch"].astype(str)))
    assert sum(len(ax.collections[0].get_offsets()) for ax in panels) > 0
    _, given = plt.subplots()
    assert pl.umap(cells, color="batch", ax=given) is given and given.get_title() == "batch"


def test_missing_keys_name_what_is_there(cells):
    with pytest.raises(CellWeaveInputError, match="cell_type.*batch"):
        pl.umap(cells, color="celltype")
    cells.obsm.pop("X_umap")
    with pytest.raises(CellWeaveInputError, match=r"obsm holds: none\..*umap_coordinates"):
        pl.umap(cells, color="cell_type")


def test_annotation_after_tl_annotate(tiny_rna_model, tiny_vocab_and_data):
    _, adata = tiny_vocab_and_data
    adata = adata.copy()
    ref, query = adata[:80].copy(), adata[80:].copy()
    with pytest.raises(CellWeaveInputError, match="tl.annotate"):
        pl.annotation(query)
    cellweave.tl.annotate(query, reference=ref, label_key="cell_type", model=tiny_rna_model, progress=False)
    query.obsm["X_umap"] = query.obsm["X_cellweave"][:, :2]
    fig = pl.annotation(query)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["cellweave_prediction", "cellweave_confidence", "cellweave_novelty"]
    assert set(_legend(panels[0])) == set(query.obs["cellweave_prediction"].astype(str))


def _mapped_query(n_ref=60, n_query=30):
    """A query as tl.map_query leaves it (filled by hand: map_query's UMAP costs seconds)."""
    rng = np.random.default_rng(3)
    query = ad.AnnData(obs=pd.DataFrame(index=[f"q{i}" for i in range(n_query)]))
    query.obsm["X_cellweave_reference_umap"] = rng.normal(size=(n_query, 2)).astype(np.float32)
    query.obs["cellweave_prediction"] = pd.Categorical(rng.choice(["A", "B", "unknown"], n_query),
                                                       categories=["A", "B", "C", "unknown"])
    query.obs["cell_type"] = rng.choice(["A", "B", "C"], n_query)
    query.uns["cellweave"] = {"map_query": {"reference_umap": rng.normal(size=(n_ref, 2)).astype(np.float32),
                                            "reference_labels": list(np.repeat(["A", "B", "C"], n_ref // 3))}}
    return query


def test_query_mapping_crosses_wrong_predictions():
    query = _mapped_query()
    ax = pl.query_mapping(query, label_key="cell_type").axes[0]
    n_wrong = int((query.obs["cellweave_prediction"].astype(str) != query.obs["cell_type"]).sum())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"A", "B", "C"} <= set(legend) and f"query, predicted wrong ({n_wrong})" in legend
    assert len(ax.collections[-1].get_offsets()) == n_wrong
    # Without measured labels the query is coloured by its prediction and nothing is crossed.
    legend = [t.get_text() for t in pl.query_mapping(query).axes[0].get_legend().get_texts()]
    assert "unknown" in legend and not any("predicted wrong" in t for t in legend)
    del query.uns["cellweave"]
    with pytest.raises(CellWeaveInputError, match="tl.map_query"):
        pl.query_mapping(query)


def test_perturbation_after_tl_perturb(tiny_rna_model, tiny_vocab_and_data):
    _, adata = tiny_vocab_and_data
    adata = adata.copy()
    with pytest.raises(CellWeaveInputError, match="gene_id.*tl.perturb"):
        pl.perturbation(adata)
    cellweave.tl.perturb(adata, genes=[str(adata.var_names[3])], model=tiny_rna_model, groupby="cell_type",
                         progress=False)
    fig = pl.perturbation(adata, n_genes=10)
    assert len(fig.axes) == 2
    delta = adata.var["cellweave_perturb_delta"]
    top = delta.abs().sort_values(ascending=False, kind="stable").index[:10]
    genes = [t.get_text() for t in fig.axes[0].get_yticklabels()][::-1]  # largest change at the top
    assert set(genes) == set(top) and genes[0] == top[0]
    groups = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert set(groups) == set(adata.obs["cell_type"].astype(str))
    assert "knockout" in fig._suptitle.get_text()
    observed = pd.Series(2 * delta.to_numpy(), index=adata.var_names)
    fig = pl.perturbation(adata, observed=observed)
    assert len(fig.axes) == 3 and "r = 1.00" in fig.axes[2].get_title()


def test_perturbation_reads_predict_perturbation_output():
    rng = np.random.default_rng(4)
    out = ad.AnnData(X=rng.random((20, 8)).astype(np.float32), var=pd.DataFrame(index=[f"g{i}" for i in range(8)]))
    out.var["cellweave_predicted_delta"] = np.linspace(-1, 1, 8).astype(np.float32)
    out.obs["cellweave_predicted_shift"] = rng.random(20).astype(np.float32)
    out.uns["cellweave"] = {"predict_perturbation": {"perturbation": "JAK2"}}
    fig = pl.perturbation(out, n_genes=3)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][::-1] == ["g0", "g7", "g1"]
    assert fig.axes[1].get_ylabel() == "cells" and "JAK2" in fig._suptitle.get_text()


def _gene_map():
    """What tl.gene_map returns, by hand (its Leiden and UMAP need a model and seconds)."""
    rng = np.random.default_rng(5)
    names = [f"G{i}" for i in range(40)]
    g = ad.AnnData(X=rng.normal(size=(40, 8)).astype(np.float32), obs=pd.DataFrame(index=names))
    g.obs["program"] = pd.Categorical([str(i % 4) for i in range(40)])
    g.obsm["X_umap"] = rng.normal(size=(40, 2)).astype(np.float32)
    return g


def test_gene_map_by_program_and_by_gene_sets():
    g = _gene_map()
    ax = pl.gene_map(g).axes[0]
    assert _legend(ax) == ["0", "1", "2", "3"] and ax.get_xlabel() == "UMAP 1"
    sets = {"IFN": ["G0", "G1", "G2", "G3"], "tiny": ["G5", "G6"], "cycle": ["G10", "G11", "G12", "NOTAGENE"]}
    ax = pl.gene_map(g, gene_sets=sets).axes[0]
    assert _legend(ax) == ["other genes", "IFN", "cycle"]  # "tiny" has fewer than min_genes=3
    assert to_rgb(ax.collections[0].get_facecolor()[0]) == to_rgb(MISSING_COLOR)
    assert len(ax.collections[1].get_offsets()) == 4 and len(ax.collections[2].get_offsets()) == 3
    with pytest.raises(CellWeaveInputError, match="tl.gene_map"):
        pl.gene_map(ad.AnnData(obs=pd.DataFrame(index=["a"])))


def test_imputation_aligns_cells_and_features():
    rng = np.random.default_rng(6)
    names = ["CD3", "CD4", "CD8", "CD19", "CD14"]
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(30)]))
    truth = rng.normal(size=(30, 5))
    adata.obsm["cellweave_prot"] = (2 * truth).astype(np.float32)
    adata.uns["cellweave"] = {"cellweave_prot": {"feature_names": names, "units": "CLR"}}
    # Measured for 20 of the cells, proteins in another order: aligned by name.
    order = [3, 0, 4, 1, 2]
    measured = ad.AnnData(X=truth[:20][:, order], obs=pd.DataFrame(index=adata.obs_names[:20]),
                          var=pd.DataFrame(index=[names[j] for j in order]))
    fig = pl.imputation(adata, measured, target="prot")
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == names
    xy = panels[1].collections[0].get_offsets()
    assert len(xy) == 20 and np.allclose(xy[:, 1], 2 * xy[:, 0])  # the right protein, the right cells
    assert panels[0].get_ylabel() == "predicted" and "CLR" in fig._suptitle.get_text()
    fig = pl.imputation(adata, truth, features=["CD8"])
    assert [ax.get_title() for ax in fig.axes if ax.axison] == ["CD8"]
    with pytest.raises(CellWeaveInputError, match="cellweave_prot"):
        pl.imputation(adata, truth, target="atac")


def test_training_from_a_history_or_a_model_folder(tmp_path):
    history = [{"epoch": 0, "val_loss": 1.0, "val_token_mse": 0.9},
               {"epoch": 1, "train_loss": 0.8, "val_loss": 0.7, "val_token_mse": 0.6}]
    (tmp_path / "history.json").write_text(json.dumps(history))
    ax = pl.training(tmp_path).axes[0]
    assert len(ax.get_lines()) == 3 and ax.get_xlabel() == "epoch" and ax.get_yscale() == "log"
    _, given = plt.subplots()
    assert pl.training(history, ax=given) is given
    with pytest.raises(CellWeaveInputError, match="empty"):
        pl.training([])


def test_neighbouring_categories_never_share_a_hue() -> None:
    """tab20 comes in dark/light pairs of one hue: two consecutive labels must not get a pair."""
    import colorsys

    from cellweave.pl import category_colors

    for n in (12, 18, 40):
        colors = list(category_colors([f"type {i}" for i in range(n)]).values())
        assert len({tuple(c) for c in colors}) == n  # all distinct
        hues = [colorsys.rgb_to_hsv(*c[:3])[0] for c in colors]
        gaps = [min(abs(a - b), 1 - abs(a - b)) for a, b in zip(hues, hues[1:])]
        assert min(gaps) > 0.02, (n, min(gaps))
