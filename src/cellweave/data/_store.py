"""A sharded token store read from disk: corpora larger than memory, prepared once.

``prepare_store`` reads each input in row chunks (``.h5ad`` through anndata's backed mode), runs
:func:`~cellweave.data.prepare_cells` on every chunk and writes the normalized, vocabulary-mapped
cells as shards of plain ``.npy`` arrays; ``open_store`` opens them as corpora whose rows are
read from disk when asked for, which :class:`~cellweave.data.TokenDataset` reads like in-memory ones, so the tokens of a cell are the
same whichever route it took.

Layout of a store folder::

    STORE/
      manifest.json            what the store holds and how it was built (written last, atomically)
      .lock                    held while a prepare writes (one writer at a time)
      shards/<src>-<k>/        shard k of the source whose file SHA-256 starts with <src>
        obs_names.npy          (n,) cell names, fixed-width unicode
        <mod>.data.npy         (nnz,) float32 normalized values (CSR)
        <mod>.indices.npy      (nnz,) int32 column of each value, local to the source
        <mod>.indptr.npy       (n + 1,) int64 row pointers
        <mod>.token_ids.npy    (n_columns,) int64 vocabulary id of each column
        <mod>.present.npy      (n,) bool: cell measured in this modality
        <mod>.library.npy      (n,) float64 counts per cell (counts input only)

Why normalizing per chunk gives the in-memory result: log1p(counts per 10k) and within-cell
quantiles are functions of one cell's values; nothing is computed across cells. What is computed
from several cells (the kind of values, by :func:`cellweave.io.detect_x_kind`) is checked to agree
between the chunks of a source.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellweave._exceptions import CellWeaveInputError
from cellweave._io_utils import atomic_write_json, remove_stale_temporaries, sha256_file

from ._corpus import CellCorpus, ModalityBlock, prepare_cells
from ._soma import SomaReader, SomaSelection, is_soma

if TYPE_CHECKING:
    from cellweave.genes import Vocabulary

logger = logging.getLogger(__name__)

STORE_FORMAT = "cellweave-token-store"
#: Bumped whenever the layout changes in a way an older reader would misread.
STORE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
LOCK = ".lock"
VOCAB = "vocab.json"
#: Cells per chunk: about 2k nonzero genes per cell x 8 bytes x 10k cells = 160 MB per copy, and
#: normalization holds a few copies.
DEFAULT_CHUNK_SIZE = 10_000
_TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------------------------
# Writing


def prepare_store(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    vocab: Vocabulary,
    value_encoding: Literal["log1p", "quantile"] = "log1p",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    append: bool = False,
    soma: SomaSelection | None = None,
    generate_codes: bool | Iterable[str] = False,
) -> dict[str, Any]:
    """Write the cells of ``inputs`` into a token store at ``out``, in bounded memory.

    Parameters
    ----------
    inputs
        Files to add. ``.h5ad`` files are read ``chunk_size`` rows at a time through anndata's
        backed mode (``X`` must be CSR or dense; a CSC ``X`` is read whole, with a warning).
        ``.h5mu``, 10x ``.h5``/mtx and ``.loom`` inputs are read whole with
        :func:`cellweave.io.read` (those readers have no row-chunked mode) and then written in
        shards of ``chunk_size`` cells; their memory is that of the file. A TileDB-SOMA
        experiment (a local folder, or a URI such as ``s3://...``; see :func:`is_soma`) is read
        ``chunk_size`` cells at a time, as an ``.h5ad``.
    out
        Store folder; created when missing.
    vocab
        The vocabulary tokens refer to (a model's ``model.vocab``).
    value_encoding
        ``"log1p"`` or ``"quantile"``, as :func:`prepare_cells` (a model's ``config.value_encoding``).
    chunk_size
        Cells read and normalized at once, and cells per shard.
    append
        Add ``inputs`` to an existing store: new sources get new shards, old shards are never
        rewritten, and a source already in the store (same SHA-256) is skipped. Without it an
        existing store is refused. A store built with another vocabulary or value encoding is
        refused either way.
    soma
        Which measurement, ``X`` layer, cells (an ``obs`` value filter) and feature-name column
        to read from SOMA inputs (:class:`~cellweave.data.SomaSelection`; default: measurement
        "RNA", the raw layer, every cell). A SOMA source's identity is described in
        :mod:`cellweave.data._soma`; its manifest record holds these settings under ``"soma"``.
    generate_codes
        Keep the features ``vocab`` lacks too, for a model that gives them generated codes
        (:attr:`cellweave.CellWeave.generates_codes`): ``True`` keeps those of every modality, a
        list of modality names those of the listed ones (``"rna"`` or ``"gene_activity"``: gene
        keys; ``cellweave prepare`` passes the modalities the model reads). The store's saved
        vocabulary (:func:`store_vocabulary`) is ``vocab`` followed by them, in order of first
        appearance, and :func:`cellweave.tl.embed_store` maps them onto the model's codes, so a
        store embeds as its files do. Default: only ``vocab``'s features are kept. A store keeps its
        setting on append; the manifest records it as the list of modalities (a store of the
        thirty-eighth session, which kept genes only, records ``true``).

    Returns
    -------
    The manifest as written to ``out/manifest.json``.

    Notes
    -----
    A prepare killed midway leaves the store as its last manifest describes it: every shard is
    written into a temporary folder and renamed into place, and the manifest is rewritten
    (atomically) after each source. The next prepare on the folder removes temporaries and shards
    the manifest does not list before it starts, so a half-written source is redone, never used;
    rerun the same command with ``append=True`` (``--append``) to finish.

    Examples
    --------
    >>> from cellweave.models import CellWeave  # doctest: +SKIP
    >>> model = CellWeave.load()  # doctest: +SKIP
    >>> prepare_store(["a.h5ad", "b.h5ad"], "store/", vocab=model.vocab,
    ...               value_encoding=model.config.value_encoding)  # doctest: +SKIP
    >>> corpora = open_store("store/")  # doctest: +SKIP
    """
    if value_encoding not in ("log1p", "quantile"):
        raise CellWeaveInputError(f"value_encoding must be 'log1p' or 'quantile', not {value_encoding!r}.")
    if int(chunk_size) < 1:
        raise CellWeaveInputError(f"chunk_size {chunk_size}: give at least 1 cell per chunk.")
    chunk_size = int(chunk_size)
    # A SOMA experiment stays a URI (it may be remote); its reader opens and checks it.
    paths: list[Path | SomaReader] = [SomaReader(p, soma) if is_soma(p) else Path(p).expanduser() for p in inputs]
    if not paths:
        raise CellWeaveInputError("No input files given; pass one or more .h5ad / .h5mu / 10x files or SOMA "
                                  "experiments.")
    from cellweave.io import check_readable

    for p in paths:
        if isinstance(p, SomaReader):
            p.n_cells  # opens it: a bad URI, measurement, layer or filter is refused before anything is written
        else:
            check_readable(p)  # missing, empty, unknown or unparsable files are refused before anything is written
    out = Path(out).expanduser()
    if out.is_file():
        raise CellWeaveInputError(f"{out} is a file; a token store is a folder. Choose a folder path for out.")
    _refuse_foreign_folder(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _prepare_into(paths, out, vocab=vocab, value_encoding=value_encoding, chunk_size=chunk_size,
                             append=append, generate_codes=_code_modalities(generate_codes))
    except BaseException:
        # A store folder this call created and never completed a source in is removed whole, so a
        # refused input leaves nothing behind (a store that already existed keeps its last manifest).
        if created and _read_manifest_or_none(out) is None:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _code_modalities(generate_codes: bool | Iterable[str] | None) -> list[str]:
    """``generate_codes`` of :func:`prepare_store` (or a manifest's) as the sorted modality names whose
    features outside the vocabulary a store keeps: ``True`` every registered modality, ``False`` /
    ``None`` none; a manifest's ``true`` is read by :func:`_manifest_code_modalities` instead."""
    from cellweave import modalities

    if generate_codes is None or generate_codes is False:
        return []
    if generate_codes is True:
        return sorted(modalities.names())
    if isinstance(generate_codes, str):
        generate_codes = [generate_codes]
    names = sorted({str(m) for m in generate_codes})
    unknown = [m for m in names if m not in modalities.names()]
    if unknown:
        raise CellWeaveInputError(f"generate_codes: unknown modalities {unknown}; give True, False or names among "
                                  f"{', '.join(sorted(modalities.names()))}.")
    return names


def _manifest_code_modalities(manifest: dict[str, Any]) -> list[str]:
    """The modalities whose unknown features a store keeps, as its manifest records them: a list; ``true``
    (a store of the thirty-eighth session) kept gene keys only; missing or ``false``, none."""
    kept = manifest["vocabulary"].get("generate_codes", False)
    if kept is True:
        return ["rna"]
    return _code_modalities(kept or None)


class _FeatureCodes:
    """The ``generate_codes`` of :func:`prepare_cells` for a store: appends the keys the vocabulary
    lacks of the modalities ``kept`` (gene keys when a gene-keyed modality is listed), once;
    ``vocab`` is the grown one."""

    def __init__(self, vocab: Vocabulary, kept: list[str]) -> None:
        from cellweave import modalities

        self.vocab = vocab
        self.kept = set(kept)
        self.genes = any(not modalities.get(m, exact=True).key_prefix for m in kept)

    def __call__(self, keys: list[str]) -> Vocabulary:
        from cellweave import modalities

        def wanted(key: str) -> bool:
            spec = modalities.modality_of_key(key)
            return self.genes if spec is None else spec.name in self.kept

        self.vocab = self.vocab.extended(k for k in keys if wanted(k))
        return self.vocab


def _prepare_into(paths: list[Path | SomaReader], out: Path, *, vocab: Vocabulary, value_encoding: str,
                  chunk_size: int, append: bool, generate_codes: list[str]) -> dict[str, Any]:
    """The body of :func:`prepare_store` once the inputs are checked and ``out`` exists."""
    with _writer_lock(out):
        manifest = _read_manifest_or_none(out)
        if manifest is not None and not append:
            raise CellWeaveInputError(
                f"{out} already holds a token store ({len(manifest['sources'])} sources, {manifest['n_cells']:,} "
                "cells). Pass append=True (--append) to add files to it (this also finishes a killed prepare), "
                "or choose a new out folder."
            )
        if manifest is not None:
            _check_settings(manifest, vocab, value_encoding, out, fix="use a new out folder (--out), or the model the "
                            "store was built for (--model)")
            kept = _manifest_code_modalities(manifest)
            if kept != generate_codes:
                logger.warning("%s was prepared keeping the features outside the vocabulary of %s; the appended files "
                               "are stored the same way (asked: %s).", out, ", ".join(kept) or "no modality",
                               ", ".join(generate_codes) or "none")
                generate_codes = kept
        else:
            manifest = _new_manifest(vocab, value_encoding)
            manifest["vocabulary"]["generate_codes"] = list(generate_codes)
        _remove_leftovers(out, manifest)
        if not (out / VOCAB).is_file():  # pretraining from the store needs the vocabulary its tokens index
            vocab.save(out / VOCAB)
        codes = None
        if generate_codes:
            from cellweave.genes import Vocabulary

            codes = _FeatureCodes(Vocabulary.load(out / VOCAB), generate_codes)  # grown by earlier sources
        saved_keys = len(codes.vocab) if codes is not None else len(vocab)
        known = {s["sha256"]: s for s in manifest["sources"]}
        shards_dir = out / SHARDS
        shards_dir.mkdir(exist_ok=True)
        for path in paths:
            t0 = time.perf_counter()
            digest = path.identity() if isinstance(path, SomaReader) else _sha256_input(path)
            if digest in known:
                logger.info("%s: already in the store as source %r (same SHA-256); skipped",
                            path, known[digest]["name"])
                continue
            name = _source_name(path, manifest)
            record = _write_source(path, name, digest, shards_dir, vocab=vocab, value_encoding=value_encoding,
                                   chunk_size=chunk_size, generate_codes=codes)
            if codes is not None:
                if len(codes.vocab) > saved_keys:  # written (atomically) before the manifest lists the source
                    codes.vocab.save(out / VOCAB)
                    saved_keys = len(codes.vocab)
                manifest["vocabulary"]["generated_keys"] = len(codes.vocab) - len(vocab)
            manifest["sources"].append(record)
            manifest["n_cells"] = int(sum(s["n_cells"] for s in manifest["sources"]))
            manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            # Only now is the source part of the store: a kill before this line leaves shards the
            # next prepare removes.
            atomic_write_json(out / MANIFEST, manifest)
            known[digest] = record
            cov = "; ".join(f"{c['modality']}: {c['n_in_vocab']:,} of {c['n_features']:,} features in the vocabulary"
                            for c in record["coverage"])
            logger.info("%s: %d cells in %d shards (%s) in %.1f s", name, record["n_cells"], len(record["shards"]),
                        cov, time.perf_counter() - t0)
    logger.info("Token store %s: %d sources, %d cells", out, len(manifest["sources"]), manifest["n_cells"])
    return manifest


def _new_manifest(vocab: Vocabulary, value_encoding: str) -> dict[str, Any]:
    return {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "vocabulary": {"sha256": vocab.sha256, "n_keys": len(vocab), "gene_aliases": bool(vocab.gene_aliases)},
        "value_encoding": value_encoding,
        "cellweave_version": _package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "n_cells": 0,
        "sources": [],
    }


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cellweave")
    except PackageNotFoundError:
        return "unknown"


def _check_settings(manifest: dict, vocab: Vocabulary | None, value_encoding: str | None, where: Path, *,
                    fix: str) -> None:
    """Refuse a store whose tokens were made with another vocabulary or value encoding."""
    have_vocab = manifest["vocabulary"]
    problems = []
    if vocab is not None and have_vocab["sha256"] != vocab.sha256 and not _extends(vocab, have_vocab):
        problems.append(f"a vocabulary of {have_vocab['n_keys']:,} features (sha256 {have_vocab['sha256'][:12]}), "
                        f"not the given one of {len(vocab):,} (sha256 {vocab.sha256[:12]})")
    if value_encoding is not None and manifest["value_encoding"] != value_encoding:
        problems.append(f"value_encoding {manifest['value_encoding']!r}, not {value_encoding!r}")
    if problems:
        raise CellWeaveInputError(f"The token store {where} was built with {' and '.join(problems)}; its tokens "
                                  f"would mean something else. Fix: {fix}.")


def _extends(vocab: Vocabulary, have_vocab: dict[str, Any]) -> bool:
    """Whether ``vocab`` is a store's vocabulary grown past the one its manifest names (its first
    keys are those, and it holds at most the generated keys the manifest counts)."""
    from cellweave.genes import Vocabulary

    n = int(have_vocab["n_keys"])
    extra = int(have_vocab.get("generated_keys", 0))
    return (extra > 0 and n < len(vocab) <= n + extra
            and Vocabulary(vocab.keys[:n], gene_aliases=vocab.gene_aliases).sha256 == have_vocab["sha256"])


def _refuse_foreign_folder(out: Path) -> None:
    """A store is written only into a missing or empty folder, or one that holds a store."""
    if not out.is_dir():
        return
    ours = {MANIFEST, SHARDS, LOCK, VOCAB}
    foreign = [p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith((f".{MANIFEST}.", f".{VOCAB}."))]
    if foreign:
        raise CellWeaveInputError(
            f"{out} is a folder with other files (e.g. {sorted(foreign)[:3]}) and no token store; prepare writes "
            "only into a new or empty folder, or a store. Choose another out folder."
        )


@contextlib.contextmanager
def _writer_lock(out: Path) -> Iterator[None]:
    """One prepare per store at a time: the clean-up of a killed run's leftovers must not remove
    the shard another live prepare is writing."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one writer at a time is then the user's rule
        yield
        return
    with open(out / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CellWeaveInputError(
                f"Another prepare is writing to {out}. Wait for it to finish, or choose another out folder."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(out: Path, manifest: dict) -> list[Path]:
    """Delete temporaries and shards the manifest does not list (what a killed prepare left)."""
    removed = remove_stale_temporaries(out / MANIFEST) + remove_stale_temporaries(out / VOCAB)
    listed = {sh["name"] for s in manifest["sources"] for sh in s["shards"]}
    shards_dir = out / SHARDS
    if shards_dir.is_dir():
        for entry in sorted(shards_dir.iterdir()):
            if entry.name in listed:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    if removed:
        logger.warning("Removed %d leftovers of an interrupted prepare in %s: %s", len(removed), out,
                       ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed


def _sha256_input(path: Path) -> str:
    """SHA-256 of a file, or of the sorted (name, SHA-256) list of a folder's files (10x mtx)."""
    if path.is_file():
        return sha256_file(path)
    parts = [f"{p.relative_to(path).as_posix()}:{sha256_file(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def _source_name(path: Path | SomaReader, manifest: dict) -> str:
    """The file's stem, made unique among the store's sources (it is the corpus and dataset name)."""
    base = path.name.split(".")[0] if isinstance(path, Path) and path.is_file() else path.name
    taken = {s["name"] for s in manifest["sources"]}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _write_source(path: Path | SomaReader, name: str, digest: str, shards_dir: Path, *, vocab: Vocabulary,
                  value_encoding: str, chunk_size: int, generate_codes: _FeatureCodes | None = None) -> dict[str, Any]:
    """Write every shard of one input; return its manifest record (shards not yet listed anywhere)."""
    prefix = digest[:16]
    shards: list[dict[str, Any]] = []
    first: CellCorpus | None = None
    n_cells = 0
    read_mode = "soma" if isinstance(path, SomaReader) else "backed" if _is_h5ad(path) else "whole"
    for k, chunk in enumerate(_chunks(path, name, vocab, value_encoding, chunk_size, read_mode, generate_codes)):
        if first is None:
            first = chunk
        else:
            _check_same_columns(first, chunk, name, n_cells)
        shards.append(_write_shard(shards_dir, f"{prefix}-{k:05d}", chunk))
        n_cells += len(chunk)
    assert first is not None  # _chunks yields at least one chunk or raises
    return {
        "name": name,
        "path": path.uri if isinstance(path, SomaReader) else str(path.resolve()),
        "sha256": digest,
        "read": read_mode,
        "n_cells": n_cells,
        "modalities": first.modalities,
        "x_kind": {b.modality: b.x_kind for b in first.blocks},
        "n_columns": {b.modality: int(b.token_ids.size) for b in first.blocks},
        "coverage": first.coverage,
        "shards": shards,
        **({"soma": path.record()} if isinstance(path, SomaReader) else {}),
    }


def _is_h5ad(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(".h5ad")


def _chunks(path: Path | SomaReader, name: str, vocab: Vocabulary, value_encoding: str, chunk_size: int,
            read_mode: str, generate_codes: _FeatureCodes | None = None) -> Iterator[CellCorpus]:
    """Corpora of consecutive rows of ``path``, at most ``chunk_size`` cells each (more only when
    leading rows hold no value at all, which cost nothing to keep)."""
    if read_mode == "whole":
        from cellweave.io import read

        corpus = prepare_cells(read(path), vocab, dataset=name, value_encoding=value_encoding,
                               generate_codes=generate_codes)
        for start in range(0, len(corpus), chunk_size):
            yield corpus.subset(np.arange(start, min(start + chunk_size, len(corpus))))
        return
    if read_mode == "soma":
        assert isinstance(path, SomaReader)
        try:
            yield from _row_chunks(name, path.n_cells, path.var, path.obs_names, path.read_rows, {}, vocab,
                                   value_encoding, chunk_size, generate_codes)
        finally:
            path.close()
        return
    import anndata as ad

    backed = ad.read_h5ad(path, backed="r")
    try:
        n = backed.n_obs
        obs_names = backed.obs_names
        if n == 0:
            raise CellWeaveInputError(f"{path} holds no cells. Check the filtering that produced it.")
        dup = obs_names.duplicated()
        if dup.any():  # prepare_cells sees one chunk at a time, so it cannot find duplicates across chunks
            raise CellWeaveInputError(
                f"{name}: {int(dup.sum())} duplicate cell names (e.g. {list(obs_names[dup][:3])}); make them unique "
                "(adata.obs_names_make_unique()) and write the file again."
            )
        declared = backed.uns.get("x_kind") if backed.uns is not None else None
        uns = {"x_kind": declared} if isinstance(declared, str) else {}
        X = backed.X
        if getattr(X, "format", None) == "csc":
            logger.warning("%s: X is stored by column (CSC), which cannot be read by rows; reading it whole. Write "
                           "it as CSR (adata.X = adata.X.tocsr()) for bounded memory.", path)
            X = sp.csr_matrix(X.to_memory() if hasattr(X, "to_memory") else X)
        yield from _row_chunks(name, n, backed.var.copy(), lambda a, b: obs_names[a:b].copy(),
                               lambda a, b: _read_rows(X, a, b), uns, vocab, value_encoding, chunk_size,
                               generate_codes)
    finally:
        backed.file.close()


def _row_chunks(name: str, n: int, var: pd.DataFrame, read_names: Any, read_values: Any, uns: dict,
                vocab: Vocabulary, value_encoding: str, chunk_size: int,
                generate_codes: _FeatureCodes | None = None) -> Iterator[CellCorpus]:
    """Corpora of rows ``start:stop`` of a source read by rows (an ``.h5ad`` in backed mode, a
    SOMA experiment): ``read_names(start, stop)`` gives their cell names, ``read_values(start,
    stop)`` their values (CSR, columns as ``var``). Every chunk goes through :func:`prepare_cells`
    as an AnnData, and must hold the same kind of values as the first."""
    import anndata as ad

    from cellweave.genes import infer_organism

    organism = infer_organism(var.index, var.get("gene_id"))
    x_kind: str | None = None
    first_corpus: CellCorpus | None = None
    quiet = _QuietAfterFirst()
    start = 0
    with quiet.installed():
        while start < n:
            stop = min(start + chunk_size, n)
            Xc = read_values(start, stop)
            while Xc.nnz == 0 and stop < n:  # an all-empty chunk would be refused on its own
                stop = min(stop + chunk_size, n)
                Xc = read_values(start, stop)
            chunk = ad.AnnData(X=Xc, obs=pd.DataFrame(index=read_names(start, stop)), var=var, uns=uns)
            if Xc.nnz == 0 and first_corpus is not None:  # trailing empty cells
                corpus = _empty_like(chunk.obs_names, first_corpus, name)
            else:
                corpus = prepare_cells(chunk, vocab, organism=organism, dataset=name,
                                       value_encoding=value_encoding, generate_codes=generate_codes)
            kind = corpus.blocks[0].x_kind
            if x_kind is None:
                x_kind, first_corpus = kind, corpus
            elif kind != x_kind:
                raise CellWeaveInputError(
                    f"{name}: cells {start}-{stop - 1} look {kind!r} but the first cells look {x_kind!r}; a "
                    "source must hold one kind of values. Check it, or pass a larger chunk_size "
                    "(--chunk-size) if its chunks are too small to tell."
                )
            quiet.first_done = True
            yield corpus
            start = stop


def _read_rows(X: Any, start: int, stop: int) -> sp.csr_matrix:
    Xc = X[start:stop]
    if hasattr(Xc, "to_memory"):
        Xc = Xc.to_memory()
    return sp.csr_matrix(Xc)


def _empty_like(obs_names: pd.Index, ref: CellCorpus, name: str) -> CellCorpus:
    """A corpus of cells with no value, in the columns of ``ref`` (an AnnData source's RNA)."""
    n = len(obs_names)
    blocks = [ModalityBlock(b.modality, sp.csr_matrix((n, b.token_ids.size), dtype=np.float32), b.token_ids,
                            np.ones(n, dtype=bool), b.x_kind) for b in ref.blocks]
    obs = pd.DataFrame(index=obs_names.copy())
    obs["dataset"] = name
    for b in ref.blocks:
        if f"{b.modality}_library" in ref.obs:
            obs[f"{b.modality}_library"] = 0.0
    return CellCorpus(blocks, obs, ref.coverage, name)


class _QuietAfterFirst(logging.Filter):
    """Per-chunk coverage lines repeat the first chunk's: keep INFO of the first, warnings always."""

    first_done = False
    _loggers = ("cellweave.data._corpus", "cellweave.io._validate")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.first_done or record.levelno >= logging.WARNING

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        for name in self._loggers:
            logging.getLogger(name).addFilter(self)
        try:
            yield
        finally:
            for name in self._loggers:
                logging.getLogger(name).removeFilter(self)


def _check_same_columns(first: CellCorpus, chunk: CellCorpus, name: str, offset: int) -> None:
    """Every chunk of a source has the source's columns (they come from ``var``, shared by all rows)."""
    if [b.modality for b in first.blocks] != [b.modality for b in chunk.blocks] or any(
        not np.array_equal(a.token_ids, b.token_ids) for a, b in zip(first.blocks, chunk.blocks)
    ):
        raise CellWeaveInputError(  # cannot happen for one var table; guards against a reader that changes it
            f"{name}: cells from {offset} map to other features than the first cells; write the file again."
        )


def _write_shard(shards_dir: Path, name: str, corpus: CellCorpus) -> dict[str, Any]:
    """Write one shard into a temporary folder, then rename it into place; return its record."""
    tmp = shards_dir / f"{_TMP_PREFIX}{name}.{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    final = shards_dir / name
    if final.exists():  # not listed (leftovers were removed at start): a rerun of this very shard
        shutil.rmtree(final)
    tmp.mkdir()
    arrays: dict[str, np.ndarray] = {"obs_names": np.asarray(corpus.obs.index.astype(str), dtype=str)}
    for block in corpus.blocks:
        # Column order within a row is kept as prepare_cells left it (not sorted): the tokenizer's
        # random draws follow it, and a cell must give the same tokens from the store as from memory.
        X = sp.csr_matrix(block.values)
        m = block.modality
        arrays[f"{m}.data"] = np.ascontiguousarray(X.data, dtype=np.float32)
        arrays[f"{m}.indices"] = np.ascontiguousarray(X.indices, dtype=np.int32)
        arrays[f"{m}.indptr"] = np.ascontiguousarray(X.indptr, dtype=np.int64)
        arrays[f"{m}.token_ids"] = np.ascontiguousarray(block.token_ids, dtype=np.int64)
        arrays[f"{m}.present"] = np.ascontiguousarray(block.present, dtype=bool)
        if f"{m}_library" in corpus.obs:
            arrays[f"{m}.library"] = corpus.obs[f"{m}_library"].to_numpy(dtype=np.float64)
    files: dict[str, dict[str, Any]] = {}
    for key, arr in arrays.items():
        fname = f"{key}.npy"
        with open(tmp / fname, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        files[fname] = {"sha256": sha256_file(tmp / fname), "bytes": (tmp / fname).stat().st_size}
    os.rename(tmp, final)
    _fsync_dir(shards_dir)
    return {"name": name, "n_cells": len(corpus), "nnz": {b.modality: int(b.values.nnz) for b in corpus.blocks},
            "files": files}


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# Reading


def read_store_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the token store at ``path`` (see :func:`prepare_store`)."""
    path = Path(path).expanduser()
    manifest = _read_manifest_or_none(path)
    if manifest is None:
        raise CellWeaveInputError(
            f"{path} is not a token store (no {MANIFEST}). Make one with `cellweave prepare INPUT... --out {path}`."
        )
    return manifest


def _read_manifest_or_none(path: Path) -> dict[str, Any] | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CellWeaveInputError(f"{file} is not valid JSON ({err}); the store is damaged. Prepare it again "
                                  "into a new folder.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise CellWeaveInputError(f"{file} is not a cellweave token store manifest. Choose another folder.")
    if manifest.get("format_version") != STORE_FORMAT_VERSION:
        raise CellWeaveInputError(
            f"{path} is a token store of format version {manifest.get('format_version')}; this cellweave reads "
            f"version {STORE_FORMAT_VERSION}. Prepare it again with this version into a new folder."
        )
    return manifest


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a token store folder (holds a manifest written by :func:`prepare_store`)."""
    return (Path(path).expanduser() / MANIFEST).is_file()


def store_vocabulary(path: str | os.PathLike) -> Vocabulary:
    """The vocabulary a token store's tokens index (saved in the store by :func:`prepare_store`)."""
    path = Path(path).expanduser()
    manifest = read_store_manifest(path)
    file = path / VOCAB
    if not file.is_file():
        raise CellWeaveInputError(f"Token store {path} has no {VOCAB} (it was written by an older cellweave); "
                                  "prepare the files again into a new folder.")
    from cellweave.genes import Vocabulary

    vocab = Vocabulary.load(file)
    _check_settings(manifest, vocab, None, path, fix="prepare the files again into a new folder")
    return vocab


def open_store(
    path: str | os.PathLike,
    *,
    vocab: Vocabulary | None = None,
    value_encoding: str | None = None,
    verify: bool = False,
) -> list[StoreCorpus]:
    """The sources of a token store as corpora read from disk on demand, one per source, in manifest order.

    Parameters
    ----------
    path
        Store folder written by :func:`prepare_store` / ``cellweave prepare``.
    vocab, value_encoding
        When given, the store must have been built with them (a model's ``model.vocab`` and
        ``config.value_encoding``); otherwise a ``CellWeaveInputError`` names both settings.
    verify
        Check the SHA-256 of every shard file against the manifest (reads the whole store once);
        by default only their presence and sizes are checked.

    Returns
    -------
    One :class:`StoreCorpus` per source. Each reads like a :class:`~cellweave.data.CellCorpus`
    (``blocks``, ``obs``, ``coverage``, ``name``, ``len()``, ``subset(idx)``) and can be given to
    :class:`~cellweave.data.TokenDataset` as it is. Values stay on disk; in memory are, per
    modality, the row pointers (8 bytes per cell) and ``present`` (1 byte per cell).
    """
    path = Path(path).expanduser()
    manifest = read_store_manifest(path)
    _check_settings(manifest, vocab, value_encoding, path, fix="pass the model the store was built for, or prepare "
                    "the files again with this model into a new folder")
    corpora = []
    for source in manifest["sources"]:
        for shard in source["shards"]:
            folder = path / SHARDS / shard["name"]
            for fname, rec in shard["files"].items():
                file = folder / fname
                if not file.is_file() or file.stat().st_size != rec["bytes"] or (
                    verify and sha256_file(file) != rec["sha256"]
                ):
                    raise CellWeaveInputError(
                        f"Token store {path}: {file.relative_to(path)} is missing or differs from the manifest; the "
                        "store was changed after it was written. Prepare it again into a new folder."
                    )
        corpora.append(StoreCorpus._open(path, source, manifest["value_encoding"]))
    return corpora


class _OpenFiles:
    """A small per-process cache of read-only file descriptors (least recently used closed first),
    so a store of thousands of shards never holds more than ``limit`` files open."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._fds: OrderedDict[tuple[int, str], int] = OrderedDict()

    def fd(self, path: Path) -> int:
        key = (os.getpid(), str(path))  # a forked DataLoader worker opens its own
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            return fd
        fd = os.open(path, os.O_RDONLY)
        with contextlib.suppress(AttributeError, OSError):  # rows are read at random: no read-ahead
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        self._fds[key] = fd
        while len(self._fds) > self.limit:
            (pid, _), old = self._fds.popitem(last=False)
            if pid == os.getpid():
                with contextlib.suppress(OSError):
                    os.close(old)
        return fd


_OPEN_FILES = _OpenFiles()


class _Shard:
    """The arrays of one modality of one shard, read on demand.

    ``indptr`` (8 bytes per cell) is loaded; ``data`` and ``indices`` are read by positional reads
    (``os.pread``) of the rows asked for, never memory-mapped. A memory map of a store read at
    random made the resident memory of pretraining grow with the store (2.9 GB at 100k cells,
    12 GB at 1M, of which 1.2 GB were the process's own): every touched row mapped the page-cache
    folios and read-ahead around it. Positional reads leave those pages to the kernel's cache.
    Pickled (DataLoader workers started by spawn, DDP processes), it carries its folder only.
    """

    def __init__(self, folder: Path, modality: str) -> None:
        self.folder = folder
        self.modality = modality
        self._indptr: np.ndarray | None = None
        self._layout: dict[str, tuple[Path, np.dtype, int, int]] = {}

    @property
    def indptr(self) -> np.ndarray:
        if self._indptr is None:
            self._indptr = np.load(self.folder / f"{self.modality}.indptr.npy", allow_pickle=False)
        return self._indptr

    def _file(self, which: str) -> tuple[Path, np.dtype, int, int]:
        """(path, dtype, offset of the first value, number of values) of the ``which`` array."""
        rec = self._layout.get(which)
        if rec is None:
            path = self.folder / f"{self.modality}.{which}.npy"
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
                if fortran or len(shape) != 1 or dtype.hasobject:
                    raise CellWeaveInputError(f"{path} is not a flat array of values; prepare the store again.")
                rec = self._layout[which] = (path, dtype, fh.tell(), int(shape[0]))
        return rec

    def read(self, which: str, start: int, stop: int) -> np.ndarray:
        """Values ``start:stop`` of ``data`` or ``indices``."""
        path, dtype, offset, n = self._file(which)
        start, stop = max(0, int(start)), min(n, int(stop))
        if stop <= start:
            return np.zeros(0, dtype=dtype)
        if not hasattr(os, "pread"):  # Windows: no positional reads; a read per call
            return np.fromfile(path, dtype=dtype, count=stop - start, offset=offset + start * dtype.itemsize)
        nbytes = (stop - start) * dtype.itemsize
        fd = _OPEN_FILES.fd(path)
        buf = os.pread(fd, nbytes, offset + start * dtype.itemsize)
        while len(buf) < nbytes:  # a short read (signals, network file systems): read the rest
            more = os.pread(fd, nbytes - len(buf), offset + start * dtype.itemsize + len(buf))
            if not more:
                raise CellWeaveInputError(f"{path} ended early; the store was changed after it was written.")
            buf += more
        return np.frombuffer(buf, dtype=dtype)

    def rows(self, local: np.ndarray, n_columns: int) -> sp.csr_matrix:
        """The shard rows ``local`` (in that order) as a CSR matrix; adjacent rows are read together."""
        local = np.asarray(local, dtype=np.int64)
        indptr = self.indptr
        starts, stops = indptr[local], indptr[local + 1]
        lengths = stops - starts
        out_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        data = np.empty(int(out_ptr[-1]), dtype=np.float32)
        indices = np.empty(int(out_ptr[-1]), dtype=np.int32)
        order = np.argsort(starts, kind="stable")
        s, e = starts[order], stops[order]
        # A run is a stretch of rows stored back to back: one read for each.
        breaks = np.flatnonzero(s[1:] != e[:-1]) + 1
        for run in np.split(np.arange(order.size), breaks):
            if run.size == 0:
                continue
            lo, hi = int(s[run[0]]), int(e[run[-1]])
            if hi <= lo:
                continue
            vals, cols = self.read("data", lo, hi), self.read("indices", lo, hi)
            for j in order[run]:
                a, b = int(starts[j]) - lo, int(stops[j]) - lo
                data[out_ptr[j]:out_ptr[j + 1]] = vals[a:b]
                indices[out_ptr[j]:out_ptr[j + 1]] = cols[a:b]
        return sp.csr_matrix((data, indices, out_ptr), shape=(local.size, n_columns))

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "modality": self.modality}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"], state["modality"])


class StoreCSR:
    """Rows of one modality of a store source: a read-only CSR matrix read from disk.

    ``indptr`` is a real array (row pointers of these rows); ``indices`` and ``data`` are read
    through views that accept the ``[indptr[i]:indptr[i + 1]]`` slices of whole rows the
    tokenizer takes, fetching them from the shard that holds the row. Indexing rows
    (``X[idx]``, an integer array, a boolean mask or a slice) gives another ``StoreCSR`` without
    reading values; ``sum(axis=...)`` streams shard by shard; ``tocsr()`` reads the rows into a
    SciPy matrix (memory as the rows' values).
    """

    def __init__(self, shards: list[_Shard], n_columns: int, shard_rows: np.ndarray, base_indptr: np.ndarray,
                 rows: np.ndarray | None = None) -> None:
        self._shards = shards
        self._shard_rows = shard_rows  # (n_shards + 1,) first source row of each shard
        self._base_indptr = base_indptr  # (n_source_rows + 1,) row pointers over all shards of the source
        self._rows = rows  # source rows of this view, or None for all of them
        self._n_columns = int(n_columns)
        if rows is None:
            self.indptr = base_indptr
        else:
            lengths = base_indptr[rows + 1] - base_indptr[rows]
            self.indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.indices = _RowSlices(self, "indices", np.dtype(np.int32))
        self.data = _RowSlices(self, "data", np.dtype(np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.indptr) - 1, self._n_columns)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    dtype = np.dtype(np.float32)
    ndim = 2

    def __repr__(self) -> str:
        return f"<StoreCSR {self.shape[0]} x {self.shape[1]}, {self.nnz} stored values, {len(self._shards)} shards>"

    def _source_rows(self) -> np.ndarray:
        return np.arange(self.shape[0], dtype=np.int64) if self._rows is None else self._rows

    def __getitem__(self, key: Any) -> StoreCSR:
        if isinstance(key, tuple):
            if len(key) == 2 and isinstance(key[1], slice) and key[1] == slice(None):
                key = key[0]
            else:
                raise TypeError("StoreCSR selects rows only; read them with .tocsr() to select columns.")
        idx = np.arange(self.shape[0])[key]
        if np.ndim(idx) == 0:
            idx = np.atleast_1d(idx)
        rows = self._source_rows()[idx].astype(np.int64)
        return StoreCSR(self._shards, self._n_columns, self._shard_rows, self._base_indptr, rows)

    def _row_slice(self, which: str, i: int, lo: int, hi: int) -> np.ndarray:
        """Stored ``indices`` or ``data`` ``lo:hi`` (offsets within the row) of view row ``i``."""
        g = int(i) if self._rows is None else int(self._rows[i])
        k = int(np.searchsorted(self._shard_rows, g, side="right") - 1)
        shard = self._shards[k]
        base = int(shard.indptr[g - int(self._shard_rows[k])])
        return shard.read(which, base + lo, base + hi)

    def _groups(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(shard, positions in this view, local rows in the shard)`` for every shard the view uses."""
        rows = self._source_rows()
        k = np.searchsorted(self._shard_rows, rows, side="right") - 1
        order = np.argsort(k, kind="stable")
        ks = k[order]
        bounds = np.flatnonzero(np.diff(ks)) + 1
        for part in np.split(order, bounds):
            if part.size:
                kk = int(k[part[0]])
                yield kk, part, rows[part] - int(self._shard_rows[kk])

    def _shard_rows_csr(self, k: int, local: np.ndarray) -> sp.csr_matrix:
        return self._shards[k].rows(local, self._n_columns)

    def sum(self, axis: int | None = None) -> Any:
        """Sums like SciPy's: ``axis=0`` -> (1, n_columns), ``axis=1`` -> (n_rows, 1), ``None`` -> a float."""
        if axis is None:
            return float(self.sum(axis=1).sum())
        if axis in (1, -1):
            out = np.zeros((self.shape[0], 1), dtype=np.float64)
            for k, pos, local in self._groups():
                out[pos, 0] = np.asarray(self._shard_rows_csr(k, local).sum(axis=1), dtype=np.float64).ravel()
            return out
        if axis == 0:
            out = np.zeros((1, self._n_columns), dtype=np.float64)
            for k, _pos, local in self._groups():
                X = self._shard_rows_csr(k, local)
                out[0] += np.bincount(X.indices, weights=X.data, minlength=self._n_columns)
            return out
        raise ValueError(f"axis must be 0, 1 or None, not {axis!r}")

    def tocsr(self, copy: bool = False) -> sp.csr_matrix:
        """These rows as a SciPy CSR matrix in memory (float32)."""
        parts, positions = [], []
        for k, pos, local in self._groups():
            parts.append(self._shard_rows_csr(k, local))
            positions.append(pos)
        if not parts:
            return sp.csr_matrix(self.shape, dtype=np.float32)
        X = sp.vstack(parts, format="csr")
        order = np.concatenate(positions)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        X = X[inverse]
        return X.astype(np.float32, copy=False)

    def toarray(self) -> np.ndarray:
        return self.tocsr().toarray()

    def astype(self, dtype: Any, copy: bool = True) -> sp.csr_matrix:
        return self.tocsr().astype(dtype)


class _RowSlices:
    """``indices`` or ``data`` of a :class:`StoreCSR`, addressed by the view's ``indptr``."""

    def __init__(self, owner: StoreCSR, which: str, dtype: np.dtype) -> None:
        self._owner = owner
        self._which = which
        self.dtype = dtype

    def __len__(self) -> int:
        return self._owner.nnz

    @property
    def size(self) -> int:
        return self._owner.nnz

    @property
    def shape(self) -> tuple[int]:
        return (self._owner.nnz,)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"Store {self._which} are read by contiguous slices of rows (indptr[i]:indptr[i + 1]).")
        start, stop, _ = key.indices(len(self))
        if stop <= start:
            return np.zeros(0, dtype=self.dtype)
        indptr = self._owner.indptr
        i = int(np.searchsorted(indptr, start, side="right") - 1)
        parts = []
        while start < stop:
            row_end = int(indptr[i + 1])
            hi = min(stop, row_end)
            if hi > start:
                parts.append(self._owner._row_slice(self._which, i, start - int(indptr[i]), hi - int(indptr[i])))
            start = hi
            i += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


class StoreCorpus:
    """One source of a token store, read like a :class:`~cellweave.data.CellCorpus`.

    ``blocks`` hold :class:`StoreCSR` values, the source's column ``token_ids`` and ``present``;
    ``obs`` (cell names, ``dataset`` and ``{modality}_library`` columns) is read from the shards
    when first asked for. ``source`` is the source's manifest record.
    """

    def __init__(self, blocks: list[ModalityBlock], name: str, coverage: list[dict[str, Any]], source: dict[str, Any],
                 value_encoding: str, folders: list[Path], shard_rows: np.ndarray,
                 rows: np.ndarray | None = None) -> None:
        self.blocks = blocks
        self.value_encoding = value_encoding
        self.name = name
        self.coverage = coverage
        self.source = source
        self._folders = folders
        self._shard_rows = shard_rows
        self._rows = rows

    @classmethod
    def _open(cls, root: Path, source: dict[str, Any], value_encoding: str) -> StoreCorpus:
        folders = [root / SHARDS / sh["name"] for sh in source["shards"]]
        shard_rows = np.concatenate([[0], np.cumsum([sh["n_cells"] for sh in source["shards"]])]).astype(np.int64)
        blocks = []
        for m in source["modalities"]:
            shards, indptrs, present = [], [], []
            nnz_before = 0
            for folder in folders:
                sh = _Shard(folder, m)
                shards.append(sh)
                # Row pointers over the whole source: each shard's, shifted by the values before it.
                indptrs.append(np.asarray(sh.indptr[1:], dtype=np.int64) + nnz_before)
                nnz_before += int(sh.indptr[-1])
                present.append(np.load(folder / f"{m}.present.npy", allow_pickle=False))
            base_indptr = np.concatenate([np.zeros(1, dtype=np.int64), *indptrs])
            token_ids = np.load(folders[0] / f"{m}.token_ids.npy", allow_pickle=False)
            values = StoreCSR(shards, token_ids.size, shard_rows, base_indptr)
            blocks.append(ModalityBlock(m, values, token_ids, np.concatenate(present), source["x_kind"][m]))
        return cls(blocks, source["name"], source["coverage"], source, value_encoding, folders, shard_rows)

    def __len__(self) -> int:
        return int(self._shard_rows[-1]) if self._rows is None else int(self._rows.size)

    def __repr__(self) -> str:
        return f"<StoreCorpus {self.name!r}: {len(self)} cells, modalities {self.modalities}>"

    @property
    def modalities(self) -> list[str]:
        return [b.modality for b in self.blocks]

    def subset(self, idx: np.ndarray) -> StoreCorpus:
        """The corpus restricted to the cells at positions ``idx`` (no values are read)."""
        idx = np.asarray(idx)
        rows = (np.arange(len(self), dtype=np.int64) if self._rows is None else self._rows)[idx]
        blocks = [ModalityBlock(b.modality, b.values[idx], b.token_ids, b.present[idx], b.x_kind) for b in self.blocks]
        return StoreCorpus(blocks, self.name, self.coverage, self.source, self.value_encoding, self._folders,
                           self._shard_rows, np.atleast_1d(rows).astype(np.int64))

    def _per_cell(self, key: str) -> np.ndarray:
        arr = np.concatenate([np.load(f / f"{key}.npy", mmap_mode="r", allow_pickle=False) for f in self._folders])
        return arr if self._rows is None else arr[self._rows]

    @property
    def obs_names(self) -> pd.Index:
        return pd.Index(self._per_cell("obs_names").astype(object), dtype=object)

    @cached_property
    def obs(self) -> pd.DataFrame:
        """Cell names, ``dataset`` and, for counts, ``{modality}_library`` (read when first asked for)."""
        obs = pd.DataFrame(index=self.obs_names)
        obs["dataset"] = self.name
        for b in self.blocks:
            if (self._folders[0] / f"{b.modality}.library.npy").is_file():
                obs[f"{b.modality}_library"] = self._per_cell(f"{b.modality}.library")
        return obs

    def to_corpus(self) -> CellCorpus:
        """The cells in memory as a :class:`~cellweave.data.CellCorpus` (memory as their values)."""
        blocks = [ModalityBlock(b.modality, b.values.tocsr(), b.token_ids, np.asarray(b.present), b.x_kind)
                  for b in self.blocks]
        return CellCorpus(blocks, self.obs.copy(), self.coverage, self.name)

