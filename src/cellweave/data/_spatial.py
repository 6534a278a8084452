"""Spatial neighbourhoods within tissue sections (numpy/scikit-learn; no torch).

Coordinates of different sections are never compared: each cell's neighbours are searched
among the cells of its own section only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cellweave._exceptions import CellWeaveInputError

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

#: obs columns taken as the section of a cell when no ``section_key`` is given, in this order.
SECTION_COLUMNS: tuple[str, ...] = ("section", "library_id", "sample", "batch")


def spatial_coordinates(data: AnnData | MuData, key: str = "spatial") -> np.ndarray | None:
    """``obsm[key]`` of an AnnData, or of a MuData (its own obsm, else its ``rna`` modality's,
    aligned to the container's cells); ``None`` when there is none."""
    obsm = getattr(data, "obsm", {})
    if key in obsm:
        return np.asarray(obsm[key], dtype=np.float64)[:, :2]
    mod = getattr(data, "mod", None)
    if mod is not None and "rna" in mod and key in mod["rna"].obsm:
        rna = mod["rna"]
        coords = np.full((data.n_obs, 2), np.nan)
        rows = data.obs_names.get_indexer(rna.obs_names)
        coords[rows] = np.asarray(rna.obsm[key], dtype=np.float64)[:, :2]
        return coords
    return None


def section_labels(obs: pd.DataFrame, section_key: str | None = None) -> tuple[np.ndarray, str | None]:
    """Section of every cell: ``obs[section_key]``, else the first of :data:`SECTION_COLUMNS`
    present, else one section. Returns the labels and the column used (or ``None``)."""
    if section_key is not None:
        if section_key not in obs:
            raise CellWeaveInputError(
                f"obs has no column {section_key!r} to take tissue sections from; columns: "
                f"{', '.join(map(str, obs.columns)) or 'none'}. Pass section_key= one of them, or None."
            )
        return obs[section_key].astype(str).to_numpy(), section_key
    for col in SECTION_COLUMNS:
        if col in obs:
            return obs[col].astype(str).to_numpy(), col
    return np.zeros(len(obs), dtype=object).astype(str), None


def spatial_neighbors(coords: np.ndarray, sections: np.ndarray, *, n_neighbors: int = 10) -> np.ndarray:
    """Indices ``(n_cells, n_neighbors)`` of each cell's nearest cells in space, itself excluded,
    searched within its section only. Sections with fewer cells repeat their farthest neighbour."""
    from sklearn.neighbors import NearestNeighbors

    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[0] != len(sections):
        raise CellWeaveInputError(f"Spatial coordinates of shape {coords.shape} do not match {len(sections)} cells.")
    if not np.isfinite(coords).all():
        raise CellWeaveInputError(
            "obsm['spatial'] has NaN or infinite coordinates (or cells without coordinates); "
            "drop those cells or embed with spatial=False."
        )
    if n_neighbors < 1:
        raise CellWeaveInputError(f"n_neighbors must be at least 1, not {n_neighbors}.")
    out = np.empty((coords.shape[0], n_neighbors), dtype=np.int64)
    for section in pd.unique(sections):
        idx = np.flatnonzero(sections == section)
        if idx.size == 1:
            out[idx] = idx[0]
            continue
        k = min(n_neighbors + 1, idx.size)
        nn = NearestNeighbors(n_neighbors=k).fit(coords[idx])
        _, nbr = nn.kneighbors(coords[idx])
        # Drop each cell itself (not always column 0 when spots share coordinates).
        local = np.array([[j for j in row if j != i][: k - 1] for i, row in enumerate(nbr)], dtype=np.int64)
        if local.shape[1] < n_neighbors:
            local = np.concatenate([local, np.repeat(local[:, -1:], n_neighbors - local.shape[1], axis=1)], axis=1)
        out[idx] = idx[local]
    return out


def section_neighbors(
    data: AnnData | MuData, *, spatial_key: str = "spatial", section_key: str | None = None, n_neighbors: int = 10,
    name: str = "data",
) -> tuple[np.ndarray, dict[str, object]]:
    """Each cell's ``n_neighbors`` nearest cells of its own section within ``data`` (indices into
    ``data``), and a record of how they were found: ``spatial_key``, ``n_neighbors``,
    ``section_key`` (the column used; ``""``: one section) and ``n_sections``. Errors name the
    problem in ``name`` (e.g. ``"reference"``) and the fix."""
    if section_key is not None and section_key not in data.obs:
        raise CellWeaveInputError(
            f"section_key {section_key!r} is not a column of {name}.obs; columns: "
            f"{', '.join(map(str, data.obs.columns)) or 'none'}. Add the column to the {name}, pass another "
            "section_key, or None (the first of section/library_id/sample/batch, else one section)."
        )
    coords = spatial_coordinates(data, spatial_key)
    if coords is None:
        raise CellWeaveInputError(f"The {name} has no obsm[{spatial_key!r}] coordinates; add them or work without "
                                  "spatial context (spatial=False, --no-spatial).")
    if not np.isfinite(coords).all():
        raise CellWeaveInputError(
            f"{name}.obsm[{spatial_key!r}] has NaN or infinite coordinates (or cells without coordinates); drop "
            f"those cells from the {name} or work without spatial context (spatial=False)."
        )
    sections, col = section_labels(data.obs, section_key)
    nbr = spatial_neighbors(coords, sections, n_neighbors=n_neighbors)
    record = {"spatial_key": spatial_key, "n_neighbors": int(nbr.shape[1]), "section_key": col or "",
              "n_sections": int(len(set(sections)))}
    return nbr, record


def neighbourhood_mean(X: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Mean of ``X`` (dense ``(n, d)`` or sparse) over each cell's spatial neighbours."""
    import scipy.sparse as sp

    n, k = neighbors.shape
    W = sp.csr_matrix((np.full(n * k, 1.0 / k), (np.repeat(np.arange(n), k), neighbors.ravel())), shape=(n, n))
    out = W @ X
    return np.asarray(out.todense() if sp.issparse(out) else out, dtype=np.float32)
