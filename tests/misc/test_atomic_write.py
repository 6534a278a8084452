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


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path) -> None:
    """SIGKILL inside atomic_path (no finally runs) leaves ``.NAME.PID.*.tmp``; the next write of
    the same file removes it, while a temporary of a live process and other files stay."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "model.safetensors"
    code = (
        "import sys, time\n"
        "from cellweave._io_utils import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".model.safetensors.")]
    assert len(stale) == 1 and f".{proc.pid}." in stale[0].name and not target.exists()
    # A temporary of a live process (this one) and an unrelated dotfile are kept.
    live = tmp_path / f".model.safetensors.{os.getpid()}.abc_1.tmp.safetensors"
    live.write_bytes(b"in progress")
    other = tmp_path / ".model.safetensors.notes"
    other.write_text("keep")
    time.sleep(0.01)
    atomic_write_text(target, "done")
    assert target.read_text() == "done"
    assert not stale[0].exists()
    assert live.exists() and other.exists()


def test_folder_cleanup_removes_dead_writers_temporaries_of_any_name(tmp_path) -> None:
    import subprocess
    import sys

    from cellweave._io_utils import remove_stale_temporaries_in

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".epoch002.ckpt.{dead}.k2j_x.tmp.ckpt"
    live = tmp_path / f".last.ckpt.{os.getpid()}.abc.tmp.ckpt"
    keep = tmp_path / "epoch003.ckpt"
    for p in (stale, live, keep):
        p.write_bytes(b"x")
    assert remove_stale_temporaries_in(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and keep.exists()


def test_no_writer_opens_its_output_for_writing_in_place() -> None:
    """Library code and benchmark scripts write results through the atomic helpers: a stopped run
    must not leave a half-written JSON where a finished one was (ten benchmark scripts did until the
    thirty-fourth session). Writing inside ``atomic_path``'s temporary path is the one allowed form."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    in_place = re.compile(r"""open\((?!tmp\b)[^)]*,\s*["']w[b]?["']""")
    offenders = []
    for path in sorted([*(root / "src" / "cellweave").rglob("*.py"), *(root / "benchmarks").glob("*.py")]):
        if path.name == "_io_utils.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if in_place.search(line):
                offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not offenders, "write through cellweave._io_utils (atomic_write_json / atomic_path):\n" + "\n".join(offenders)


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path) -> None:
    from cellweave._io_utils import atomic_dir

    target = tmp_path / "epoch002"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:  # a writer that fails midway
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "first"  # the old folder is intact
    dead = tmp_path / ".epoch002.999999999.tmp"  # left by a writer whose process is gone
    dead.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch002"]
    assert [p.name for p in target.iterdir()] == ["b.txt"]
