"""TileDB-SOMA experiments as an input: to a token store, or streamed straight into pretraining.

A SOMA experiment (``tiledbsoma``; CELLxGENE Census is one, served from object storage) holds
``obs`` (one row per cell, keyed by ``soma_joinid``), and per measurement (``"RNA"``) a ``var``
table and ``X`` layers: sparse cells x features arrays addressed by the joinids. Two routes read it
in bounded memory:

* :func:`cellweave.data.prepare_store` (``cellweave prepare URI --out STORE``) reads the selected
  cells in chunks of ``chunk_size`` and hands each chunk, as an AnnData, to the same per-chunk code
  an ``.h5ad`` takes, so the shards are what the same cells in a file would give.
* :func:`open_soma` gives corpora that pretraining reads like a token store's
  (:class:`~cellweave.data.StoreCorpus`): rows are read from the experiment, normalized and mapped
  onto the vocabulary on the fly, by the same steps as :func:`~cellweave.data.prepare_cells`.

Why blocks, and why not ``tiledbsoma_ml``
-----------------------------------------
TileDB reads whole tiles: on a 2,170-cell experiment written by ``tiledbsoma.io.from_anndata``
reading one cell took about 100 ms here, and reading 1,024 neighbouring cells about 200 ms. So
cells are read ``block_size`` neighbours (in ``soma_joinid`` order) at a time, and the last
``cache_blocks`` normalized blocks are kept; :class:`~cellweave.data.EpochShuffleSampler` asks
the corpora for these blocks (:meth:`SomaCorpus.read_groups`) and shuffles blocks, then cells
within windows of ``cache_blocks`` blocks, so an epoch reads every block once, however large the
experiment. This is the scheme of ``tiledbsoma_ml`` (shuffled chunks of neighbouring cells).

``tiledbsoma_ml.ExperimentDataset`` itself is not used: it is an ``IterableDataset`` that yields
dense cells x all-features batches (60k floats per Census cell, where the tokenizer needs the
~2k measured ones) with its own shuffling and its own DDP split. Pretraining needs a map-style
dataset: it splits cells into train and validation by position, draws tokens and masks from
``(seed, epoch, cell)`` so that a resumed run repeats an uninterrupted one, estimates its
baselines on a seeded sample of cells, and uses the same code for every source. Row access with
a block cache gives all of that with the rest of pretraining unchanged.

Memory: per selected cell a ``soma_joinid`` (8 bytes), ``present`` (1 byte), the positions of
train/validation subsets (8 bytes) and the sampler's epoch order (a Python list, as for a store);
plus ``cache_blocks`` normalized blocks and the raw block being read. Values never accumulate.
``prepare`` checks every chunk's kind of values (counts or log-normalized) as for an ``.h5ad``;
streaming decides it on the first ``check_cells`` cells and checks later blocks for NaN and
negative values only. Cell names (``obs_id``, else the joinid) are not checked for duplicates
across chunks: joinids are unique, and ``from_anndata`` writes unique ``obs_id``.

Identity of an experiment (the ``sha256`` of its source record, which ``--append`` uses to skip
a source already in a store): for a local folder, the SHA-256 of its files' relative paths and
sizes (TileDB names every fragment by its write time and a UUID, so any write changes it, and
no value needs to be read), with the measurement, layer, filter and feature-name column; for a
remote URI (``s3://``, ``tiledb://``, ...), the SHA-256 of the URI and those settings, as a
Census release URI names data that does not change. The time the cells were read at is recorded
beside it, and every read of one source is pinned to it (``tiledb_timestamp``), so a writer
working on the experiment meanwhile cannot mix two versions into one store or one run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellweave._exceptions import CellWeaveInputError

from ._corpus import CellCorpus, ModalityBlock, _aggregate_columns, _normalize, prepare_cells

if TYPE_CHECKING:
    from cellweave.genes import Vocabulary

logger = logging.getLogger(__name__)

#: URI schemes TileDB reads remotely; a URI with one of them is taken as a SOMA experiment.
REMOTE_SCHEMES = ("s3", "tiledb", "gs", "gcs", "az", "azure", "http", "https")
#: Neighbouring cells read at once when streaming (TileDB reads whole tiles; see the module notes).
DEFAULT_BLOCK_SIZE = 1024
#: Normalized blocks kept per source; also the window of blocks the sampler shuffles cells within.
DEFAULT_CACHE_BLOCKS = 8
#: ``var`` columns tried, in order, for the feature names when none is given.
VAR_NAME_COLUMNS = ("feature_name", "var_id")
#: ``var`` columns tried, in order, for Ensembl gene IDs (cellweave's ``var["gene_id"]``).
VAR_ID_COLUMNS = ("gene_id", "feature_id")
#: ``X`` layers tried, in order, when none is given: raw counts first (Census: "raw"; an
#: experiment written by ``tiledbsoma.io.from_anndata`` has its ``X`` as "data").
LAYER_ORDER = ("raw", "counts", "data")


@dataclass(frozen=True)
class SomaSelection:
    """Which cells and values of a SOMA experiment to read.

    Attributes
    ----------
    measurement
        The measurement (``exp.ms[...]``) holding the cells' RNA.
    layer
        ``X`` layer of the measurement; ``None`` takes the first of "raw", "counts", "data" that
        exists (raw counts are what the model normalizes itself).
    value_filter
        A TileDB-SOMA ``value_filter`` on ``obs`` selecting cells, e.g.
        ``"tissue_general == 'blood' and is_primary_data == True"``; ``None`` reads every cell.
    var_column
        ``var`` column with the feature names; ``None`` takes ``feature_name`` (Census) if present,
        else ``var_id`` (what ``from_anndata`` writes the var index as). A ``gene_id`` or
        ``feature_id`` column, when present, gives the Ensembl IDs.
    tiledb_config
        ``(key, value)`` pairs of TileDB configuration, e.g. ``(("vfs.s3.region", "us-west-2"),
        ("vfs.s3.no_sign_request", "true"))`` for CELLxGENE Census' public bucket. Only the keys
        are recorded (values may be credentials), and they are no part of the source's identity.
    """

    measurement: str = "RNA"
    layer: str | None = None
    value_filter: str | None = None
    var_column: str | None = None
    tiledb_config: tuple[tuple[str, str], ...] = ()


def is_soma(uri: str | os.PathLike) -> bool:
    """Whether ``uri`` names a TileDB-SOMA experiment: a local folder that is one (a TileDB group
    with ``obs`` and ``ms``), or a URI with a remote scheme (``s3://``, ``tiledb://``, ...), which
    is taken as one without a network call."""
    text = str(uri)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in REMOTE_SCHEMES:
        return True
    path = Path(text[len("file://"):] if scheme == "file" else text).expanduser()
    return (path.is_dir() and (path / "__tiledb_group.tdb").is_file() and (path / "obs").is_dir()
            and (path / "ms").is_dir())


def _local_path(uri: str) -> Path | None:
    text = str(uri)
    if "://" in text and not text.startswith("file://"):
        return None
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()


def _first_line(err: BaseException) -> str:
    """An error's message without the native traceback TileDB appends to it."""
    text = str(err).strip()
    return text.splitlines()[0].strip(" '\"") if text else type(err).__name__


def _tiledbsoma() -> Any:
    try:
        import tiledbsoma
    except ImportError:
        raise CellWeaveInputError(
            "Reading a TileDB-SOMA experiment needs the tiledbsoma package: pip install 'cellweave[soma]'."
        ) from None
    return tiledbsoma


class SomaReader:
    """The selected cells of one experiment, read by position in ``soma_joinid`` order.

    Pickled (DataLoader workers, DDP processes), it carries its settings and the pinned read time
    only, and opens the experiment again on first use; the joinids are read again too (same
    timestamp, same cells).
    """

    def __init__(self, uri: str | os.PathLike, selection: SomaSelection | None = None,
                 read_at: int | None = None) -> None:
        self.uri = str(uri)
        self.selection = selection or SomaSelection()
        #: milliseconds since the epoch; every read of this source sees the experiment as of then
        self.read_at = int(read_at) if read_at is not None else int(time.time() * 1000)
        self._exp: Any = None
        self._state: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "selection": self.selection, "read_at": self.read_at}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["selection"], state["read_at"])

    def close(self) -> None:
        if self._exp is not None:
            self._exp.close()
            self._exp = None

    # -- opening and checking ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The experiment's folder name (the last part of a URI): the corpus and dataset name."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1] or "soma"

    def _open(self) -> dict[str, Any]:
        if self._state is not None:
            return self._state
        soma = _tiledbsoma()
        local = _local_path(self.uri)
        if local is not None and not local.exists():
            raise CellWeaveInputError(f"No SOMA experiment at {self.uri}: the folder does not exist. Check the path "
                                      f"(relative to {Path.cwd()}).")
        sel = self.selection
        context = soma.SOMATileDBContext(tiledb_config=dict(sel.tiledb_config)) if sel.tiledb_config else None
        try:
            exp = soma.Experiment.open(str(local) if local is not None else self.uri, tiledb_timestamp=self.read_at,
                                       context=context)
        except (soma.DoesNotExistError, soma.SOMAError, TypeError, ValueError) as err:
            raise CellWeaveInputError(
                f"{self.uri} is not a readable TileDB-SOMA experiment ({type(err).__name__}: {_first_line(err)}). "
                "Point at the "
                "experiment's root (the folder or URI holding obs and ms), e.g. one written by "
                "tiledbsoma.io.from_anndata."
            ) from None
        self._exp = exp
        if sel.measurement not in exp.ms:
            raise CellWeaveInputError(f"{self.uri} has no measurement {sel.measurement!r}; it has "
                                      f"{sorted(exp.ms.keys())}. Pass one of them (--soma-measurement).")
        ms = exp.ms[sel.measurement]
        layers = sorted(ms.X.keys()) if "X" in ms else []
        layer = sel.layer if sel.layer is not None else next((x for x in LAYER_ORDER if x in layers), None)
        if layer is None or layer not in layers:
            asked = f"no X layer {sel.layer!r}" if sel.layer is not None else f"none of the layers {list(LAYER_ORDER)}"
            raise CellWeaveInputError(f"{self.uri}: measurement {sel.measurement!r} has {asked}; its X layers are "
                                      f"{layers or 'none'}. Pass the one with raw counts (--soma-layer).")
        X = ms.X[layer]
        if not isinstance(X, soma.SparseNDArray):
            raise CellWeaveInputError(f"{self.uri}: X layer {layer!r} is a {type(X).__name__}; cellweave reads sparse "
                                      "X layers. Pass a sparse layer (--soma-layer).")
        var = ms.var.read().concat().to_pandas()
        name_col = sel.var_column if sel.var_column is not None else next(
            (c for c in VAR_NAME_COLUMNS if c in var.columns), None)
        if name_col is None or name_col not in var.columns:
            cols = [c for c in var.columns if c != "soma_joinid"]
            asked = f"no column {sel.var_column!r}" if sel.var_column is not None else f"none of {list(VAR_NAME_COLUMNS)}"
            raise CellWeaveInputError(f"{self.uri}: {sel.measurement}/var has {asked}; its columns are {cols}. Pass "
                                      "the column of gene symbols or Ensembl IDs (--soma-var-column).")
        var = var.sort_values("soma_joinid")
        names = var[name_col].astype(str)
        dup = names.duplicated()
        if dup.any():
            raise CellWeaveInputError(
                f"{self.uri}: {int(dup.sum())} duplicate feature names in var column {name_col!r} (e.g. "
                f"{list(names[dup][:3])}); pass a column with unique names (--soma-var-column, e.g. feature_id)."
            )
        table = pd.DataFrame(index=pd.Index(names.to_numpy(), dtype=object))
        id_col = next((c for c in VAR_ID_COLUMNS if c in var.columns and c != name_col), None)
        if id_col is not None:
            table["gene_id"] = var[id_col].fillna("").astype(str).to_numpy()
        var_joinids = var["soma_joinid"].to_numpy(dtype=np.int64)
        n_var_domain = int(X.shape[1])
        column_of = np.full(max(n_var_domain, int(var_joinids.max(initial=-1)) + 1), -1, dtype=np.int64)
        column_of[var_joinids] = np.arange(var_joinids.size)
        obs_columns = set(exp.obs.schema.names)
        try:
            joinids = [np.asarray(t.column("soma_joinid"), dtype=np.int64) for t in exp.obs.read(
                column_names=["soma_joinid"], value_filter=sel.value_filter)]
        except (soma.SOMAError, ValueError, TypeError) as err:
            raise CellWeaveInputError(
                f"{self.uri}: the obs filter {sel.value_filter!r} cannot be applied ({_first_line(err)}). Write it "
                "over obs "
                f"columns ({sorted(obs_columns - {'soma_joinid'})[:8]}...), e.g. \"cell_type == 'B cell'\" "
                "(--soma-filter)."
            ) from None
        jid = np.sort(np.concatenate(joinids)) if joinids else np.zeros(0, dtype=np.int64)
        if jid.size == 0:
            why = f"the filter {sel.value_filter!r} selects no cell" if sel.value_filter else "obs holds no cell"
            raise CellWeaveInputError(f"{self.uri}: {why}. Check the filter (--soma-filter) and the experiment.")
        self._state = {
            "layer": layer, "var_column": name_col, "gene_id_column": id_col, "var": table, "column_of": column_of,
            "joinids": jid, "obs_id": "obs_id" if "obs_id" in obs_columns else None,
            "X": X, "obs": exp.obs, "n_obs_total": int(exp.obs.count),
        }
        return self._state

    @property
    def n_cells(self) -> int:
        return int(self._open()["joinids"].size)

    @property
    def joinids(self) -> np.ndarray:
        return self._open()["joinids"]

    @property
    def var(self) -> pd.DataFrame:
        """Features in ``X``'s column order: index = names, ``gene_id`` when the experiment has IDs."""
        return self._open()["var"]

    def record(self) -> dict[str, Any]:
        """What the manifest and the model card record about this source."""
        st = self._open()
        return {
            "uri": self.uri, "measurement": self.selection.measurement, "layer": st["layer"],
            "value_filter": self.selection.value_filter, "var_column": st["var_column"],
            "gene_id_column": st["gene_id_column"], "n_cells": self.n_cells, "n_obs_total": st["n_obs_total"],
            "read_at_ms": self.read_at, "identity": self.identity_kind,
            "tiledb_config_keys": sorted(k for k, _ in self.selection.tiledb_config),
        }

    @property
    def identity_kind(self) -> str:
        return "local files (paths and sizes)" if _local_path(self.uri) is not None else "URI"

    def identity(self) -> str:
        """SHA-256 naming this selection of this experiment (see the module notes)."""
        st = self._open()
        parts = [f"measurement={self.selection.measurement}", f"layer={st['layer']}",
                 f"filter={self.selection.value_filter}", f"var_column={st['var_column']}"]
        local = _local_path(self.uri)
        if local is not None:
            parts += [f"{p.relative_to(local).as_posix()}:{p.stat().st_size}" for p in sorted(local.rglob("*"))
                      if p.is_file()]
        else:
            parts.append(f"uri={self.uri}")
        return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()

    # -- reading -------------------------------------------------------------------------------

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Raw values (float32 CSR, cells x ``var``) of the selected cells at positions ``start:stop``."""
        st = self._open()
        jid = st["joinids"][start:stop]
        n = jid.size
        if n == 0:
            return sp.csr_matrix((0, len(st["var"])), dtype=np.float32)
        lo, hi = int(jid[0]), int(jid[-1])
        # A span of joinids is read as one slice (fast); a sparse selection by its points, as a slice
        # would read many cells only to drop them.
        coords = (slice(lo, hi),) if hi - lo + 1 <= 4 * n else (jid,)
        d0, d1, val = [], [], []
        for t in st["X"].read(coords=coords, result_order="row-major").tables():
            d0.append(np.asarray(t.column("soma_dim_0"), dtype=np.int64))
            d1.append(np.asarray(t.column("soma_dim_1"), dtype=np.int64))
            val.append(np.asarray(t.column("soma_data")))
        if not d0:
            return sp.csr_matrix((n, len(st["var"])), dtype=np.float32)
        d0, d1, val = np.concatenate(d0), np.concatenate(d1), np.concatenate(val)
        rows = np.clip(np.searchsorted(jid, d0), 0, n - 1)
        cols = st["column_of"][d1]
        keep = (jid[rows] == d0) & (cols >= 0)  # cells of the slice outside the selection; columns var lacks
        X = sp.csr_matrix((val[keep].astype(np.float32, copy=False), (rows[keep], cols[keep])),
                          shape=(n, len(st["var"])))
        X.sum_duplicates()
        return X

    def obs_names(self, start: int, stop: int) -> pd.Index:
        """Cell names at positions ``start:stop``: ``obs_id`` when obs has it, else the joinid."""
        st = self._open()
        jid = st["joinids"][start:stop]
        if st["obs_id"] is None or jid.size == 0:
            return pd.Index(jid.astype(str), dtype=object)
        tab = st["obs"].read(coords=(jid,), column_names=["soma_joinid", "obs_id"]).concat().to_pandas()
        names = tab.set_index("soma_joinid")["obs_id"].reindex(jid)
        return pd.Index(names.astype(str).to_numpy(), dtype=object)

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, int]]:
        for start in range(0, self.n_cells, chunk_size):
            yield start, min(start + chunk_size, self.n_cells)


# --------------------------------------------------------------------------------------------
# Streaming corpora


class _ColumnPlan:
    """How raw rows become a corpus' values: the same steps as :func:`prepare_cells`."""

    def __init__(self, var_ids: np.ndarray, x_kind: str, value_encoding: str) -> None:
        self.var_ids = var_ids  # (n_var,) vocabulary id of each var column, -1 when unknown
        self.keep = var_ids >= 0
        self.x_kind = x_kind
        self.value_encoding = value_encoding

    def apply(self, X: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray | None]:
        """``(values, token_ids, library)`` of raw rows ``X``; library ``None`` unless counts."""
        library = np.asarray(X.sum(axis=1), dtype=np.float64).ravel() if self.x_kind == "counts" else None
        Xn = _normalize(X, self.x_kind, self.value_encoding)
        Xk, tok = _aggregate_columns(Xn[:, self.keep].tocsr(), self.var_ids[self.keep])
        return Xk.astype(np.float32), tok.astype(np.int64), library


class _BlockCache:
    """The last ``cache_blocks`` blocks of normalized rows of one source (per process)."""

    def __init__(self, reader: SomaReader, plan: _ColumnPlan, block_size: int, cache_blocks: int) -> None:
        self.reader = reader
        self.plan = plan
        self.block_size = int(block_size)
        self.cache_blocks = int(cache_blocks)
        self._blocks: OrderedDict[int, tuple[sp.csr_matrix, np.ndarray | None]] = OrderedDict()
        self.reads = 0  # blocks read from the experiment (a measure of how well the sampler fits the cache)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_blocks", "reads")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._blocks = OrderedDict()
        self.reads = 0

    def block(self, b: int) -> tuple[sp.csr_matrix, np.ndarray | None]:
        got = self._blocks.get(b)
        if got is not None:
            self._blocks.move_to_end(b)
            return got
        start = b * self.block_size
        stop = min(start + self.block_size, self.reader.n_cells)
        X = self.reader.read_rows(start, stop)
        if X.nnz and not np.isfinite(X.data).all():
            raise CellWeaveInputError(f"{self.reader.uri}: cells {start}-{stop - 1} (in joinid order) hold NaN or "
                                      "infinite values. Fix the layer, or pass another one (--soma-layer).")
        if X.nnz and X.data.min() < 0:
            raise CellWeaveInputError(f"{self.reader.uri}: cells {start}-{stop - 1} (in joinid order) hold negative "
                                      "values; the layer looks scaled. Pass the raw counts layer (--soma-layer).")
        values, _, library = self.plan.apply(X)
        self._blocks[b] = (values, library)
        self.reads += 1
        while len(self._blocks) > self.cache_blocks:
            self._blocks.popitem(last=False)
        return values, library


class _SlotPointers:
    """``indptr`` of a :class:`SomaCSR`: row ``i``'s values lie in the slot
    ``[i * width, (i + 1) * width)``, ``width`` = the number of columns (no row holds more)."""

    def __init__(self, n_rows: int, width: int) -> None:
        self.n_rows = int(n_rows)
        self.width = int(width)

    def __len__(self) -> int:
        return self.n_rows + 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return np.arange(len(self), dtype=np.int64)[i] * self.width
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i <= self.n_rows:
            raise IndexError(f"row pointer {i} out of range for {self.n_rows} rows")
        return i * self.width


class _SlotValues:
    """``indices`` or ``data`` of a :class:`SomaCSR`, read by whole slots ``indptr[i]:indptr[i + 1]``."""

    def __init__(self, owner: SomaCSR, which: str) -> None:
        self._owner = owner
        self._which = which
        self.dtype = np.dtype(np.int32 if which == "indices" else np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        width = self._owner.indptr.width
        if (not isinstance(key, slice) or key.step not in (None, 1) or key.start is None or width == 0
                or key.start % width or key.stop - key.start != width):
            raise TypeError("Values streamed from SOMA are read one row at a time: indices[indptr[i]:indptr[i + 1]].")
        return self._owner._row(key.start // width, self._which)


class SomaCSR:
    """Rows of a SOMA source, normalized and mapped onto the vocabulary as they are read.

    Reads like the CSR values of a :class:`~cellweave.data.CellCorpus` for what pretraining does
    with them: row ``i``'s ``indices[indptr[i]:indptr[i + 1]]`` and ``data[...]`` (``indptr``
    addresses fixed-width slots, see :class:`_SlotPointers`; the slice gives the row's stored
    values), row selection (``X[idx]``, no values read), ``sum(axis=...)`` and ``tocsr()`` (read
    block by block). ``nnz`` is not known without reading every row, so there is none.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, cache: _BlockCache, n_source: int, n_columns: int, rows: np.ndarray | None = None) -> None:
        self._cache = cache
        self._n_source = int(n_source)
        self._rows = rows
        self._n_columns = int(n_columns)
        self.indptr = _SlotPointers(self.shape[0], n_columns)
        self.indices = _SlotValues(self, "indices")
        self.data = _SlotValues(self, "data")

    @property
    def shape(self) -> tuple[int, int]:
        return (self._n_source if self._rows is None else int(self._rows.size), self._n_columns)

    def __repr__(self) -> str:
        return f"<SomaCSR {self.shape[0]} x {self.shape[1]} from {self._cache.reader.uri}>"

    def _source_rows(self) -> np.ndarray:
        return np.arange(self._n_source, dtype=np.int64) if self._rows is None else self._rows

    def __getitem__(self, key: Any) -> SomaCSR:
        if isinstance(key, tuple):
            if len(key) == 2 and isinstance(key[1], slice) and key[1] == slice(None):
                key = key[0]
            else:
                raise TypeError("SomaCSR selects rows only; read them with .tocsr() to select columns.")
        idx = np.atleast_1d(np.arange(self.shape[0])[key])
        return SomaCSR(self._cache, self._n_source, self._n_columns, self._source_rows()[idx].astype(np.int64))

    def _row(self, i: int, which: str) -> np.ndarray:
        """Stored ``indices`` or ``data`` of view row ``i`` (views of the cached block, not copies)."""
        g = int(i) if self._rows is None else int(self._rows[i])
        B = self._cache.block_size
        values, _ = self._cache.block(g // B)
        r = g % B
        return getattr(values, which)[values.indptr[r]:values.indptr[r + 1]]

    def _groups(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(block, positions in this view, rows in the block)`` for every block the view uses, in block order."""
        rows = self._source_rows()
        blocks = rows // self._cache.block_size
        order = np.argsort(blocks, kind="stable")
        bounds = np.flatnonzero(np.diff(blocks[order])) + 1
        for part in np.split(order, bounds):
            if part.size:
                b = int(blocks[part[0]])
                yield b, part, rows[part] - b * self._cache.block_size

    def sum(self, axis: int | None = None) -> Any:
        """Sums like SciPy's: ``axis=0`` -> (1, n_columns), ``axis=1`` -> (n_rows, 1), ``None`` -> a float."""
        if axis is None:
            return float(self.sum(axis=1).sum())
        if axis in (1, -1):
            out = np.zeros((self.shape[0], 1), dtype=np.float64)
            for b, pos, local in self._groups():
                out[pos, 0] = np.asarray(self._cache.block(b)[0][local].sum(axis=1), dtype=np.float64).ravel()
            return out
        if axis == 0:
            out = np.zeros((1, self._n_columns), dtype=np.float64)
            for b, _pos, local in self._groups():
                X = self._cache.block(b)[0][local]
                out[0] += np.bincount(X.indices, weights=X.data, minlength=self._n_columns)
            return out
        raise ValueError(f"axis must be 0, 1 or None, not {axis!r}")

    def library(self) -> np.ndarray:
        """Raw counts per cell over all features (counts layers only)."""
        out = np.zeros(self.shape[0], dtype=np.float64)
        for b, pos, local in self._groups():
            lib = self._cache.block(b)[1]
            if lib is None:
                raise CellWeaveInputError("The layer does not hold counts, so there are no library sizes.")
            out[pos] = lib[local]
        return out

    def tocsr(self, copy: bool = False) -> sp.csr_matrix:
        """These rows as a SciPy CSR matrix in memory (float32)."""
        parts, positions = [], []
        for b, pos, local in self._groups():
            parts.append(self._cache.block(b)[0][local])
            positions.append(pos)
        if not parts:
            return sp.csr_matrix(self.shape, dtype=np.float32)
        X = sp.vstack(parts, format="csr")
        order = np.concatenate(positions)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return X[inverse].astype(np.float32, copy=False)

    def toarray(self) -> np.ndarray:
        return self.tocsr().toarray()

    def astype(self, dtype: Any, copy: bool = True) -> sp.csr_matrix:
        return self.tocsr().astype(dtype)


class SomaCorpus:
    """The selected cells of a SOMA experiment, read like a :class:`~cellweave.data.StoreCorpus`.

    ``blocks`` (one, RNA) hold :class:`SomaCSR` values, the source's column ``token_ids`` and
    ``present``; ``obs`` (cell names, ``dataset``, ``rna_library``) is read when first asked for
    (one pass over the cells). ``source`` is the record a token store would keep for it.
    """

    def __init__(self, blocks: list[ModalityBlock], name: str, coverage: list[dict[str, Any]], source: dict[str, Any],
                 value_encoding: str, cache: _BlockCache, rows: np.ndarray | None = None) -> None:
        self.blocks = blocks
        self.name = name
        self.coverage = coverage
        self.source = source
        self.value_encoding = value_encoding
        self._cache = cache
        self._rows = rows

    def __len__(self) -> int:
        return self._cache.reader.n_cells if self._rows is None else int(self._rows.size)

    def __repr__(self) -> str:
        return f"<SomaCorpus {self.name!r}: {len(self)} cells from {self._cache.reader.uri}>"

    @property
    def modalities(self) -> list[str]:
        return [b.modality for b in self.blocks]

    def _source_rows(self) -> np.ndarray:
        return np.arange(len(self), dtype=np.int64) if self._rows is None else self._rows

    def subset(self, idx: np.ndarray) -> SomaCorpus:
        """The corpus restricted to the cells at positions ``idx`` (no values are read)."""
        idx = np.asarray(idx)
        rows = np.atleast_1d(self._source_rows()[idx]).astype(np.int64)
        blocks = [ModalityBlock(b.modality, b.values[idx], b.token_ids, b.present[idx], b.x_kind) for b in self.blocks]
        return SomaCorpus(blocks, self.name, self.coverage, self.source, self.value_encoding, self._cache, rows)

    def read_groups(self) -> np.ndarray:
        """The block each cell is read with; :class:`~cellweave.data.EpochShuffleSampler` shuffles
        blocks, and cells within windows of :attr:`read_window` blocks, so each is read once an epoch."""
        return self._source_rows() // self._cache.block_size

    @property
    def read_window(self) -> int:
        return self._cache.cache_blocks

    @property
    def reads(self) -> int:
        """Blocks read from the experiment so far in this process."""
        return self._cache.reads

    @property
    def obs_names(self) -> pd.Index:
        reader = self._cache.reader
        rows = self._source_rows()
        names = np.empty(rows.size, dtype=object)
        for b, pos, local in SomaCSR(self._cache, reader.n_cells, 0, rows)._groups():
            start = b * self._cache.block_size
            names[pos] = reader.obs_names(start, min(start + self._cache.block_size, reader.n_cells))[local]
        return pd.Index(names, dtype=object)

    @cached_property
    def obs(self) -> pd.DataFrame:
        """Cell names, ``dataset`` and, for counts, ``rna_library`` (read when first asked for)."""
        obs = pd.DataFrame(index=self.obs_names)
        obs["dataset"] = self.name
        for b in self.blocks:
            if b.x_kind == "counts":
                obs[f"{b.modality}_library"] = b.values.library()
        return obs

    def to_corpus(self) -> CellCorpus:
        """The cells in memory as a :class:`~cellweave.data.CellCorpus` (memory as their values)."""
        blocks = [ModalityBlock(b.modality, b.values.tocsr(), b.token_ids, np.asarray(b.present), b.x_kind)
                  for b in self.blocks]
        return CellCorpus(blocks, self.obs.copy(), self.coverage, self.name)


def _first_chunk(reader: SomaReader, vocab: Vocabulary, value_encoding: str, chunk_size: int) -> CellCorpus:
    """The first ``chunk_size`` selected cells through :func:`prepare_cells`: the checks, the kind of
    values and the coverage report of the source, as the first chunk of a ``prepare`` gives them."""
    from cellweave.genes import infer_organism

    import anndata as ad

    stop = min(chunk_size, reader.n_cells)
    var = reader.var
    chunk = ad.AnnData(X=reader.read_rows(0, stop), obs=pd.DataFrame(index=reader.obs_names(0, stop)), var=var)
    organism = infer_organism(var.index, var.get("gene_id"))
    return prepare_cells(chunk, vocab, organism=organism, dataset=reader.name, value_encoding=value_encoding)


def open_soma(
    uri: str | os.PathLike,
    *,
    vocab: Vocabulary,
    value_encoding: str = "log1p",
    selection: SomaSelection | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    cache_blocks: int = DEFAULT_CACHE_BLOCKS,
    check_cells: int = 10_000,
) -> list[SomaCorpus]:
    """The selected cells of a SOMA experiment as a corpus read from the experiment on demand.

    Parameters
    ----------
    uri
        Local folder or remote URI of a TileDB-SOMA experiment.
    vocab, value_encoding
        What the tokens refer to and how values are encoded (a model's ``model.vocab`` and
        ``config.value_encoding``, or :func:`soma_vocabulary`).
    selection
        Measurement, layer, obs filter and feature-name column (:class:`SomaSelection`).
    block_size, cache_blocks
        Neighbouring cells read at once, and normalized blocks kept (see the module notes).
    check_cells
        The first cells are read through :func:`prepare_cells` at once, which checks them and
        decides whether the layer holds counts (as the first chunk of ``cellweave prepare``);
        later blocks are checked for NaN and negative values as they are read.

    Returns
    -------
    A list of one :class:`SomaCorpus` (the shape :func:`~cellweave.data.open_store` returns), which
    :class:`~cellweave.data.TokenDataset` and :func:`cellweave.train.pretrain` read as they are.
    Its rows are the values :func:`~cellweave.data.prepare_store` would write for these cells.

    Examples
    --------
    >>> corpora = open_soma("pbmc.soma", vocab=model.vocab, value_encoding=model.config.value_encoding,
    ...                     selection=SomaSelection(value_filter="cell_type == 'B cell'"))  # doctest: +SKIP
    """
    if int(block_size) < 1 or int(cache_blocks) < 1:
        raise CellWeaveInputError(f"block_size {block_size} and cache_blocks {cache_blocks}: give at least 1 each.")
    reader = SomaReader(uri, selection)
    first = _first_chunk(reader, vocab, value_encoding, max(1, int(check_cells)))
    block = first.blocks[0]
    fmap_ids = _var_token_ids(reader.var, vocab, first.coverage[0].get("organism"))
    plan = _ColumnPlan(fmap_ids, block.x_kind, value_encoding)
    _, tok, _ = plan.apply(reader.read_rows(0, min(1, reader.n_cells)))
    if not np.array_equal(tok, block.token_ids):  # the plan must be prepare_cells' own mapping
        raise RuntimeError("cellweave: SOMA column plan differs from prepare_cells; please report this.")
    cache = _BlockCache(reader, plan, block_size, cache_blocks)
    n = reader.n_cells
    values = SomaCSR(cache, n, block.token_ids.size)
    record = {"name": reader.name, "path": reader.uri, "sha256": reader.identity(), "read": "soma-stream",
              "n_cells": n, "modalities": ["rna"], "x_kind": {"rna": block.x_kind},
              "n_columns": {"rna": int(block.token_ids.size)}, "coverage": first.coverage, "soma": reader.record()}
    corpus = SomaCorpus([ModalityBlock("rna", values, block.token_ids, np.ones(n, dtype=bool), block.x_kind)],
                        reader.name, first.coverage, record, value_encoding, cache)
    logger.info("%s: %d cells streamed from %s (measurement %s, layer %s%s), blocks of %d cells", reader.name, n,
                reader.uri, reader.selection.measurement, record["soma"]["layer"],
                f", filter {reader.selection.value_filter!r}" if reader.selection.value_filter else "", block_size)
    return [corpus]


def _var_token_ids(var: pd.DataFrame, vocab: Vocabulary, organism: str | None) -> np.ndarray:
    from cellweave.genes import map_features

    fmap = map_features(var, modality="rna", organism=organism, aliases=vocab.gene_aliases)
    return np.asarray(vocab.lookup(fmap.keys), dtype=np.int64)


def soma_vocabulary(
    uri: str | os.PathLike,
    *,
    selection: SomaSelection | None = None,
    min_cells: int = 3,
    gene_aliases: bool | None = None,
    chunk_size: int = 10_000,
) -> Vocabulary:
    """The vocabulary :func:`~cellweave.data.build_vocabulary` would build from the selected cells.

    Every feature detected in at least ``min_cells`` cells, counted over one pass of the cells in
    chunks of ``chunk_size`` (memory: one chunk and a count per feature).
    """
    from cellweave.genes import Vocabulary, aliases_available, infer_organism, map_features

    if gene_aliases is None:
        gene_aliases = aliases_available()
    reader = SomaReader(uri, selection)
    var = reader.var
    n_cells = np.zeros(len(var), dtype=np.int64)
    for start, stop in reader.chunks(int(chunk_size)):
        X = reader.read_rows(start, stop)
        n_cells += np.bincount(X.indices, minlength=len(var))
    fmap = map_features(var, modality="rna", organism=infer_organism(var.index, var.get("gene_id")),
                        aliases=gene_aliases)
    mapped = fmap.mapped_mask
    per_key = pd.Series(n_cells[mapped]).groupby(fmap.keys[mapped]).sum()
    keys = [str(k) for k, n in per_key.items() if int(n) >= min_cells]
    reader.close()
    return Vocabulary(keys, gene_aliases=gene_aliases)


