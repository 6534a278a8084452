"""Atomic file writing: every file cellweave writes goes through here.

A crash or a full disk while writing leaves the previous file (or no file), never a half-written
one: we write to a temporary file in the same folder and ``os.replace`` it into place, which is
atomic on POSIX and Windows file systems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary file keeps the suffix of ``path`` so that writers which dispatch on the
    extension (h5py, anndata) behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    # The writer's process id is in the name, so a later write can tell a killed run's leftover
    # (its process is gone) from a temporary another live process is still writing.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates files readable by the owner only; give the result the permissions
        # an ordinary open() would have (0o666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` (``.NAME.PID.tmp``); on success it replaces ``path``.

    A folder is written whole or not at all: a writer killed midway leaves only its temporary,
    which the next write of ``path`` removes once its process is gone.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2:-len(".tmp")]
        if stale.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():  # written again (e.g. a resumed run repeating an epoch)
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of ``path`` that a killed writer left behind; return them.

    :func:`atomic_path` names its temporaries ``.NAME.PID.XXXX.tmpSUFFIX``; one whose process no
    longer exists can never be renamed into place. Temporaries of live processes (this one
    included) and files of any other name are left alone.
    """
    import re

    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    # mkstemp's random part is letters, digits and underscores: no dots, so names of other
    # targets ("a.123" beside "a") cannot match.
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp{re.escape(path.suffix)}$")
    for tmp in path.parent.iterdir():
        match = pattern.match(tmp.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def remove_stale_temporaries_in(folder: str | os.PathLike) -> list[Path]:
    """:func:`remove_stale_temporaries` for every file of ``folder`` (not recursive): what killed
    writers left there, whatever the file they were writing (checkpoints change names)."""
    import re

    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(r"^\.(.+)\.\d+\.[A-Za-z0-9_]+\.tmp[^/]*$")
    removed: list[Path] = []
    for name in {m.group(1) for p in folder.iterdir() if (m := pattern.match(p.name))}:
        removed += remove_stale_temporaries(folder / name)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def h5_safe(obj: Any) -> Any:
    """Make a record writable to .h5ad: drop ``None`` values and replace "/" in keys (HDF5
    would read it as a group separator)."""
    if isinstance(obj, dict):
        return {str(k).replace("/", "|"): h5_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [h5_safe(v) for v in obj if v is not None]
    return obj
