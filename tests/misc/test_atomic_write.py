"""The one atomic-write helper every writer goes through."""

from __future__ import annotations

import os
import stat

import pytest

from cellweave._io_utils import atomic_write_json, atomic_write_text, atomic_path


def test_result_has_ordinary_permissions(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "card.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]
