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
