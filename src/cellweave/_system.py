"""Facts about the running process recorded in model cards and reports."""

from __future__ import annotations

import logging
import os
import platform
import resource

logger = logging.getLogger(__name__)


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


def hardware() -> str:
    """The machine and torch's thread count, as model cards and benchmark summaries record them.

    A seeded run is bit-reproducible for one torch build, thread count and CPU kernel set; another
    thread count sums floating-point numbers in another order (differences of about 1e-7 in an adapted
    embedding), which can move a nearest neighbour or a novelty threshold, and so can another
    instruction set (torch and the BLAS pick AVX2 or AVX-512 kernels by CPU: the thirty-seventh
    session's re-run of a published panel with the same recorded versions and thread count differed by
    up to 1e-3 in the adaptations and the scVI baseline). To reproduce a recorded run exactly, set
    ``OMP_NUM_THREADS`` (or ``torch.set_num_threads``) to the count recorded here, on a CPU with the
    recorded kernels.
    """
    import torch

    try:
        kernels = f" ({torch.backends.cpu.get_cpu_capability()} kernels)"
    except (AttributeError, RuntimeError):  # older torch builds
        kernels = ""
    return f"{platform.machine()}{kernels}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"


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


def keep_torch_threads() -> None:
    """Start numba's thread pool once, now, and give torch back its thread count.

    numba's OpenMP threading layer, started by the first parallel numba function of a process
    (scanpy's sparse mean and variance in ``highly_variable_genes``, pynndescent's neighbour search),
    sets the process's OpenMP thread count to ``NUMBA_NUM_THREADS`` (by default every core), and
    torch's CPU build shares that OpenMP runtime. A run limited by ``OMP_NUM_THREADS=1`` or
    ``torch.set_num_threads`` therefore went on with every core after its first HVG selection (two
    pretraining runs meant to take one core each took two each). Starting the pool here and
    restoring torch's count keeps the limit for the rest of the process; numba's own parallel
    functions are held to the same count. Called at the start of the command line and of
    ``train.pretrain``, ``train.adapt`` and ``tl.embed`` (not on ``import cellweave``: numba costs
    a light import about 50 MB and more on its first, uncached load); calling it again is cheap.
    """
    try:
        import numba
    except ImportError:  # scanpy needs numba, but cellweave's core does not
        return
    import torch

    n = torch.get_num_threads()
    try:
        numba.get_num_threads()  # starts the threading layer
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except Exception as err:  # noqa: BLE001 - a threading layer numba cannot start must not stop cellweave
        logger.debug("numba's threading layer did not start (%s); torch keeps %d threads.", err, n)
    finally:
        torch.set_num_threads(n)
