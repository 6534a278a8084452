"""Facts about the running process recorded in model cards and reports."""

from __future__ import annotations

import platform
import resource


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 1024
