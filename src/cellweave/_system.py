"""Facts about the running process recorded in model cards and reports."""

from __future__ import annotations

import platform
import resource


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    On Linux from ``VmHWM`` in ``/proc/self/status``: ``ru_maxrss`` survives fork and exec, so a
    process started from a large one would report its parent's peak. Elsewhere ``ru_maxrss``
    (KB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 1024


def available_memory_mb() -> float | None:
    """Memory the kernel could give this process now (``MemAvailable``), in MB; ``None`` off Linux."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
