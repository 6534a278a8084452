"""Synthetic AnnData and MuData with real feature names, for tests and examples.

The counts are negative binomial with cell-type programs (so cell types are separable), a mild
batch shift, a knock-down for perturbed cells and, optionally, spatial clustering. Genes are real
symbols with their real unversioned Ensembl IDs, so the vocabulary and mapping code sees the same
kind of features as in real data.

Which genes are used depends on ``n_genes`` and ``organism`` only, not on ``seed``: objects drawn
with different seeds share their genes, so a vocabulary built from one covers the other.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellweave._exceptions import CellWeaveInputError
from cellweave.genes import gene_table

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

_GENE_TABLES = {
    "human": "gencode_v44_human_gene_id2name.tsv.gz",
    "mouse": "biomart_mouse_gene_ids.tsv.gz",
}
#: Symbol patterns of named genes: no clone-based names (AC000061.1), mitochondrial genes,
#: small RNAs, lincRNAs, predicted genes (Gm1234) or pseudogenes (RPL7P1, MBL3P).
_SYMBOL_RE = {
    "human": re.compile(r"^(?!MT-|SNOR|SCARNA|MIR|LINC|RN7S|RNU|RNA5|RNY|LOC|OR\d)(?!.*\d[A-Z]?P\d*$)[A-Z][A-Z0-9]{1,7}$"),
    "mouse": re.compile(r"^(?!mt-|Gm\d|Snor|Mir|Olfr|Vmn)(?!.*\dp?s?\d*$)[A-Z][a-z][a-z0-9]{0,6}$"),
}

#: TotalSeq-B style antibodies and the gene each one targets.
_ANTIBODIES: tuple[tuple[str, str], ...] = (
    ("CD3", "CD3E"), ("CD4", "CD4"), ("CD8", "CD8A"), ("CD14", "CD14"), ("CD16", "FCGR3A"),
    ("CD19", "CD19"), ("CD20", "MS4A1"), ("CD25", "IL2RA"), ("CD56", "NCAM1"), ("CD11b", "ITGAM"),
    ("CD11c", "ITGAX"), ("CD127", "IL7R"), ("CD27", "CD27"), ("CD28", "CD28"), ("CD34", "CD34"),
    ("CD38", "CD38"), ("CD44", "CD44"), ("CD45", "PTPRC"), ("CD69", "CD69"), ("CD86", "CD86"),
    ("CD197", "CCR7"), ("HLA-DR", "HLA-DRA"), ("CD123", "IL3RA"), ("CD161", "KLRB1"),
    ("PD-1", "PDCD1"), ("CD279", "PDCD1"), ("CD62L", "SELL"), ("CD57", "B3GAT1"),
    ("CD39", "ENTPD1"), ("CD95", "FAS"),
)


def _gene_table(organism: str) -> pd.DataFrame:
    """Ensembl ID / symbol table of ``organism``, read (once) by the genes layer."""
    if organism not in _GENE_TABLES:
        raise CellWeaveInputError(f"organism={organism!r} is not supported; use 'human' or 'mouse'.")
    return gene_table(_GENE_TABLES[organism])


@functools.lru_cache(maxsize=None)
def _gene_pool(organism: str) -> pd.DataFrame:
    """Named genes with exactly one Ensembl ID each, in a fixed shuffled order."""
    table = _gene_table(organism)
    table = table[(table["ensembl_gene_id"] != "") & table["gene_symbol"].str.match(_SYMBOL_RE[organism])]
    table = table.drop_duplicates("ensembl_gene_id")
    counts = table["gene_symbol"].value_counts()
    table = table[table["gene_symbol"].map(counts) == 1]
    table = table.sort_values("ensembl_gene_id").reset_index(drop=True)
    order = np.random.default_rng(0).permutation(len(table))
    return table.iloc[order].reset_index(drop=True)


def _genes(organism: str, n_genes: int) -> pd.DataFrame:
    pool = _gene_pool(organism)
    if n_genes > len(pool):
        raise CellWeaveInputError(f"n_genes={n_genes} exceeds the {len(pool)} {organism} genes available.")
    return pool.iloc[:n_genes]


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: float) -> np.ndarray:
    """Negative binomial counts with mean ``mu`` and inverse dispersion ``theta``."""
    return rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)


def _programs(
    rng: np.random.Generator, n_features: int, n_cell_types: int, *, base_scale: float, fold: float
) -> np.ndarray:
    """Per cell type x feature mean: shared baseline times a block of up-regulated features per type."""
    base = rng.lognormal(mean=np.log(base_scale), sigma=1.0, size=n_features)
    means = np.tile(base, (n_cell_types, 1))
    blocks = np.array_split(rng.permutation(n_features), n_cell_types + 1)
    for k in range(n_cell_types):
        means[k, blocks[k]] *= fold
    return means


def _cell_table(
    rng: np.random.Generator, n_cells: int, n_cell_types: int, n_batches: int
) -> pd.DataFrame:
    if n_cells < 1 or n_cell_types < 1 or n_batches < 1:
        raise CellWeaveInputError("n_cells, n_cell_types and n_batches must all be at least 1.")
    types = np.arange(n_cells) % n_cell_types
    rng.shuffle(types)
    batches = rng.integers(0, n_batches, size=n_cells)
    obs = pd.DataFrame(index=[f"cell_{i}" for i in range(n_cells)])
    obs["cell_type"] = pd.Categorical([f"type_{t}" for t in types], categories=[f"type_{k}" for k in range(n_cell_types)])
    obs["batch"] = pd.Categorical([f"batch_{b}" for b in batches], categories=[f"batch_{k}" for k in range(n_batches)])
    return obs


def _rna_counts(
    rng: np.random.Generator, obs: pd.DataFrame, n_genes: int, targets: Sequence[int]
) -> tuple[sp.csr_matrix, np.ndarray]:
    types = obs["cell_type"].cat.codes.to_numpy()
    batches = obs["batch"].cat.codes.to_numpy()
    n_types = len(obs["cell_type"].cat.categories)
    n_batches = len(obs["batch"].cat.categories)
    means = _programs(rng, n_genes, n_types, base_scale=0.3, fold=6.0)
    batch_shift = rng.lognormal(0.0, 0.25, size=(n_batches, n_genes))
    size_factor = rng.lognormal(0.0, 0.3, size=len(obs))
    mu = means[types] * batch_shift[batches] * size_factor[:, None]
    # Perturbed cells: each target gets as many cells as the controls; its counts drop 10-fold.
    which = rng.integers(-1, len(targets), size=len(obs)) if len(targets) else np.full(len(obs), -1)
    for j, g in enumerate(targets):
        mu[which == j, g] *= 0.1
    return sp.csr_matrix(_nb(rng, mu, theta=5.0)), which


def synthetic_adata(
    n_cells: int = 200,
    n_genes: int = 300,
    *,
    n_cell_types: int = 3,
    n_batches: int = 2,
    organism: Literal["human", "mouse"] = "human",
    spatial: bool = False,
    seed: int = 0,
) -> AnnData:
    """A small AnnData of raw RNA counts with cell types, batches and perturbations.

    Parameters
    ----------
    n_cells, n_genes
        Shape of ``X``.
    n_cell_types
        Number of cell types; each up-regulates its own block of genes (6-fold).
    n_batches
        Number of batches; each scales every gene by a mild random factor (log-sd 0.25).
    organism
        ``"human"`` (GENCODE v44 genes) or ``"mouse"`` (Ensembl BioMart genes).
    spatial
        Add ``obsm["spatial"]``: 2-D coordinates, cells of one type clustered together.
    seed
        Seed of every random draw; the same arguments give the same object.

    Returns
    -------
    AnnData with ``X`` (CSR float32 counts), ``var_names`` (gene symbols), ``var["gene_id"]``
    (unversioned Ensembl IDs), ``obs["cell_type"]``, ``obs["batch"]``, ``obs["perturbation"]``
    (``"control"`` or the knocked-down gene, whose counts are reduced 10-fold),
    ``uns["x_kind"] = "counts"`` and, if asked, ``obsm["spatial"]``.

    Examples
    --------
    >>> from cellweave.data import synthetic_adata
    >>> adata = synthetic_adata(n_cells=50, n_genes=100)
    >>> adata.shape
    (50, 100)
    """
    from anndata import AnnData

    if n_genes < 1:
        raise CellWeaveInputError("n_genes must be at least 1.")
    rng = np.random.default_rng(seed)
    genes = _genes(organism, n_genes)
    obs = _cell_table(rng, n_cells, n_cell_types, n_batches)
    n_targets = min(3, max(n_genes // 50, 1)) if n_genes >= 10 else 0
    targets = rng.choice(n_genes, size=n_targets, replace=False) if n_targets else np.array([], dtype=int)
    X, which = _rna_counts(rng, obs, n_genes, targets)
    symbols = genes["gene_symbol"].to_numpy()
    target_symbols = symbols[targets]
    labels = np.array(["control", *target_symbols], dtype=object)[which + 1]
    obs["perturbation"] = pd.Categorical(labels, categories=["control", *target_symbols])
    var = pd.DataFrame({"gene_id": genes["ensembl_gene_id"].to_numpy()}, index=pd.Index(symbols, name=None))
    var["feature_type"] = "Gene Expression"
    adata = AnnData(X=X, obs=obs, var=var)
    adata.uns["x_kind"] = "counts"
    adata.uns["synthetic"] = {"seed": int(seed), "organism": organism, "n_cell_types": int(n_cell_types)}
    if spatial:
        adata.obsm["spatial"] = _spatial(rng, obs["cell_type"].cat.codes.to_numpy(), n_cell_types)
    return adata


def _spatial(rng: np.random.Generator, types: np.ndarray, n_types: int) -> np.ndarray:
    angle = 2 * np.pi * np.arange(n_types) / max(n_types, 1)
    centers = 100.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (centers[types] + rng.normal(0.0, 15.0, size=(len(types), 2))).astype(np.float32)


def _protein_adata(rng: np.random.Generator, obs: pd.DataFrame, n_proteins: int) -> AnnData:
    from anndata import AnnData

    if n_proteins > len(_ANTIBODIES):
        raise CellWeaveInputError(f"n_proteins={n_proteins} exceeds the {len(_ANTIBODIES)} antibodies available.")
    abs_ = _ANTIBODIES[:n_proteins]
    types = obs["cell_type"].cat.codes.to_numpy()
    n_types = len(obs["cell_type"].cat.categories)
    # Antibody counts: an ambient background for every antibody plus a cell-type-specific signal.
    means = _programs(rng, n_proteins, n_types, base_scale=20.0, fold=10.0)
    mu = means[types] * rng.lognormal(0.0, 0.3, size=len(obs))[:, None]
    X = sp.csr_matrix(_nb(rng, mu, theta=3.0))
    id_of = dict(zip(_gene_table("human")["gene_symbol"], _gene_table("human")["ensembl_gene_id"]))
    var = pd.DataFrame(index=[f"{name}_TotalSeqB" for name, _ in abs_])
    var["gene_symbol"] = [g for _, g in abs_]
    var["gene_id"] = [id_of.get(g, "") for _, g in abs_]
    var["feature_type"] = "Antibody Capture"
    adata = AnnData(X=X, obs=pd.DataFrame(index=obs.index), var=var)
    adata.uns["x_kind"] = "counts"
    return adata


def _atac_adata(rng: np.random.Generator, obs: pd.DataFrame, n_peaks: int) -> AnnData:
    from anndata import AnnData

    types = obs["cell_type"].cat.codes.to_numpy()
    n_types = len(obs["cell_type"].cat.categories)
    # Peaks of 500 bp spread over three chromosomes in sorted order, as a peak caller writes them.
    chroms = np.array(["chr1", "chr2", "chr3"])[np.sort(rng.integers(0, 3, size=n_peaks))]
    starts = np.zeros(n_peaks, dtype=np.int64)
    for c in np.unique(chroms):
        idx = np.flatnonzero(chroms == c)
        starts[idx] = np.sort(rng.choice(np.arange(1, 200_000), size=len(idx), replace=False)) * 1000
    ends = starts + 500
    means = _programs(rng, n_peaks, n_types, base_scale=0.05, fold=8.0)
    mu = np.minimum(means[types] * rng.lognormal(0.0, 0.3, size=len(obs))[:, None], 3.0)
    # Fragments per peak: mostly 0/1, sometimes 2 (two alleles), as in real snATAC-seq.
    X = sp.csr_matrix(np.minimum(rng.poisson(mu), 2).astype(np.float32))
    names = [f"{c}:{s}-{e}" for c, s, e in zip(chroms, starts, ends)]
    var = pd.DataFrame({"chrom": chroms, "start": starts, "end": ends}, index=names)
    var["feature_type"] = "Peaks"
    adata = AnnData(X=X, obs=pd.DataFrame(index=obs.index), var=var)
    adata.uns["x_kind"] = "counts"
    return adata


def synthetic_mudata(
    n_cells: int = 200,
    *,
    modalities: Sequence[str] = ("rna", "prot", "atac"),
    n_genes: int = 300,
    n_proteins: int = 20,
    n_peaks: int = 200,
    n_cell_types: int = 3,
    n_batches: int = 2,
    organism: Literal["human", "mouse"] = "human",
    missing: dict[str, float] | None = None,
    seed: int = 0,
) -> MuData:
    """A small MuData with RNA, protein and ATAC counts that share cell types.

    Parameters
    ----------
    n_cells
        Number of cells in ``mdata.obs``.
    modalities
        Any of ``"rna"``, ``"prot"``, ``"atac"``.
    n_genes, n_proteins, n_peaks
        Features per modality (at most 30 proteins).
    n_cell_types, n_batches, organism
        As in :func:`synthetic_adata`.
    missing
        Fraction of cells lacking a modality, e.g. ``{"prot": 0.3}``; those cells are absent
        from that modality's ``obs``. Every cell keeps at least one modality.
    seed
        Seed of every random draw.

    Returns
    -------
    MuData whose ``obs`` holds ``cell_type``, ``batch`` (and ``perturbation`` with RNA); modality
    ``obs`` are empty, as in the bundled files. ``rna`` is as in :func:`synthetic_adata`;
    ``prot`` has names like ``"CD3_TotalSeqB"`` with ``var["gene_symbol"]``; ``atac`` has
    ``"chr1:1000-1500"``-style names with ``chrom``/``start``/``end`` columns and 0/1/2 counts.
    Each modality has ``uns["x_kind"] = "counts"``.
    """
    from mudata import MuData

    known = ("rna", "prot", "atac")
    bad = [m for m in modalities if m not in known]
    if bad or not modalities:
        raise CellWeaveInputError(f"modalities must be a non-empty subset of {known}; got {list(modalities)}.")
    missing = dict(missing or {})
    bad = {m: f for m, f in missing.items() if m not in modalities or not 0 <= f < 1}
    if bad:
        raise CellWeaveInputError(
            f"missing={bad}: keys must be among modalities {list(modalities)} and fractions in [0, 1)."
        )
    rna_all = (
        synthetic_adata(n_cells, n_genes, n_cell_types=n_cell_types, n_batches=n_batches, organism=organism, seed=seed)
        if "rna" in modalities
        else None
    )
    rng = np.random.default_rng([seed, 1])
    if rna_all is not None:
        obs = rna_all.obs.copy()
    else:
        obs = _cell_table(rng, n_cells, n_cell_types, n_batches)
    full: dict[str, AnnData] = {}
    for mod in modalities:
        if mod == "rna":
            a = rna_all.copy()
            a.obs = pd.DataFrame(index=obs.index)
        elif mod == "prot":
            a = _protein_adata(rng, obs, n_proteins)
        else:
            a = _atac_adata(rng, obs, n_peaks)
        full[mod] = a
    present = {m: np.ones(n_cells, dtype=bool) for m in modalities}
    for mod, frac in missing.items():
        present[mod][rng.choice(n_cells, size=int(round(frac * n_cells)), replace=False)] = False
    nothing = ~np.any(np.stack(list(present.values())), axis=0)
    present[modalities[0]][nothing] = True
    mods = {m: full[m][present[m]].copy() for m in modalities}
    import mudata

    with mudata.set_options(pull_on_update=False):  # the 0.4 behaviour: no column pulling
        mdata = MuData(mods)
    for col in obs.columns:
        mdata.obs[col] = obs[col].reindex(mdata.obs_names).to_numpy()
        mdata.obs[col] = mdata.obs[col].astype(pd.CategoricalDtype(obs[col].cat.categories))
    mdata.uns["x_kind"] = {m: "counts" for m in modalities}
    mdata.uns["synthetic"] = {"seed": int(seed), "organism": organism, "missing": missing}
    return mdata
