"""Converters from a dataset's published source files to its cellweave file.

Each converter takes ``paths`` (the source file's basename -> its local path, as returned by
:func:`cellweave._fetch.fetch_sources`) and returns the converted object in memory; the caller
writes it. What every conversion does is documented in the dataset's ``PROVENANCE.md`` in the
data mirror; the converters here reproduce those files (obs/var names and columns, X, obsm and
``uns``). Gene IDs and symbols come from the gene tables of :mod:`cellweave.genes`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from mudata import MuData

from cellweave._exceptions import CellWeaveDataError
from cellweave.genes import (
    BIOLEGEND_TOTALSEQ,
    BIOMART_HUMAN,
    BIOMART_MOUSE,
    GENCODE_HUMAN,
    gene_table,
    human_id_to_symbol,
    symbol_index,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CONVERTERS",
    "convert_citeseq_pbmc_10x_scvi_tests",
    "convert_multibatch_cellbench_sc_mixology",
    "convert_spatial_osmfish_scvi",
]

_GENE_EXPRESSION = "Gene Expression"
_ANTIBODY_CAPTURE = "Antibody Capture"

# ---------------------------------------------------------------------------------------------
# uns['dataset'] of each converted file (our own conversion documentation).
# ---------------------------------------------------------------------------------------------

_MIXOLOGY_DATASET: dict[str, str] = {
    "name": "multibatch_cellbench_sc_mixology",
    "source": "GitHub LuyiTian/sc_mixology",
    "commit_or_version": "7d00ffb0bd043467f365a9358d7312f294f13c9f",
    "path_in_source": (
        "data/csv/{sc_celseq2,sc_dropseq,sc_celseq2_5cl_p1,sc_celseq2_5cl_p2,sc_celseq2_5cl_p3}"
        ".{count,metadata}.csv.gz"
    ),
    "publication": (
        "Tian L, et al. (2019) Benchmarking single cell RNA-sequencing analysis pipelines using mixture "
        "control experiments. Nat Methods 16:479-487. doi:10.1038/s41592-019-0425-8 (GEO GSE118767)"
    ),
    "license": "none stated in the source repository",
    "organism": "Homo sapiens",
    "assay": "CEL-seq2 and Drop-seq scRNA-seq of lung adenocarcinoma cell-line mixtures",
    "notes": (
        "Five count tables concatenated (outer join on Ensembl IDs, genes absent from a table filled "
        "with 0; var['in_<batch>'] tells which tables listed each gene). sc_10x / sc_10x_5cl omitted "
        "(count files not available). var index = GENCODE v44 / BioMart symbol where known, else the "
        "Ensembl ID (98.9% of IDs got a symbol)."
    ),
}

_CITESEQ_DATASET: dict[str, str] = {
    "name": "citeseq_pbmc_10x_scvi_tests",
    "source": "GitHub scverse/scvi-tools",
    "commit_or_version": "42906ae828ab983237ee0d03a3754bba87a3998b",
    "path_in_source": "tests/test_data/pbmc_5k_protein_v3.h5ad, tests/test_data/pbmc_10k_protein_v3.h5ad",
    "publication": (
        "10x Genomics public datasets pbmc_5k_protein_v3 / pbmc_10k_protein_v3 (Chromium v3 + "
        "TotalSeq-B); 200-cell subsets made by scvi-tools for tests. Method: Stoeckius M, et al. "
        "(2017) Nat Methods 14:865-868 (CITE-seq)."
    ),
    "license": "BSD-3-Clause (scvi-tools repo); underlying 10x data CC BY 4.0",
    "organism": "Homo sapiens",
    "assay": "CITE-seq (10x Chromium 3' v3 + TotalSeq-B ADT)",
    "notes": (
        "Two files concatenated (batch = source file). RNA: inner join on genes (15792 shared of "
        "16,581 / 16,727). Protein: only the 14 antibodies present in both panels are kept; the 5k "
        "panel's other 15 antibodies (CD11b, CD20, CD27, CD28, CD34, CD62L, CD69, CD80, CD86, CD137, "
        "CD197, CD274, CD278, CD335, HLA-DR) are dropped (not measured in 10k). var['gene_id'] filled "
        "from symbols: 13676/15792 matched (86.6%) using GENCODE v44 (celltypist), Ensembl BioMart "
        "human export; unmatched = ''."
    ),
}

_OSMFISH_DATASET: dict[str, str] = {
    "name": "spatial_osmfish_scvi",
    "source": "GitHub YosefLab/scVI-data",
    "commit_or_version": "9a647afc8893604fa11024ddcd5fc5bb22b8e50e",
    "path_in_source": "smfish.h5ad",
    "publication": (
        "Codeluppi S, et al. (2018) Spatial organization of the somatosensory cortex revealed by "
        "osmFISH. Nat Methods 15:932-935. doi:10.1038/s41592-018-0175-z"
    ),
    "license": "none stated in scVI-data",
    "organism": "Mus musculus",
    "assay": "osmFISH (targeted smFISH, 33 genes), somatosensory cortex",
    "notes": (
        "As processed by scvi-tools: 4,530 cells x 33 genes, integer counts. obsm['spatial'] = "
        "(x_coord, y_coord) copied from obs (units as in the source, presumably pixels). cell_type = "
        "str_labels (6 coarse classes). batch is a single value '0'. var['gene_id'] filled from "
        "symbols: 32/33 matched (97.0%) using Ensembl BioMart mouse export; unmatched = ''."
    ),
}

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _source(paths: dict[str, Path], filename: str, dataset: str) -> Path:
    """Local path of the source file ``filename``.

    Raises
    ------
    CellWeaveDataError
        ``filename`` is not in ``paths``.
    """
    if filename not in paths:
        raise CellWeaveDataError(
            f"{dataset}: the source file {filename!r} is missing from the files given to the converter "
            f"(got {sorted(paths)})."
        )
    return Path(paths[filename])


def _read_source_h5ad(path: Path) -> AnnData:
    """Read a published .h5ad, silencing anndata's notice that it predates encoding metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ad.OldFormatWarning)
        return ad.read_h5ad(path)


def _counts_csr(x: Any) -> sp.csr_matrix:
    """Any 2-D matrix as a float32 CSR matrix with sorted indices and no stored zeros."""
    out = sp.csr_matrix(x, dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _categorical(values: Iterable[Any]) -> pd.Categorical:
    """Strings as an unordered categorical (categories sorted)."""
    return pd.Categorical([str(v) for v in values])


def _strings_to_categoricals(frame: pd.DataFrame) -> pd.DataFrame:
    """Object, string and bool columns as string categoricals; numeric columns unchanged."""
    out = frame.copy()
    for col in out.columns:
        series = out[col]
        if isinstance(series.dtype, pd.CategoricalDtype):
            continue
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            out[col] = pd.Categorical(series.astype(str).to_numpy())
    return out


def _ids_from_symbols(symbols: Sequence[str], tables: Sequence[str]) -> tuple[list[str], int]:
    """Ensembl gene IDs for gene symbols, '' where none is found.

    Exact symbols are looked up in every table (in order) first, then case-insensitively; when a
    symbol names several IDs the first listed one is taken.

    Parameters
    ----------
    symbols
        Gene symbols.
    tables
        Names of :data:`cellweave.genes.GENE_TABLES` tables with ``ensembl_gene_id`` and
        ``gene_symbol`` columns, in order of preference.

    Returns
    -------
    ids, n_ambiguous
        One ID (or '') per symbol, and how many symbols named several IDs.
    """
    exact = [symbol_index(t) for t in tables]
    folded = [symbol_index(t, fold_case=True) for t in tables]
    ids: list[str] = []
    n_ambiguous = 0
    for symbol in symbols:
        hits: tuple[str, ...] = ()
        for index in exact:
            hits = index.get(symbol, ())
            if hits:
                break
        if not hits:
            for index in folded:
                hits = index.get(symbol.upper(), ())
                if hits:
                    break
        n_ambiguous += len(hits) > 1
        ids.append(hits[0] if hits else "")
    return ids, n_ambiguous


# ---------------------------------------------------------------------------------------------
# multibatch_cellbench_sc_mixology
# ---------------------------------------------------------------------------------------------

#: Source tables in output order, and their protocol.
_MIXOLOGY_BATCHES: dict[str, str] = {
    "sc_celseq2": "CEL-seq2",
    "sc_dropseq": "Drop-seq",
    "sc_celseq2_5cl_p1": "CEL-seq2",
    "sc_celseq2_5cl_p2": "CEL-seq2",
    "sc_celseq2_5cl_p3": "CEL-seq2",
}
#: Order of the metadata columns shared by all five tables (any other shared column follows).
_MIXOLOGY_SHARED_ORDER = (
    "cell_line_demuxlet", "demuxlet_cls", "number_of_genes", "total_count_per_cell", "non_mt_percent",
    "non_ribo_percent", "outliers", "unaligned", "aligned_unmapped", "mapped_to_exon", "mapped_to_intron",
    "ambiguous_mapping", "mapped_to_ERCC", "mapped_to_MT",
)
_NOT_PROVIDED = "not_provided"


def convert_multibatch_cellbench_sc_mixology(paths: dict[str, Path]) -> AnnData:
    """CellBench sc_mixology: five CEL-seq2 / Drop-seq count tables as one AnnData.

    The genes x cells count tables are transposed and concatenated with an outer join on Ensembl
    gene IDs (sorted; a gene a table does not list is 0 for its cells, ``var['in_<batch>']``
    records which tables list it). obs_names are ``'<batch>:<barcode>'``; the metadata columns
    shared by all tables are kept, plus batch, protocol, cell_type (= demuxlet call) and
    cell_line. var_names are GENCODE v44 / BioMart symbols (the Ensembl ID where unknown), made
    unique.

    Parameters
    ----------
    paths
        Source file basename -> local path; needs ``<batch>.count.csv.gz`` and
        ``<batch>.metadata.csv.gz`` for the five batches.

    Returns
    -------
    AnnData
        1,408 cells x 28,517 genes, float32 CSR counts.

    Raises
    ------
    CellWeaveDataError
        A source file is missing, or a count table's cells differ from its metadata.
    """
    name = _MIXOLOGY_DATASET["name"]
    counts: list[pd.DataFrame] = []
    metas: list[pd.DataFrame] = []
    for batch in _MIXOLOGY_BATCHES:
        count = pd.read_csv(_source(paths, f"{batch}.count.csv.gz", name), index_col=0)
        meta = pd.read_csv(_source(paths, f"{batch}.metadata.csv.gz", name), index_col=0)
        if set(meta.index) != set(count.columns) or meta.index.has_duplicates:
            raise CellWeaveDataError(f"{name}: the cells of {batch}.count.csv.gz and {batch}.metadata.csv.gz differ.")
        counts.append(count)
        metas.append(meta.loc[count.columns])

    gene_ids = np.array(sorted(set().union(*(c.index for c in counts))), dtype=object)
    position = pd.Index(gene_ids)
    blocks = []
    for count in counts:
        coo = sp.coo_matrix(count.to_numpy().T)
        cols = position.get_indexer(count.index)[coo.col]
        blocks.append(sp.csr_matrix((coo.data, (coo.row, cols)), shape=(count.shape[1], len(gene_ids))))
    x = _counts_csr(sp.vstack(blocks, format="csr"))

    shared = [c for c in metas[0].columns if all(c in m.columns for m in metas[1:])]
    shared = [c for c in _MIXOLOGY_SHARED_ORDER if c in shared] + [
        c for c in shared if c not in _MIXOLOGY_SHARED_ORDER
    ]
    parts = []
    for (batch, protocol), meta in zip(_MIXOLOGY_BATCHES.items(), metas):
        part = pd.DataFrame(
            {
                "batch": batch,
                "protocol": protocol,
                "cell_type": meta["cell_line_demuxlet"].astype(str).to_numpy(),
                "cell_line": (meta["cell_line"].astype(str).to_numpy() if "cell_line" in meta else _NOT_PROVIDED),
                "original_barcode": meta.index.astype(str).to_numpy(),
            },
            index=[f"{batch}:{barcode}" for barcode in meta.index],
        )
        for col in shared:
            part[col] = meta[col].to_numpy()
        parts.append(part)
    obs = _strings_to_categoricals(pd.concat(parts))

    id_to_symbol = human_id_to_symbol()
    symbols = [id_to_symbol.get(gid, "") for gid in gene_ids]
    var = pd.DataFrame(
        {"gene_id": _categorical(gene_ids), "gene_symbol": _categorical(symbols)},
        index=pd.Index([s or gid for s, gid in zip(symbols, gene_ids)]),
    )
    for batch, count in zip(_MIXOLOGY_BATCHES, counts):
        var[f"in_{batch}"] = position.isin(count.index)
    var["feature_type"] = _categorical([_GENE_EXPRESSION] * len(var))
    var.index = ad.utils.make_index_unique(var.index.astype(str))
    logger.info("%s: %d of %d Ensembl IDs got a symbol", name, sum(map(bool, symbols)), len(symbols))

    adata = AnnData(X=x, obs=obs, var=var)
    adata.uns["dataset"] = dict(_MIXOLOGY_DATASET)
    adata.uns["x_kind"] = "counts"
    return adata


# ---------------------------------------------------------------------------------------------
# citeseq_pbmc_10x_scvi_tests
# ---------------------------------------------------------------------------------------------

#: Source files in output order; the batch is the file name without ``.h5ad``.
_CITESEQ_FILES = ("pbmc_5k_protein_v3.h5ad", "pbmc_10k_protein_v3.h5ad")
_TOTALSEQ_SUFFIX = "_TotalSeqB"


def _specificity_names(specificity: str) -> set[str]:
    """The names a BioLegend specificity gives: ``'CD279 (PD-1)'`` -> {'CD279', 'PD-1'}."""
    main, _, rest = specificity.partition("(")
    names = {main.strip()}
    names.update(alias.strip() for alias in rest.rstrip(") ").split(","))
    return {n for n in names if n}


def _biolegend_genes(antibodies: Sequence[str]) -> pd.DataFrame:
    """gene_symbol, gene_id and gene_symbol_source of antibodies from the BioLegend TotalSeq table.

    Human-reactive entries whose specificity (or an alias in parentheses) is the antibody name
    and that give exactly one human Ensembl ID are collected; an antibody with one distinct ID is
    ``biolegend_unique``, one with several ``biolegend_ambiguous:<id>|<id>`` (no symbol or ID
    assigned), one without any ``not_in_biolegend``.
    """
    table = gene_table(BIOLEGEND_TOTALSEQ)
    id_to_symbol: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for specificity, reactivity, gene_id, symbol in zip(
        table["specificity"], table["reactivity"], table["ensembl_gene_id"], table["gene_symbol"]
    ):
        ids = [g.strip() for g in gene_id.split(",") if g.strip()]
        if "human" not in reactivity.lower() or len(ids) != 1 or not ids[0].startswith("ENSG"):
            continue
        id_to_symbol.setdefault(ids[0], symbol.strip())
        for n in _specificity_names(specificity):
            hits = by_name.setdefault(n, [])
            if ids[0] not in hits:
                hits.append(ids[0])
    rows = []
    for antibody in antibodies:
        hits = by_name.get(antibody, [])
        if len(hits) == 1:
            rows.append((id_to_symbol[hits[0]], hits[0], "biolegend_unique"))
        elif hits:
            rows.append(("", "", "biolegend_ambiguous:" + "|".join(hits)))
        else:
            rows.append(("", "", "not_in_biolegend"))
    return pd.DataFrame(rows, columns=["gene_symbol", "gene_id", "gene_symbol_source"])


def convert_citeseq_pbmc_10x_scvi_tests(paths: dict[str, Path]) -> MuData:
    """scvi-tools' PBMC 5k / 10k CITE-seq test files as one MuData (``rna`` and ``prot``).

    The two 200-cell files are concatenated (batch = file name; obs_names
    ``'<batch>:<barcode>'``). rna keeps the genes of both files (5k order) with scvi's
    ``encode`` column and an Ensembl ID looked up by symbol; prot is built from
    ``obsm['protein_expression']`` / ``uns['protein_names']``, keeping the antibodies of both
    panels, annotated from the BioLegend TotalSeq table. ``batch`` and ``original_barcode`` are
    MuData-level obs columns; the RNA QC columns stay in ``rna.obs``.

    Parameters
    ----------
    paths
        Source file basename -> local path; needs ``pbmc_5k_protein_v3.h5ad`` and
        ``pbmc_10k_protein_v3.h5ad``.

    Returns
    -------
    MuData
        400 cells; rna 15,792 genes and prot 14 antibodies, float32 CSR counts.

    Raises
    ------
    CellWeaveDataError
        A source file is missing.
    """
    name = _CITESEQ_DATASET["name"]
    sources = {f.removesuffix(".h5ad"): _read_source_h5ad(_source(paths, f, name)) for f in _CITESEQ_FILES}
    batches = list(sources)
    first = sources[batches[0]]

    genes = [g for g in first.var_names if all(g in s.var_names for s in sources.values())]
    proteins = [
        p for p in map(str, first.uns["protein_names"])
        if all(p in set(map(str, s.uns["protein_names"])) for s in sources.values())
    ]
    obs_names, barcodes, batch_labels, rna_x, prot_x, rna_obs = [], [], [], [], [], []
    for batch, src in sources.items():
        barcodes += list(map(str, src.obs_names))
        obs_names += [f"{batch}:{b}" for b in src.obs_names]
        batch_labels += [batch] * src.n_obs
        rna_x.append(_counts_csr(src[:, genes].X))
        columns = [list(map(str, src.uns["protein_names"])).index(p) for p in proteins]
        prot_x.append(_counts_csr(np.asarray(src.obsm["protein_expression"])[:, columns]))
        rna_obs.append(src.obs)
    obs_index = pd.Index(obs_names)

    encode = first.var.loc[genes, "encode"].astype(object)
    encode = ["" if pd.isna(e) or str(e) == "None" else str(e) for e in encode]
    gene_ids, n_ambiguous = _ids_from_symbols(genes, (GENCODE_HUMAN, BIOMART_HUMAN))
    rna_var = pd.DataFrame(
        {
            "encode": _categorical(encode),
            "gene_id": _categorical(gene_ids),
            "feature_type": _categorical([_GENE_EXPRESSION] * len(genes)),
        },
        index=pd.Index(genes, name=first.var.index.name),
    )
    logger.info("%s: %d of %d gene symbols got an Ensembl ID (%d ambiguous)", name,
                sum(map(bool, gene_ids)), len(genes), n_ambiguous)
    rna_obs_frame = pd.concat(rna_obs)
    rna_obs_frame.index = obs_index
    rna = AnnData(X=_counts_csr(sp.vstack(rna_x)), obs=rna_obs_frame, var=rna_var)
    rna.uns["x_kind"] = "counts"

    antibodies = [p.removesuffix(_TOTALSEQ_SUFFIX) for p in proteins]
    genes_of = _biolegend_genes(antibodies)
    prot_var = pd.DataFrame(index=pd.Index(proteins))
    prot_var["antibody"] = _categorical(antibodies)
    for col in genes_of.columns:
        prot_var[col] = _categorical(genes_of[col])
    prot_var["feature_type"] = _categorical([_ANTIBODY_CAPTURE] * len(proteins))
    prot = AnnData(X=_counts_csr(sp.vstack(prot_x)), obs=pd.DataFrame(index=obs_index.copy()), var=prot_var)
    prot.uns["x_kind"] = "counts"

    with md.set_options(pull_on_update=False):
        mdata = MuData({"rna": rna, "prot": prot})
        mdata.obs = pd.DataFrame(
            {"batch": _categorical(batch_labels), "original_barcode": _categorical(barcodes)},
            index=obs_index.copy(),
        )
    mdata.uns["dataset"] = dict(_CITESEQ_DATASET)
    mdata.uns["x_kind"] = {"rna": "counts", "prot": "counts"}
    return mdata


# ---------------------------------------------------------------------------------------------
# spatial_osmfish_scvi
# ---------------------------------------------------------------------------------------------

_OSMFISH_FILE = "smfish.h5ad"


def convert_spatial_osmfish_scvi(paths: dict[str, Path]) -> AnnData:
    """scVI-data's osmFISH somatosensory cortex file (33 genes) as an AnnData.

    X becomes float32 CSR counts, obs_names ``'cell_<i>'``, ``obsm['spatial']`` the
    ``(x_coord, y_coord)`` columns (kept in obs too), ``obs['cell_type']`` = ``str_labels``,
    ``obs['batch']`` a string; ``var['gene_id']`` is looked up by symbol in BioMart mouse.

    Parameters
    ----------
    paths
        Source file basename -> local path; needs ``smfish.h5ad``.

    Returns
    -------
    AnnData
        4,530 cells x 33 genes.

    Raises
    ------
    CellWeaveDataError
        The source file is missing.
    """
    name = _OSMFISH_DATASET["name"]
    src = _read_source_h5ad(_source(paths, _OSMFISH_FILE, name))
    obs = src.obs.copy()
    obs.index = pd.Index([f"cell_{i}" for i in range(src.n_obs)])
    obs["batch"] = obs["batch"].astype(str)
    obs["cell_type"] = obs["str_labels"].astype(str)
    obs = _strings_to_categoricals(obs)

    genes = list(map(str, src.var_names))
    gene_ids, n_ambiguous = _ids_from_symbols(genes, (BIOMART_MOUSE,))
    var = pd.DataFrame(
        {"gene_id": _categorical(gene_ids), "feature_type": _categorical([_GENE_EXPRESSION] * len(genes))},
        index=pd.Index(genes),
    )
    logger.info("%s: %d of %d gene symbols got an Ensembl ID (%d ambiguous)", name,
                sum(map(bool, gene_ids)), len(genes), n_ambiguous)

    adata = AnnData(X=_counts_csr(src.X), obs=obs, var=var)
    adata.obsm["spatial"] = obs[["x_coord", "y_coord"]].to_numpy(dtype=np.float64)
    adata.uns["dataset"] = dict(_OSMFISH_DATASET)
    adata.uns["x_kind"] = "counts"
    return adata


CONVERTERS: dict[str, Callable[[dict[str, Path]], AnnData | MuData]] = {
    "multibatch_cellbench_sc_mixology": convert_multibatch_cellbench_sc_mixology,
    "citeseq_pbmc_10x_scvi_tests": convert_citeseq_pbmc_10x_scvi_tests,
    "spatial_osmfish_scvi": convert_spatial_osmfish_scvi,
}
