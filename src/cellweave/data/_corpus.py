"""From AnnData/MuData to a corpus of cells ready to tokenize.

A :class:`CellCorpus` holds, per modality, a CSR matrix of normalized values restricted to the
features the model's vocabulary knows, the vocabulary id of each column, and which cells were
measured in that modality (a cell of an unpaired or partly measured MuData lacks some). Features
outside the vocabulary are never silently dropped: they are counted in the coverage report that
travels with the corpus.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellweave import modalities as _modalities
from cellweave._exceptions import CellWeaveInputError
from cellweave.genes import Vocabulary, aliases_available, coverage, infer_organism, map_features
from cellweave.io import as_modalities, validate_matrix

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

#: Library size that counts are scaled to before log1p (the scanpy / Seurat convention).
TARGET_SUM = 1e4


@dataclass
class ModalityBlock:
    """One modality of a corpus: normalized values of in-vocabulary features."""

    modality: str
    values: sp.csr_matrix
    """(n_cells, n_columns) float32, log1p(counts per 10k) or the user's log-normalized values."""
    token_ids: np.ndarray
    """(n_columns,) vocabulary id of each column."""
    present: np.ndarray
    """(n_cells,) bool: whether the cell was measured in this modality."""
    x_kind: str
    feature_mean: np.ndarray | None = field(default=None, repr=False, compare=False)
    """(n_columns,) mean value of each column over the block's measured cells, filled on first use
    by a tokenizer that selects tokens by deviation (:func:`cellweave.data.feature_means`)."""
    variable_columns: dict[int, np.ndarray | None] = field(default_factory=dict, repr=False, compare=False)
    """Sorted column indices of the block's ``n`` most variable features, by ``n``, filled on first
    use by a tokenizer with ``hvg_tokens`` (:func:`cellweave.data.variable_columns`); ``None``:
    every column (the block has at most ``n``, or too few cells to rank them)."""
    feature_modules: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)
    """``(vocabulary ids, sorted; module of each, -1 for none)``: co-expression modules of the
    block's features, filled on first use by a tokenizer that masks modules together
    (:func:`cellweave.data.feature_modules`)."""


@dataclass
class CellCorpus:
    """Cells of one dataset, normalized and mapped onto a vocabulary."""

    blocks: list[ModalityBlock]
    obs: pd.DataFrame
    coverage: list[dict[str, Any]] = field(default_factory=list)
    name: str = "data"

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def modalities(self) -> list[str]:
        return [b.modality for b in self.blocks]

    def subset(self, idx: np.ndarray) -> CellCorpus:
        """The corpus restricted to the cells at positions ``idx``."""
        idx = np.asarray(idx)
        blocks = [
            ModalityBlock(b.modality, b.values[idx], b.token_ids, b.present[idx], b.x_kind)
            for b in self.blocks
        ]
        return CellCorpus(blocks, self.obs.iloc[idx], self.coverage, self.name)


def _aggregate_columns(X: sp.csr_matrix, ids: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sum columns that map to the same vocabulary id (duplicate symbols, peaks in one bin)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    if len(uniq) == len(ids):
        order = np.argsort(ids)
        return X[:, order], ids[order]
    agg = sp.csr_matrix(
        (np.ones(len(ids), dtype=np.float32), (np.arange(len(ids)), inverse)), shape=(len(ids), len(uniq))
    )
    return (X @ agg).tocsr(), uniq


def _log1p_cp10k(X: sp.csr_matrix) -> sp.csr_matrix:
    """Counts -> log1p(counts per 10k), float32."""
    lib = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, lib, out=np.zeros_like(lib), where=lib > 0)
    X = sp.diags(scale.astype(np.float32)) @ X
    X = X.tocsr()
    np.log1p(X.data, out=X.data)
    return X


#: One function per ``Modality.normalization`` (``cellweave.modalities.NORMALIZATIONS``): counts -> values.
NORMALIZERS = {"log1p_cp10k": _log1p_cp10k}


def _normalize(X: sp.csr_matrix, x_kind: str, value_encoding: str = "log1p",
               normalization: str = "log1p_cp10k") -> sp.csr_matrix:
    """Counts -> the modality's ``normalization`` (log1p(counts per 10k)); then, for
    ``value_encoding="quantile"``, each nonzero value -> its within-cell quantile in (0, 1]
    (ties share their mean rank)."""
    X = X.astype(np.float32)
    if x_kind == "counts":
        X = NORMALIZERS[normalization](X)
    X.eliminate_zeros()
    X.sort_indices()
    if value_encoding == "quantile":
        X.data = within_cell_quantiles(X)
    elif value_encoding != "log1p":
        raise ValueError(f"value_encoding must be 'log1p' or 'quantile', not {value_encoding!r}")
    return X


def hvg_features(train: sp.csr_matrix, n_top: int = 2000) -> np.ndarray:
    """Indices of the ``n_top`` highly variable genes of log-normalized cells ``train`` (scanpy,
    flavor "seurat"); the benchmarks pass training cells only, so no test cell chooses genes."""
    import anndata as ad
    import scanpy as sc

    if train.shape[1] <= n_top:
        return np.arange(train.shape[1])
    a = ad.AnnData(X=train)
    sc.pp.highly_variable_genes(a, n_top_genes=n_top, flavor="seurat")
    return np.flatnonzero(a.var["highly_variable"].to_numpy())


def corpus_counts(corpus: CellCorpus, value_encoding: str, modality: str = "rna") -> sp.csr_matrix | None:
    """Raw counts of ``modality``'s in-vocabulary columns, recovered from a corpus prepared with
    ``value_encoding="log1p"`` (``expm1(value) x library / 1e4``, rounded); ``None`` when the
    corpus holds no counts of that modality or its values are quantiles (which cannot be inverted)."""
    block = next((b for b in corpus.blocks if b.modality == modality), None)
    key = f"{modality}_library"
    if value_encoding != "log1p" or block is None or block.x_kind != "counts" or key not in corpus.obs:
        return None
    X = block.values.tocsr(copy=True).astype(np.float64)
    library = corpus.obs[key].to_numpy(dtype=np.float64)
    X.data = counts_from_log1p(X.data, np.repeat(library, np.diff(X.indptr)))
    X.eliminate_zeros()
    return X.astype(np.float32)


def counts_from_log1p(values: np.ndarray, library: np.ndarray | float) -> np.ndarray:
    """Counts behind log1p(counts per 10k) ``values`` of cells with ``library`` molecules (one per
    value, or one for all): ``expm1(value) x library / 1e4``, rounded (float64)."""
    return np.rint(np.expm1(np.asarray(values, dtype=np.float64)) * (np.asarray(library, dtype=np.float64) / TARGET_SUM))


def log_normalize(data: Any, *, layer: str | None = None) -> sp.csr_matrix:
    """log1p(counts per 10k) as a float32 CSR matrix, from an AnnData (``X`` or ``layer``) or a
    matrix. Log-normalized input is returned as it is; any other kind (scaled, normalized
    otherwise) is refused with the fix, since a baseline or a readout on it would be wrong."""
    from cellweave.io import detect_x_kind

    X = data if not hasattr(data, "X") else (data.layers[layer] if layer else data.X)
    X = sp.csr_matrix(X, dtype=np.float32)
    kind = detect_x_kind(X)
    if kind == "log_normalized":
        return X
    if kind != "counts":
        raise CellWeaveInputError(
            f"Expected counts or log-normalized values, found {kind!r}. Pass raw counts (or layer=) "
            "or `adata.raw.to_adata()` when X is scaled."
        )
    return _normalize(X, "counts", "log1p")


def clr(X: Any) -> np.ndarray:
    """Centred log-ratio per cell, ``log1p(x) - mean_j log1p(x_j)`` (the CITE-seq convention for
    protein counts), as a dense float64 array."""
    L = np.log1p(np.asarray(X.todense() if sp.issparse(X) else X, dtype=np.float64))
    return L - L.mean(1, keepdims=True)


def within_cell_quantiles(X: sp.csr_matrix, *, block_values: int = 4_000_000) -> np.ndarray:
    """Quantile of every stored value among its row's stored values, in (0, 1].

    Rank encodings (Geneformer's ranks, scGPT's per-cell bins) make values comparable between
    cells sequenced to different depths and with different protocols; ties (the many genes with
    one count) share their mean rank so that equal measurements get equal values. Rows are ranked
    in blocks of about ``block_values`` stored values, so the working memory (several 8-byte
    arrays per value) stays bounded however many cells ``X`` holds.
    """
    q = np.empty(X.data.size, dtype=np.float32)
    n_rows = X.shape[0]
    start = 0
    while start < n_rows:
        # Rows start..stop hold at most block_values values (one row at least).
        stop = int(np.searchsorted(X.indptr, X.indptr[start] + block_values, side="right")) - 1
        stop = min(max(stop, start + 1), n_rows)
        lo, hi = int(X.indptr[start]), int(X.indptr[stop])
        q[lo:hi] = _ranks_in_rows(X.data[lo:hi], X.indptr[start:stop + 1] - lo)
        start = stop
    return q


def _ranks_in_rows(data: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """:func:`within_cell_quantiles` of the rows of one block (``indptr`` from 0)."""
    nnz = np.diff(indptr)
    rows = np.repeat(np.arange(nnz.size), nnz)
    order = np.lexsort((data, rows))
    r_sorted, v_sorted = rows[order], data[order]
    pos = np.arange(order.size) - indptr[r_sorted]  # 0-based rank within the row
    new_run = np.ones(order.size, dtype=bool)
    new_run[1:] = (r_sorted[1:] != r_sorted[:-1]) | (v_sorted[1:] != v_sorted[:-1])
    run_id = np.cumsum(new_run) - 1
    run_first = pos[new_run]
    run_len = np.bincount(run_id)
    mean_rank = run_first + (run_len - 1) / 2.0
    q = np.empty(order.size, dtype=np.float32)
    q[order] = ((mean_rank[run_id] + 1.0) / nnz[r_sorted]).astype(np.float32)
    return q


def prepare_cells(
    data: AnnData | MuData,
    vocab: Vocabulary,
    *,
    modalities: list[str] | None = None,
    layer: str | None = None,
    organism: str | None = None,
    dataset: str | None = None,
    value_encoding: str = "log1p",
    generate_codes: Callable[[list[str]], Vocabulary] | None = None,
) -> CellCorpus:
    """Validate, normalize and map every modality of ``data`` onto ``vocab``.

    Parameters
    ----------
    data
        AnnData (taken as RNA) or MuData with registered modalities (``cellweave.modalities``:
        ``rna``, ``prot``, ``atac``, ``gene_activity``; ``guide``/``hto`` are skipped).
    vocab
        The model's feature vocabulary.
    modalities
        Restrict to these modalities (default: all model modalities present).
    layer
        Layer holding counts (default ``X``) of the primary modality (``rna``).
    organism
        ``"human"`` or ``"mouse"``; inferred from the features when not given.
    dataset
        Name used in logs and in the coverage report.
    value_encoding
        ``"log1p"`` (log1p of counts per 10k) or ``"quantile"`` (each value's quantile within
        its cell and modality); a model's own setting is ``config.value_encoding``.
    generate_codes
        Called with the mapped keys of a modality that ``vocab`` lacks; returns a vocabulary that
        starts with ``vocab``'s keys, in order, and holds those of them it gives codes, onto which
        the modality is then mapped (:meth:`cellweave.CellWeave.prepare` passes a model's generator of fixed random
        codes). The coverage report still counts them as not in the vocabulary, and as
        ``n_generated``. Default: such features are left out.

    Returns
    -------
    The corpus, with one coverage record per modality in ``corpus.coverage``.
    """
    mods = as_modalities(data)
    if modalities is not None:
        missing = [m for m in modalities if m not in mods]
        if missing:
            raise CellWeaveInputError(
                f"Modalities {missing} were asked for but the data has {sorted(mods)}. "
                "Pass modalities= a subset of those."
            )
        mods = {m: mods[m] for m in modalities}
    if not mods:
        raise CellWeaveInputError(f"The data holds no modality the model knows ({', '.join(_modalities.names())}).")
    obs_names = data.obs_names
    name = dataset or "data"
    blocks: list[ModalityBlock] = []
    reports: list[dict[str, Any]] = []
    libraries: dict[str, np.ndarray] = {}
    for mod, adata in mods.items():
        spec = _modalities.get(mod, exact=True)
        mod_layer = layer if mod == _modalities.PRIMARY else None
        report = validate_matrix(adata, modality=mod, layer=mod_layer, dataset=name)
        X = adata.layers[mod_layer] if mod_layer is not None else adata.X
        X = sp.csr_matrix(X.astype(np.float32) if X.dtype == np.float16 else X)  # scipy.sparse has no float16
        org = organism or infer_organism(adata.var_names, adata.var.get("gene_id"))
        fmap = map_features(adata.var, modality=mod, organism=org, aliases=vocab.gene_aliases)
        cov = coverage(fmap, vocab, dataset=name)
        ids = vocab.lookup(fmap.keys)
        order = ids  # the column order of the block: by id
        unseen = fmap.mapped_mask & (ids < 0)
        if generate_codes is not None and unseen.any():
            new_keys = sorted({str(k) for k in fmap.keys[unseen]})
            ids = generate_codes(new_keys).lookup(fmap.keys)
            cov.n_generated = int((unseen & (ids >= 0)).sum())
            # Added features after the known ones, by key: the order (which the tokenizer's random draws
            # follow) does not depend on the ids earlier calls gave them.
            rank = dict(zip(new_keys, range(len(vocab), len(vocab) + len(new_keys))))
            order = np.where(unseen, [rank.get(str(k), -1) for k in fmap.keys], ids)
        reports.append({**cov.to_dict(), "x_kind": report.x_kind, "organism": org})
        logger.info("%s/%s: %d of %d features in the vocabulary%s", name, mod, cov.n_in_vocab, cov.n_features,
                    f", {cov.n_generated} more with generated codes" if cov.n_generated else "")
        library = np.asarray(X.sum(axis=1), dtype=np.float64).ravel() if report.x_kind == "counts" else None
        X = _normalize(X, report.x_kind, value_encoding, spec.normalization)
        keep = ids >= 0
        Xk, tok = _aggregate_columns(X[:, keep].tocsr(), order[keep])
        if order is not ids:  # back from order positions to vocabulary ids
            _, first = np.unique(order[keep], return_index=True)
            tok = ids[keep][first]
        # Align this modality's cells to the container's obs (unpaired MuData have disjoint cells).
        rows = obs_names.get_indexer(adata.obs_names) if adata.n_obs != len(obs_names) or not (
            adata.obs_names.equals(obs_names)
        ) else np.arange(len(obs_names))
        if (rows < 0).any():
            raise CellWeaveInputError(
                f"Modality {mod!r} has cells that are not in the container's obs_names; "
                "call mdata.update() after editing modalities."
            )
        present = np.zeros(len(obs_names), dtype=bool)
        present[rows] = True
        if len(rows) != len(obs_names) or not np.array_equal(rows, np.arange(len(obs_names))):
            P = sp.csr_matrix(
                (np.ones(len(rows), dtype=np.float32), (rows, np.arange(len(rows)))),
                shape=(len(obs_names), len(rows)),
            )
            Xk = (P @ Xk).tocsr()
        blocks.append(ModalityBlock(mod, Xk.astype(np.float32), tok.astype(np.int64), present, report.x_kind))
        if library is not None:
            libraries[mod] = np.zeros(len(obs_names))
            libraries[mod][rows] = library
    if all(b.token_ids.size == 0 for b in blocks):
        examples = [str(v) for a in mods.values() for v in a.var_names[:3]][:3]
        organisms = ", ".join(sorted({str(r["organism"] or "not inferred") for r in reports}))
        raise CellWeaveInputError(
            f"None of the features of {name!r} are in the model's vocabulary (zero overlap; features such as "
            f"{examples}, organism {organisms}). The model knows human and mouse genes: put gene symbols (e.g. "
            "CD3E) in var_names or Ensembl IDs (e.g. ENSG00000198851) in var['gene_id'], and pass organism='human' "
            "or 'mouse' (--organism) if it was inferred wrongly; cellweave.genes.map_features(adata.var, "
            "modality='rna').reasons says why each feature is unmapped."
        )
    obs = pd.DataFrame(index=obs_names.copy())
    obs["dataset"] = name
    for mod, library in libraries.items():  # counts per cell over all features: undoes log1p(counts per 10k)
        obs[f"{mod}_library"] = library
    return CellCorpus(blocks, obs, reports, name)


def build_vocabulary(
    datasets: dict[str, AnnData | MuData], *, min_cells: int = 3, organisms: dict[str, str] | None = None,
    gene_aliases: bool | None = None,
) -> tuple[Vocabulary, pd.DataFrame]:
    """A vocabulary of every feature detected in at least ``min_cells`` cells of the datasets.

    Keys are ordered by modality and then by first appearance, so the vocabulary is
    deterministic for a given list of datasets. Returns the vocabulary and a table of how many
    features each dataset/modality contributed.

    ``gene_aliases`` maps human genes through NCBI Gene aliases as well (see
    :func:`cellweave.genes.map_features`); ``None`` uses them when the alias table can be had
    (mirror, cache or download) and says so in the log otherwise. The vocabulary records the choice.
    """
    if gene_aliases is None:
        gene_aliases = aliases_available()
    counts: dict[str, int] = {}
    order: list[str] = []
    rows = []
    for name, data in datasets.items():
        for mod, adata in as_modalities(data).items():
            org = (organisms or {}).get(name) or infer_organism(adata.var_names, adata.var.get("gene_id"))
            fmap = map_features(adata.var, modality=mod, organism=org, aliases=gene_aliases)
            X = sp.csr_matrix(adata.X)
            n_cells = np.diff(X.tocsc().indptr)
            per_key = pd.Series(n_cells[fmap.mapped_mask]).groupby(fmap.keys[fmap.mapped_mask]).sum()
            for key, n in per_key.items():
                if key not in counts:
                    order.append(key)
                    counts[key] = 0
                counts[key] += int(n)
            rows.append({"dataset": name, "modality": mod, "n_features": fmap.n_features, "n_mapped": fmap.n_mapped})
    mod_rank = {m: i for i, m in enumerate(_modalities.names())}

    def _rank(key: str) -> int:
        # Gene keys (unprefixed, shared by rna and gene_activity) first, then each prefixed
        # modality in registration order: prot, atac.
        owner = _modalities.modality_of_key(key)
        return 0 if owner is None else mod_rank[owner.name]

    keys = [k for k in order if counts[k] >= min_cells]
    keys.sort(key=_rank)  # stable: keeps first-appearance order within a modality
    return Vocabulary(keys, gene_aliases=gene_aliases), pd.DataFrame(rows)

