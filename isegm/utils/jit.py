"""numba, when present: whether the compiled CPU kernels can run, and their decorators.

`ENABLED` is False when numba cannot be imported or `IGLR_NUMBA=0` is set (then
`DISABLED_REASON` says why); code that has a compiled and a PyTorch form chooses between them
once (the predictor's backend, the clicker), from this flag. Kernels are compiled on first use
(one to two seconds each) and cached beside their module (`__pycache__`), or in numba's
user-wide cache where that is not writable.
"""
from __future__ import annotations

import functools
import os
from typing import Callable


def _prefer_512_bit_vectors() -> None:
    """On a CPU with AVX-512, let numba's LLVM use 512-bit vectors: its tuning for recent Intel
    cores prefers 256-bit ones (`prefer-256-bit`), which halves the throughput of the
    compute-bound loops (the paste's sigmoid: 3.0 -> 2.2 ms at 4K, measured). Done through
    numba's documented `NUMBA_CPU_FEATURES` (the host's features, that tuning turned off), and
    only when it is not set already: a user's setting wins. Must run before numba loads."""
    if "NUMBA_CPU_FEATURES" in os.environ:
        return
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
    except (ImportError, RuntimeError):
        return
    if features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


def _default_threading_layer() -> None:
    """numba's own `workqueue` threading layer for the parallel kernels, unless the user chose
    one (`NUMBA_THREADING_LAYER`). numba's default picks OpenMP when TBB is absent, and its
    pool's threads spin after every kernel beside PyTorch's own OpenMP pool: on this project's
    2-core VM under load, a GrabCut click of the CPU study's B0 took 1.94 s with the OpenMP
    layer and 0.28 s with `workqueue` (0.26 s with OMP_WAIT_POLICY=PASSIVE); see
    docs/speed.md. Must run before numba loads."""
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")


try:
    if os.environ.get("IGLR_NUMBA", "1") == "0":
        raise ImportError("disabled by IGLR_NUMBA=0")
    _prefer_512_bit_vectors()
    _default_threading_layer()
    import numba
    from numba import prange
    ENABLED = True
    DISABLED_REASON = ""
except ImportError as error:  # every compiled operation has a PyTorch / NumPy form
    numba = None
    prange = range
    ENABLED = False
    DISABLED_REASON = str(error)


def njit(fn: Callable) -> Callable:
    """numba.njit(cache=True, nogil=True), or the plain function where numba is missing (its
    callers do not call it then)."""
    if numba is None:
        return fn
    return numba.njit(cache=True, nogil=True)(fn)


def njit_vector_math(fn: Callable) -> Callable:
    """`njit` for a loop of float arithmetic with a division: NumPy's error model (Python's
    checks every division for a zero divisor, a branch that stops the vectoriser) and fastmath."""
    if numba is None:
        return fn
    return numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")(fn)


def njit_parallel(fn: Callable) -> Callable:
    """numba.njit(parallel=True, fastmath=True, ...) of a row-parallel kernel, called with as
    many threads as PyTorch uses (`torch.set_num_threads`, e.g. a benchmark's `--threads`)."""
    if numba is None:
        return fn
    kernel = numba.njit(cache=True, nogil=True, parallel=True, fastmath=True)(fn)

    @functools.wraps(fn)
    def call(*args):
        match_torch_threads()
        return kernel(*args)

    return call


def match_torch_threads() -> int:
    """Set numba's thread count to PyTorch's (at most numba's pool size); returns it."""
    import torch
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n
