"""``cellweave.tl.gene_map`` and ``cellweave.tl.score_programs``: the model's gene embedding
table as an AnnData (genes x dimensions) with a UMAP and Leiden gene programs, and program
scores on cells.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError
from cellweave.models import CellWeave, environment_versions

from ._embed import _h5_safe, _resolve_gene_model
from ._gene_utils import log_normalized, rna_adata

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

GENE_SETS_FILE = "gene_sets_cellweave.tsv.gz"
#: Gene sets defined by HGNC naming (see genes/resources/PROVENANCE.md).
PATTERN_SETS = {
    "ribosomal_protein": r"^RP[LS]\d+[AXY]?\d*$",
    "mhc_class_ii": r"^HLA-D",
    "mitochondrially_encoded": r"^MT-",
}


@lru_cache(maxsize=1)
def _gene_set_table() -> pd.DataFrame:
    from importlib.resources import files

    path = files("cellweave.genes") / "resources" / GENE_SETS_FILE
    with path.open("rb") as fh:
        return pd.read_csv(fh, sep="\t", compression="gzip", keep_default_na=False)


def gene_sets(kind: str = "program", *, universe: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Bundled gene sets (symbols): ``kind="program"`` (Tirosh 2016 S/G2M, Rice 2013 interferon
    score, plus ribosomal / MHC-II / mitochondrially encoded genes by HGNC naming, which need
    ``universe``) or ``kind="marker"`` (canonical PBMC markers by cell type). Sources in
    ``genes/resources/PROVENANCE.md``.
    """
    table = _gene_set_table()
    sub = table[table["kind"] == kind]
    out = {name: list(dict.fromkeys(g["gene_symbol"])) for name, g in sub.groupby("set_name", sort=False)}
    if kind == "program" and universe is not None:
        for name, pattern in PATTERN_SETS.items():
            rx = re.compile(pattern)
            out[name] = sorted({g for g in universe if rx.match(str(g))})
    if kind == "marker":
        out = {k.split(":", 1)[1]: v for k, v in out.items()}
    return out


def gene_embedding_table(model: CellWeave, *, organism: str = "human") -> tuple[np.ndarray, pd.DataFrame]:
    """The token embeddings of the model's genes of ``organism`` and a var-like table (key, symbol)."""
    from cellweave.genes import symbol_for

    keys = np.asarray(model.vocab.keys, dtype=object)
    prefix = "ENSMUSG" if organism == "mouse" else "ENSG"
    idx = np.flatnonzero([str(k).startswith(prefix) for k in keys])
    if idx.size == 0:
        raise CellWeaveInputError(f"The model's vocabulary has no {organism} genes; pass organism='human' or 'mouse'.")
    symbols = symbol_for(keys[idx])
    table = pd.DataFrame({"gene_id": keys[idx].astype(str), "symbol": symbols, "token_id": idx})
    weights = model.module.feature_embedding.weight.detach().cpu().numpy()[idx].astype(np.float32)
    return weights, table


def knn_graph(X: np.ndarray, *, n_neighbors: int = 15, metric: str = "cosine") -> sp.csr_matrix:
    """Symmetric kNN connectivity graph (``csr_matrix``, weights 1) of the rows of ``X``."""
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, X.shape[0] - 1)
    nn = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(X)
    _, ind = nn.kneighbors(X)
    rows = np.repeat(np.arange(X.shape[0]), k)
    g = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, ind[:, 1:].ravel())), shape=(X.shape[0],) * 2)
    return sp.csr_matrix(g.maximum(g.T))


def gene_map(
    *,
    model: CellWeave | str | None = None,
    organism: str = "human",
    genes: Sequence[str] | None = None,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    umap: bool = True,
    seed: int = 0,
) -> AnnData:
    """The model's gene embedding table as an AnnData: genes x embedding dimensions.

    Parameters
    ----------
    model
        A :class:`~cellweave.CellWeave`, a model folder, a shipped model's name, or ``None`` for
        the shipped gene model (:data:`cellweave.models.DEFAULT_GENE_MODEL`). A model pretrained
        with fixed random gene tables (the default model) is refused: its table is noise.
    organism
        ``"human"`` (ENSG tokens) or ``"mouse"`` (ENSMUSG tokens).
    genes
        Restrict to these symbols (default: every gene of the organism in the vocabulary).
    n_neighbors, resolution
        kNN graph (cosine) and Leiden resolution of the gene programs.
    umap
        Compute a 2-D UMAP of the genes (``obsm["X_umap"]``).
    seed
        Seed of Leiden and UMAP.

    Returns
    -------
    A new AnnData with ``X`` the ``(n_genes, d_model)`` float32 token embeddings and:

    ``.obs_names``
        gene symbols (the Ensembl ID where the symbol is unknown or repeated);
    ``.obs["gene_id"]``, ``.obs["token_id"]``
        the vocabulary key and index;
    ``.obs["program"]``
        categorical Leiden gene program;
    ``.obsp["connectivities"]``
        the symmetric kNN graph the programs came from;
    ``.obsm["X_umap"]``
        2-D UMAP (when ``umap=True``);
    ``.uns["cellweave"]["gene_map"]``
        model name and SHA-256, organism, graph and Leiden parameters, number of programs,
        seed and versions.
    """
    import anndata as ad
    import scanpy as sc

    model = _resolve_gene_model(model)
    X, table = gene_embedding_table(model, organism=organism)
    names = np.where(table["symbol"].to_numpy() != "", table["symbol"].to_numpy(), table["gene_id"].to_numpy())
    dup = pd.Series(names).duplicated(keep=False).to_numpy()
    names = np.where(dup, table["gene_id"].to_numpy(), names)
    if genes is not None:
        want = {str(g) for g in genes}
        sel = np.array([n in want or gid in want for n, gid in zip(names, table["gene_id"])])
        if sel.sum() < 3:
            raise CellWeaveInputError(
                f"Only {int(sel.sum())} of the {len(want)} requested genes are in the model's vocabulary; "
                "a gene map needs at least 3. Pass symbols or Ensembl IDs the model knows."
            )
        X, table, names = X[sel], table[sel].reset_index(drop=True), names[sel]
    g = ad.AnnData(X=X, obs=pd.DataFrame({"gene_id": table["gene_id"].to_numpy(),
                                          "token_id": table["token_id"].to_numpy()}, index=pd.Index(names)))
    conn = knn_graph(X, n_neighbors=n_neighbors)
    g.obsp["connectivities"] = conn
    sc.tl.leiden(g, adjacency=conn, resolution=resolution, random_state=seed, key_added="program",
                 flavor="igraph", n_iterations=2, directed=False)
    if umap:
        from ._umap import umap_coordinates

        g.obsm["X_umap"] = umap_coordinates(X, n_neighbors=n_neighbors, seed=seed)
    g.uns[UNS_KEY] = {"gene_map": _h5_safe({
        "model": model.name, "model_sha256": model.model_hash, "organism": organism,
        "n_neighbors": n_neighbors, "metric": "cosine", "resolution": resolution,
        "n_programs": int(g.obs["program"].nunique()), "seed": seed, "versions": environment_versions(),
    })}
    logger.info("Gene map: %d genes x %d dims, %d programs", g.n_obs, g.n_vars, g.obs["program"].nunique())
    return g


def score_programs(
    adata: AnnData,
    *,
    programs: AnnData | Mapping[str, Sequence[str]],
    program_key: str = "program",
    min_genes: int = 5,
    layer: str | None = None,
    key_added: str = "cellweave_program",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Score gene programs on cells (scanpy ``score_genes``: mean of the program's genes minus a
    matched random control set, on log1p(CP10k) values).

    Parameters
    ----------
    adata
        AnnData with RNA counts or log-normalized values in ``X`` or ``layer`` (or a MuData with
        ``rna``).
    programs
        A gene map from :func:`gene_map` (programs from ``obs[program_key]``, genes = its
        ``obs_names``) or a mapping program name -> gene symbols.
    program_key
        Column of the gene map's ``obs`` holding the program of each gene.
    min_genes
        Programs with fewer genes in ``adata`` are skipped (and listed in ``uns``).
    layer
        Layer of counts (default ``X``).
    key_added
        Prefix of the ``obs`` columns.
    seed
        Seed of scanpy's control-gene draw.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``.obs[f"{key_added}_{name}"]``
        float32 score of each program with at least ``min_genes`` genes in the data;
    ``.uns["cellweave"][key_added]``
        programs scored with their genes found, programs skipped, ``min_genes``, seed, versions.
    """
    import anndata as ad
    import scanpy as sc

    data = adata.copy() if copy else adata
    rna = rna_adata(data)
    if isinstance(programs, ad.AnnData):
        if program_key not in programs.obs:
            raise CellWeaveInputError(
                f"The gene map has no obs[{program_key!r}]. Build it with `cellweave.tl.gene_map()` "
                "or pass program_key= the column with the programs."
            )
        lab = programs.obs[program_key].astype(str)
        sets = {str(p): list(lab.index[lab == p]) for p in pd.unique(lab)}
    else:
        sets = {str(k): [str(g) for g in v] for k, v in programs.items()}
    if not sets:
        raise CellWeaveInputError("No programs given; pass a gene map or a mapping name -> genes.")
    ln = ad.AnnData(X=log_normalized(rna, layer), obs=pd.DataFrame(index=rna.obs_names.copy()))
    ln.var_names = rna.var_names.astype(str)
    present = set(ln.var_names)
    scored, skipped = {}, []
    for name, genes in sets.items():
        found = [g for g in genes if g in present]
        if len(found) < min_genes:
            skipped.append(name)
            continue
        sc.tl.score_genes(ln, found, score_name="_score", random_state=seed, use_raw=False)
        rna.obs[f"{key_added}_{name}"] = ln.obs["_score"].to_numpy().astype(np.float32)
        scored[name] = found
    if not scored:
        raise CellWeaveInputError(
            f"No program has {min_genes} or more genes in the data (var_names must be gene symbols). "
            "Lower min_genes or pass programs with genes of this data."
        )
    record: dict[str, Any] = {"programs": scored, "skipped": skipped, "min_genes": min_genes, "seed": seed,
                              "versions": environment_versions()}
    uns = dict(rna.uns.get(UNS_KEY, {}))
    uns[key_added] = _h5_safe(record)
    rna.uns[UNS_KEY] = uns
    logger.info("Scored %d programs (%d skipped: fewer than %d genes in the data)", len(scored), len(skipped), min_genes)
    return data if copy else None
