"""``pl.perturbation``: what ``tl.perturb`` or ``tl.predict_perturbation`` predicted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError

from ._keys import _listing, finish, obs_column
from ._plots import _pyplot, predicted_vs_observed

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure

#: The fixed field names of ``tl.predict_perturbation`` (its ``key_added`` names only the layer).
PREDICTED_DELTA, PREDICTED_SHIFT = "cellweave_predicted_delta", "cellweave_predicted_shift"


def _fields(adata: AnnData, key_added: str | None) -> dict[str, Any]:
    """Where the results are, for ``tl.perturb`` (prefix ``key_added``) or ``tl.predict_perturbation``."""
    record = adata.uns.get(UNS_KEY, {})
    prefix = key_added or "cellweave"
    if f"{prefix}_perturb_delta" in adata.var.columns:
        rec = record.get("perturb", {})
        what = f"in silico {rec.get('mode', 'perturbation')} of {'+'.join(map(str, rec.get('genes', [])))}"
        return {"delta": f"{prefix}_perturb_delta", "shift": f"{prefix}_shift", "record": rec, "title": what,
                "units": str(rec.get("units", "model value units")),
                "shift_label": "embedding shift per cell (Euclidean, X_cellweave space)"}
    if key_added is None and PREDICTED_DELTA in adata.var.columns:
        rec = record.get("predict_perturbation", {})
        return {"delta": PREDICTED_DELTA, "shift": PREDICTED_SHIFT, "record": rec,
                "title": f"predicted response to {rec.get('perturbation', 'the perturbation')}",
                "units": "log1p-normalized expression",
                "shift_label": "norm of each cell's predicted change"}
    raise CellWeaveInputError(
        f"No .var[{prefix + '_perturb_delta'!r}]"
        + ("" if key_added else f" nor .var[{PREDICTED_DELTA!r}]")
        + f"; .var holds: {_listing(adata.var.columns)}. Run `cellweave.tl.perturb(adata, genes=[...])` "
        "(or use the AnnData that `cellweave.tl.predict_perturbation` returns) first."
    )


def perturbation(
    adata: AnnData,
    *,
    key_added: str | None = None,
    observed: pd.Series | np.ndarray | None = None,
    n_genes: int = 20,
    title: str | None = None,
    show: bool | None = None,
) -> Figure:
    """The most changed genes, the shift per cell (or per group), and, given measured changes,
    predicted against observed change per gene.

    Reads what :func:`cellweave.tl.perturb` wrote (``var[f"{key_added}_perturb_delta"]``,
    ``obs[f"{key_added}_shift"]``, the ``top_groups`` of ``uns["cellweave"]["perturb"]`` when it
    was run with ``groupby``) or the AnnData that :func:`cellweave.tl.predict_perturbation`
    returns (``var["cellweave_predicted_delta"]``, ``obs["cellweave_predicted_shift"]``).

    Parameters
    ----------
    adata
        Cells after ``tl.perturb``, or the output of ``tl.predict_perturbation``.
    key_added
        The prefix given to ``tl.perturb``; default ``"cellweave"``, else the fields of
        ``tl.predict_perturbation``.
    observed
        Measured mean change per gene in the same units (e.g. mean log1p-normalized expression of
        the perturbed cells minus that of the controls, for ``predict_perturbation``): a Series
        indexed by gene (aligned to ``var_names``; missing genes left out) or an array over ``var_names``.
    n_genes
        Genes shown in the ranking.
    title
        Figure title; default: what was perturbed.
    show
        Call ``plt.show()``.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`: 2 panels, 3 with ``observed``.

    Examples
    --------
    >>> cellweave.tl.perturb(adata, genes=["STAT1"], groupby="cell_type")
    >>> cellweave.pl.perturbation(adata)
    >>> pred = cellweave.tl.predict_perturbation(controls, model="ft_model/", perturbation="JAK2")
    >>> cellweave.pl.perturbation(pred, observed=measured_mean_change)
    """
    plt = _pyplot()
    f = _fields(adata, key_added)
    delta = np.asarray(adata.var[f["delta"]], dtype=float)
    shift = np.asarray(obs_column(adata, f["shift"]), dtype=float)
    genes = np.asarray(adata.var_names).astype(str)
    obs_delta = None
    if observed is not None:
        if isinstance(observed, pd.Series):
            obs_delta = observed.reindex(adata.var_names).to_numpy(dtype=float)
        else:
            obs_delta = np.asarray(observed, dtype=float).ravel()
            if obs_delta.size != adata.n_vars:
                raise CellWeaveInputError(f"observed has {obs_delta.size} values for {adata.n_vars} genes; pass one per "
                                          "var_name or a Series indexed by gene.")
    n_panels = 2 if obs_delta is None else 3
    fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 4.2 + 0.08 * min(n_genes, 40)))

    ax = axes[0]
    order = np.argsort(-np.nan_to_num(np.abs(delta), nan=-1.0), kind="stable")[:n_genes][::-1]
    order = order[np.isfinite(delta[order])]
    vals = delta[order]
    ax.barh(np.arange(len(order)), vals, color=np.where(vals >= 0, "#d62728", "#1f77b4"))
    ax.set_yticks(np.arange(len(order)))
    ax.set_yticklabels(genes[order], fontsize=7)
    ax.axvline(0, color="#999999", lw=0.8)
    ax.set_xlabel(f"mean predicted change ({f['units']})", fontsize=8)
    ax.set_title(f"{len(order)} most changed genes", fontsize=9)

    ax = axes[1]
    groups = f["record"].get("top_groups")
    if groups is not None:
        names = [str(g) for g in groups["group"]][:n_genes][::-1]
        means = np.asarray(groups["mean_shift"], dtype=float)[:n_genes][::-1]
        ax.barh(np.arange(len(names)), means, color="#7f7f7f")
        ax.set_yticks(np.arange(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel(f"mean {f['shift_label']}", fontsize=8)
        ax.set_title(f"shift by {f['record'].get('groupby', 'group')}", fontsize=9)
    else:
        ax.hist(shift[np.isfinite(shift)], bins=30, color="#7f7f7f")
        ax.set_xlabel(f["shift_label"], fontsize=8)
        ax.set_ylabel("cells", fontsize=8)
        ax.set_title("shift per cell", fontsize=9)

    if obs_delta is not None:
        ok = np.isfinite(obs_delta) & np.isfinite(delta)
        r = float(np.corrcoef(obs_delta[ok], delta[ok])[0, 1]) if ok.sum() > 2 else float("nan")
        predicted_vs_observed(axes[2], obs_delta[ok], delta[ok], xlabel=f"observed change ({f['units']})",
                              ylabel=f"predicted change ({f['units']})", title=f"{int(ok.sum())} genes, r = {r:.2f}")
    fig.suptitle(f["title"] if title is None else title, fontsize=10)
    fig.tight_layout()
    return finish(fig, None, show)
