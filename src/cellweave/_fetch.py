"""Where cellweave finds data it does not ship: a local mirror, the user cache, or the pinned source.

Datasets (:mod:`cellweave.datasets`) and gene tables (:mod:`cellweave.genes`) that other projects
publish are never copied into this repository or its wheel. They are referenced (a URL pinned to a
commit or a release, with SHA-256) and resolved, in this order:

1. the **mirror**: ``$CELLWEAVE_DATA_DIR/<relative path>``, a folder laid out like the project's
   shared data folder (``NAME/NAME.h5ad``, ``resources/TABLE.tsv.gz``); read in place, never written;
2. the **cache**: ``$CELLWEAVE_CACHE_DIR/<relative path>``, default the platform's user cache
   (``~/.cache/cellweave`` on Linux, through pooch), where converted downloads are kept;
3. the **source**: the published files are downloaded with pooch (hashes checked), converted,
   and the result is written atomically into the cache.

Offline, with nothing in the mirror or the cache, :class:`~cellweave._exceptions.CellWeaveDataError`
names the item, its source URL and the variable to set. The same rules serve scanpy-style users
(``cellweave.datasets.load(name)``) and the command line (``cellweave datasets fetch NAME``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cellweave._exceptions import CellWeaveDataError
from cellweave._io_utils import atomic_path, sha256_file

logger = logging.getLogger(__name__)

#: Folder laid out like the shared data folder (``NAME/NAME.h5ad``, ``resources/...``); read only.
DATA_DIR_ENV = "CELLWEAVE_DATA_DIR"
#: Where downloads and their conversions are kept (default: the user cache).
CACHE_DIR_ENV = "CELLWEAVE_CACHE_DIR"


@dataclass(frozen=True)
class SourceFile:
    """One published file: where it is (pinned URL), its SHA-256 and the local name it gets.

    ``sha256`` is ``None`` only where the file's bytes were never seen here (no network when the
    entry was written); the URL is still pinned to a commit or a release, and the download logs
    the hash it got so it can be pinned. A ``url`` of the form ``debian:PACKAGE=VERSION`` names a
    Debian package, fetched with the system's ``apt-get download``; ``pypi:PACKAGE==VERSION`` names a
    wheel, fetched with ``pip download`` (the package managers' own clients, by name and version).
    """

    url: str
    sha256: str | None
    filename: str


def mirror_dir() -> Path | None:
    """The mirror folder (``$CELLWEAVE_DATA_DIR``), or None when unset.

    Raises
    ------
    CellWeaveDataError
        When the variable names something that is not a folder.
    """
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if not env:
        return None
    root = Path(env).expanduser()
    if not root.is_dir():
        raise CellWeaveDataError(
            f"{DATA_DIR_ENV}={env!r} is not a folder. Point it at a cellweave data mirror (a folder holding "
            f"NAME/NAME.h5ad and resources/), or unset it to use the cache ({cache_dir()}) and downloads."
        )
    return root


def cache_dir() -> Path:
    """The cache folder: ``$CELLWEAVE_CACHE_DIR`` or the platform's user cache for cellweave."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    try:
        import pooch

        return Path(pooch.os_cache("cellweave"))
    except ImportError:  # pooch is a dependency; this only guards odd installs
        return Path.home() / ".cache" / "cellweave"


def locate(relpath: str) -> Path | None:
    """The first existing copy of ``relpath`` in the mirror, then the cache; None when neither has it."""
    mirror = mirror_dir()
    for root in (mirror, cache_dir()):
        if root is not None and (root / relpath).is_file():
            return root / relpath
    return None


def where_searched(relpath: str) -> str:
    """Human-readable list of the places :func:`locate` looked in."""
    mirror = mirror_dir()
    places = [f"{mirror / relpath} (mirror)" if mirror else f"no mirror (${DATA_DIR_ENV} unset)"]
    places.append(f"{cache_dir() / relpath} (cache)")
    return ", ".join(places)


def check_sha256(path: Path, expected: str | None, what: str) -> str:
    """SHA-256 of ``path``; raises when it differs from ``expected`` (skipped when None)."""
    got = sha256_file(path)
    if expected is not None and got != expected:
        raise CellWeaveDataError(
            f"{what}: {path} has SHA-256 {got}, expected {expected}. The file is corrupt or another version; "
            "delete it and fetch again."
        )
    return got


def fetch_sources(key: str, files: Sequence[SourceFile], *, raw_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> dict[str, Path]:
    """Local paths of ``files`` (by ``filename``), hashes checked.

    With ``raw_dir`` the files are read from that folder (byte copies of the published files,
    e.g. for offline tests) and nothing is downloaded; otherwise pooch downloads them into
    ``cache/raw/<key>/`` (kept for the next conversion).

    Raises
    ------
    CellWeaveDataError
        A file is missing from ``raw_dir``, cannot be downloaded, or has the wrong hash.
    """
    out: dict[str, Path] = {}
    if raw_dir is not None:
        for f in files:
            p = Path(raw_dir) / f.filename
            if not p.is_file():
                raise CellWeaveDataError(f"{key}: {p} is missing; {raw_dir} must hold the published file {f.url}.")
            check_sha256(p, f.sha256, key)
            out[f.filename] = p
        return out
    try:
        import pooch
    except ImportError as err:  # pragma: no cover - pooch is a dependency
        raise CellWeaveDataError(f"{key}: downloading needs pooch (pip install pooch).") from err
    target = cache_dir() / "raw" / key
    for f in files:
        if f.url.startswith(("debian:", "pypi:")):
            out[f.filename] = _package_download(key, f, target)
            continue
        known = f"sha256:{f.sha256}" if f.sha256 else None
        try:
            path = pooch.retrieve(f.url, known_hash=known, fname=f.filename, path=target, progressbar=progress)
        except ValueError as err:  # pooch's hash mismatch
            raise CellWeaveDataError(f"{key}: {f.url} did not match its pinned SHA-256 ({err}).") from err
        except Exception as err:  # requests' connection errors, HTTP errors, timeouts
            reason = str(err).split("(Caused by")[0].strip()[:160]
            raise CellWeaveDataError(
                f"{key}: could not download {f.url} ({type(err).__name__}: {reason}). Without a network, set "
                f"{DATA_DIR_ENV} to a folder that holds the converted data (a cellweave data mirror)."
            ) from err
        if f.sha256 is None:
            logger.warning("%s: %s has no pinned SHA-256; downloaded file has %s", key, f.url, sha256_file(path))
        out[f.filename] = Path(path)
    return out


def _package_download(key: str, f: SourceFile, target: Path) -> Path:
    """A Debian package (``debian:NAME=VERSION``, through ``apt-get download``) or a PyPI wheel
    (``pypi:NAME==VERSION``, through ``pip download``), hash checked."""
    import sys

    path = target / f.filename
    kind, spec = f.url.split(":", 1)
    if kind == "debian":
        command, tool, hint = ["apt-get", "download", spec], "apt-get", "Run `apt-get update` first, or set"
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(target), spec]
        tool, hint = sys.executable, "Set"
    if not path.is_file():
        if shutil.which(tool) is None:
            raise CellWeaveDataError(
                f"{key}: the source is the {kind} package {spec}, and this system has no {tool}. Set "
                f"{DATA_DIR_ENV} to a cellweave data mirror, or copy the converted file into {cache_dir()}."
            )
        target.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(command, cwd=target, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0 or not path.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise CellWeaveDataError(
                f"{key}: `{' '.join(command[-4:] if kind == 'pypi' else command)}` failed ({last}). {hint} "
                f"{DATA_DIR_ENV} to a cellweave data mirror."
            )
    try:
        check_sha256(path, f.sha256, key)
    except CellWeaveDataError:
        path.unlink()
        raise
    return path


def obtain(relpath: str, *, what: str, sources: Sequence[SourceFile],
           build: Callable[[dict[str, Path], Path], None] | None, progress: bool = True) -> Path:
    """Path of ``relpath`` from the mirror or the cache, else downloaded and built into the cache.

    ``build(source_paths, out_path)`` converts the downloaded files into ``out_path``; it is written
    to a temporary name and renamed, so an interrupted conversion never leaves a file that a later
    call would take for complete.

    Raises
    ------
    CellWeaveDataError
        Not found locally and it cannot be built (no converter, or the download failed).
    """
    found = locate(relpath)
    if found is not None:
        return found
    urls = ", ".join(s.url for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
    if build is None or not sources:
        raise CellWeaveDataError(
            f"{what} was not found ({where_searched(relpath)}), and cellweave has no converter for its published "
            f"source ({urls or 'not recorded'}). Set {DATA_DIR_ENV} to a cellweave data mirror that holds {relpath}."
        )
    logger.info("%s: not in the mirror or the cache; downloading %s", what, urls)
    try:
        paths = fetch_sources(relpath.split("/")[0], sources, progress=progress)
    except CellWeaveDataError as err:
        raise CellWeaveDataError(
            f"{what} was not found ({where_searched(relpath)}) and could not be downloaded: {err}"
        ) from err
    out = cache_dir() / relpath
    with atomic_path(out) as tmp:
        build(paths, tmp)
    logger.info("%s: converted into %s", what, out)
    return out
