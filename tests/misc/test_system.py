"""Process facts recorded in model cards."""

from __future__ import annotations

import subprocess
import sys


def test_peak_rss_is_the_child_own_not_its_parents() -> None:
    """A small child started from a process that holds ~600 MB reports its own peak (ru_maxrss
    would carry the parent's over fork and exec)."""
    code = (
        "import subprocess, sys\n"
        "big = bytearray(600 * 2**20)\n"
        "for i in range(0, len(big), 4096): big[i] = 1\n"
        "out = subprocess.run([sys.executable, '-c', 'from cellweave._system import peak_rss_mb; "
        "print(peak_rss_mb())'], capture_output=True, text=True, check=True).stdout\n"
        "print(out.strip())\n"
    )
    child_peak = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.strip())
    assert 5 < child_peak < 400, child_peak
