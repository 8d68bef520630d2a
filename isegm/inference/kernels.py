"""Compiled CPU kernels (numba) for the per-click passes that PyTorch and NumPy can only do as
several full-resolution passes. Each replaces a straightforward form that stays in the code as
the reference (and as the path used without numba, or on CUDA); the tests compare the two.

- `deepest_pixel`: the evaluation click's deepest pixel of an error mask (rules 7-9), exact, from
  a bound instead of the whole distance transform.
- `blend_rows`: the second pass of a separable bilinear resize of a large one-channel map,
  written straight into a window of the output map (the predictor's pastes at 4K); optionally
  the sigmoid of it, and the written values thresholded in the same pass (`WindowMask`: the
  next click's previous mask, with its count and bbox, without reading the map again).
- `threshold_with_bbox`, `blend_threshold_xor`: a map thresholded with its count and bbox in
  one pass; the focus rule's coarse mask computed from the separable resize's rows (never
  written as floats), XOR the previous mask, with its count and bbox.
- `resize_image`, `roi_align_image`: the network's target crop and the refiner's image crop
  sampled from the uint8 image (a quarter of the float image's bytes).

Rows are processed in parallel as contiguous 1-D slices of C-contiguous arrays, which numba
vectorises (a 2-D strided window is several times slower). A row's pixel count is a reduction
inside its loop; its first and last columns are two scans of the written mask that stop at the
first hit (as min / max reductions in the loop they cost more than the threshold itself). What
makes a loop vectorise: float arithmetic only, NumPy's error model where it divides (Python's
checks each divisor), no call per element (the sigmoid's exp is a polynomial and an exponent
shift, `_exp2_int`), and on AVX-512 CPUs 512-bit vectors (`_prefer_512_bit_vectors`).
Tried and not kept: the first pass of the separable resize (0.4 ms gained at 4K, not worth a
kernel); image RoIAlign variants (planes per channel, two input rows per sweep: within the
host's noise, +-0.3 ms at 4K).

`ENABLED` is False when numba cannot be imported or `IGLR_NUMBA=0` is set; callers then take the
reference path. Kernels are compiled on first use (one to two seconds each) and cached beside
this file (`__pycache__`), or in numba's user-wide cache where that is not writable.
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

import numpy as np


def _prefer_512_bit_vectors() -> None:
    """On a CPU with AVX-512, let numba's LLVM use 512-bit vectors: its tuning for recent Intel
    cores prefers 256-bit ones (`prefer-256-bit`), which halves the throughput of the
    compute-bound loops (the paste's sigmoid: 3.0 -> 2.2 ms at 4K, measured). Done through
    numba's documented `NUMBA_CPU_FEATURES` (the host's features, that tuning turned off), and
    only when it is not set already: a user's setting wins."""
    if "NUMBA_CPU_FEATURES" in os.environ:
        return
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
    except (ImportError, RuntimeError):
        return
    if features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


try:
    if os.environ.get("IGLR_NUMBA", "1") == "0":
        raise ImportError("disabled by IGLR_NUMBA=0")
    _prefer_512_bit_vectors()
    import numba
    from llvmlite import ir as _llvm_ir
    from numba import prange
    from numba.core import types as _nb_types
    from numba.extending import intrinsic as _intrinsic
    ENABLED = True
    DISABLED_REASON = ""
except ImportError as error:  # the reference paths are complete without it
    numba = None
    prange = range
    ENABLED = False
    DISABLED_REASON = str(error)


def _njit(fn):
    """numba.njit(cache=True, nogil=True), or the plain function where numba is missing (the
    callers do not call it then)."""
    if numba is None:
        return fn
    return numba.njit(cache=True, nogil=True)(fn)


def _njit_vector_math(fn):
    """`_njit` for a loop of float arithmetic with a division: NumPy's error model (Python's
    checks every division for a zero divisor, a branch that stops the vectoriser) and fastmath."""
    if numba is None:
        return fn
    return numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")(fn)


# ------------------------------------------------------------------------------------------
# evaluation click: the deepest pixel of the padded error mask

@_njit
def _exact_sq_distance(vert, i, x, width, stop):
    """Squared distance of pixel (i, x) to the nearest 0 of the padded mask, given `vert`
    (each pixel's distance to the nearest 0 in its column, ring included): the minimum of
    vert[i, j]^2 + (x - j)^2 over j, scanned outward from x until (x - j)^2 alone reaches the
    best so far. Columns -1 and `width` are the ring. Returns as soon as the value is known to
    be at most `stop` (then only that is known: the result is <= stop)."""
    v = np.int64(vert[i, x])
    best = v * v
    k = 1
    while k * k < best and best > stop:
        kk = k * k
        j = x - k
        cand = kk if j < 0 else np.int64(vert[i, j]) * vert[i, j] + kk
        if cand < best:
            best = cand
        j = x + k
        cand = kk if j >= width else np.int64(vert[i, j]) * vert[i, j] + kk
        if cand < best:
            best = cand
        k += 1
    return best


@_njit
def _bucket_pass(bound, rowmax, lowest, slots, where, place):
    """One pass of the counting sort of the pixels whose bound is at least `lowest`: count them
    per bound value into `slots` (place=False), or write their flat indices into `where` at
    `slots` (the next free slot of each value, advanced; place=True)."""
    h, w = bound.shape
    for i in range(h):
        if rowmax[i] < lowest:
            continue
        for j in range(w):
            b = bound[i, j]
            if b >= lowest:
                if place:
                    where[slots[b]] = i * w + j
                slots[b] += 1


@_njit
def _deepest_pixel_kernel(mask, clicked, use_clicked):
    h, w = mask.shape
    # distance to the nearest 0 along the column, the ring above and below included
    vert = np.empty((h, w), np.int32)
    for j in range(w):
        vert[0, j] = 1 if mask[0, j] else 0
    for i in range(1, h):
        for j in range(w):
            vert[i, j] = vert[i - 1, j] + 1 if mask[i, j] else 0
    # upward pass: finish each row's vertical distance, then bound = min(vertical, horizontal
    # distance to a 0) >= the distance; 0 where not a candidate (outside the mask, clicked)
    run = np.zeros(w, np.int32)
    bound = np.empty((h, w), np.int32)
    rowmax = np.zeros(h, np.int32)
    left = np.empty(w, np.int32)
    top = 0
    ti = -1
    tj = -1
    for i in range(h - 1, -1, -1):
        r = 0
        for j in range(w):
            if mask[i, j]:
                run[j] += 1
                if run[j] < vert[i, j]:
                    vert[i, j] = run[j]
                r += 1
            else:
                run[j] = 0
                r = 0
            left[j] = r
        r = 0
        row_top = 0
        for j in range(w - 1, -1, -1):
            if mask[i, j]:
                r += 1
                b = min(min(left[j], r), vert[i, j])
                if use_clicked and clicked[i, j]:
                    b = 0
                bound[i, j] = b
                if b >= row_top:
                    row_top = b
                    if b >= top and b > 0:  # ties: the upper row, then the left pixel
                        top = b
                        ti = i
                        tj = j
            else:
                r = 0
                bound[i, j] = 0
        rowmax[i] = row_top
    if ti < 0:
        return 0, 0, 0
    # the exact distance at the pixel of the largest bound is a floor of the maximum: only
    # pixels whose bound reaches it can be maximal. Visit those by decreasing bound (a counting
    # sort) until the bound falls below the best distance found: that is the maximum.
    floor = _exact_sq_distance(vert, ti, tj, w, -1)
    lowest = int(np.sqrt(floor))  # bound^2 >= floor <=> bound >= ceil(sqrt(floor)) >= this
    count = np.zeros(top + 2, np.int64)
    _bucket_pass(bound, rowmax, lowest, count, count, False)
    start = np.zeros(top + 2, np.int64)  # slots of each bound value, largest first
    total = 0
    for b in range(top, lowest - 1, -1):
        start[b] = total
        total += count[b]
    where = np.empty(total, np.int64)
    _bucket_pass(bound, rowmax, lowest, start, where, True)
    best = floor
    for n in range(total):
        i, j = divmod(where[n], w)
        b = np.int64(bound[i, j])
        if b * b <= best:
            break
        d = _exact_sq_distance(vert, i, j, w, best)
        if d > best:
            best = d
    # the first pixel (row-major) of that distance: among those whose bound reaches it
    for i in range(h):
        if np.int64(rowmax[i]) * rowmax[i] < best:
            continue
        for j in range(w):
            b = np.int64(bound[i, j])
            if b * b >= best and _exact_sq_distance(vert, i, j, w, best - 1) == best:
                return best, i, j
    return best, ti, tj  # not reached: the pixel of `best` has a bound reaching it


_NO_CLICKS = np.zeros((1, 1), dtype=bool)


def deepest_pixel(mask: np.ndarray, clicked: Optional[np.ndarray] = None) -> Tuple[int, int, int]:
    """(squared distance, y, x) of the first row-major pixel of largest exact Euclidean distance
    to the nearest False pixel of `mask` padded with a one-pixel ring of False, pixels of
    `clicked` (same shape) excluded as candidates but still part of the mask; (0, 0, 0) when no
    candidate is left. Equals the full transform's answer (`clicker._deepest_pixel_reference`).

    How: each pixel's distance to a False pixel in its own column, then a bound (that and the
    distance along its row) no smaller than its true distance; the exact distance of the pixel
    with the largest bound is a floor of the maximum, and only pixels whose bound reaches that
    floor get their exact distance (an outward scan along the row). Two passes over the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if clicked is None:
        return tuple(int(v) for v in _deepest_pixel_kernel(mask, _NO_CLICKS, False))
    if clicked.shape != mask.shape:
        raise ValueError(f"deepest_pixel: clicked {clicked.shape} differs from mask {mask.shape}")
    return tuple(int(v) for v in _deepest_pixel_kernel(mask, np.asarray(clicked, dtype=bool),
                                                       True))


# ------------------------------------------------------------------------------------------
# predictor: full-resolution passes over one-channel maps, rows in parallel. Rows are taken
# as contiguous 1-D slices of C-contiguous 2-D arrays (`full[r][c0:c1]`), which numba
# vectorises; per-row counts and first / last columns are reductions inside the same loop.

def _njit_parallel(fn):
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


@_njit
def _blend_row(a, b, u, v, out):
    for j in range(out.shape[0]):
        out[j] = u * a[j] + v * b[j]


if numba is not None:
    @_intrinsic
    def _exp2_int(typingctx, n):
        """2 ** n for a float32 `n` holding an integer in [-126, 127], built as the exponent
        bits of a float32 (an integer shift the vectoriser keeps in vector registers)."""
        if n != _nb_types.float32:
            return None

        def codegen(context, builder, signature, args):
            i32 = _llvm_ir.IntType(32)
            bits = builder.add(builder.fptosi(args[0], i32), _llvm_ir.Constant(i32, 127))
            bits = builder.shl(bits, _llvm_ir.Constant(i32, 23))
            return builder.bitcast(bits, _llvm_ir.FloatType())

        return _nb_types.float32(n), codegen
else:
    def _exp2_int(n):
        return np.float32(2.0) ** n


@_njit_vector_math
def _blend_sigmoid_row(a, b, u, v, out):
    """out = sigmoid(u * a + v * b) in float32, within 2.4e-7 of PyTorch's sigmoid (1-2 ulp):
    exp(-x) = 2^n * exp(r), n = round(-x / ln 2), |r| <= ln(2) / 2 by a two-part ln 2, exp(r)
    by its degree-5 minimax polynomial (the Cephes expf coefficients); -x clamped to +-87, so
    that 2^n stays a normal float (sigmoid(-87) = 1.6e-38 is the smallest value written). All
    in one loop of float arithmetic, which numba vectorises (math.exp would be a scalar call)."""
    for j in range(out.shape[0]):
        z = -(u * a[j] + v * b[j])
        z = min(max(z, np.float32(-87.0)), np.float32(87.0))
        n = np.floor(z * np.float32(1.4426950408889634) + np.float32(0.5))
        r = z - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        e = (p * r * r + r + np.float32(1.0)) * _exp2_int(n)
        out[j] = np.float32(1.0) / (np.float32(1.0) + e)


@_njit
def _first_last(mask, count):
    """(first, last) nonzero index of a uint8 row with `count` nonzeros, (w, -1) when none: two
    scans that stop at the first hit (a min / max reduction inside the threshold loop costs
    more than the whole threshold)."""
    w = mask.shape[0]
    if count == 0:
        return np.int32(w), np.int32(-1)
    first = 0
    while mask[first] == 0:
        first += 1
    last = w - 1
    while mask[last] == 0:
        last -= 1
    return np.int32(first), np.int32(last)


@_njit
def _threshold_row(values, thresh, out):
    """out = values > thresh (uint8); (count, first, last) of it."""
    count = np.int32(0)
    for j in range(out.shape[0]):
        above = values[j] > thresh
        count += np.int32(above)
        out[j] = np.uint8(above)
    first, last = _first_last(out, count)
    return count, first, last


@_njit
def _blend_threshold_row(a, b, u, v, thresh, out):
    """out = (u * a + v * b) >= thresh (uint8), without keeping the blend; (count, first, last).
    `>=`: the focus rule's coarse threshold on probabilities (`transforms.COARSE_PROB_THRESH`)."""
    count = np.int32(0)
    for j in range(out.shape[0]):
        above = u * a[j] + v * b[j] >= thresh
        count += np.int32(above)
        out[j] = np.uint8(above)
    first, last = _first_last(out, count)
    return count, first, last


@_njit
def _xor_row(mask, out):
    for j in range(out.shape[0]):
        out[j] ^= mask[j]


@_njit_parallel
def _blend_rows_kernel(rows, col0, low, high, w_low, w_high, out, r0, c0, h, w):
    for i in prange(h):
        _blend_row(rows[low[i]][col0:col0 + w], rows[high[i]][col0:col0 + w], w_low[i],
                   w_high[i], out[r0 + i][c0:c0 + w])


@_njit_parallel
def _paste_rows_kernel(rows, col0, low, high, w_low, w_high, sigmoid, out, r0, c0, h, w,
                       thresh, mask, mr0, mc0, count, first, last):
    for i in prange(h):
        row = out[r0 + i][c0:c0 + w]
        a = rows[low[i]][col0:col0 + w]
        b = rows[high[i]][col0:col0 + w]
        if sigmoid:
            _blend_sigmoid_row(a, b, w_low[i], w_high[i], row)
        else:
            _blend_row(a, b, w_low[i], w_high[i], row)
        k = mr0 + i
        n, f, l = _threshold_row(row, thresh, mask[k][mc0:mc0 + w])  # the row, still in cache
        if n > 0:
            count[k] += n
            first[k] = min(first[k], f + mc0)
            last[k] = max(last[k], l + mc0)


@_njit_parallel
def _threshold_kernel(values, r0, c0, h, w, thresh, mask, count, first, last):
    for i in prange(h):
        count[i], first[i], last[i] = _threshold_row(values[r0 + i][c0:c0 + w], thresh, mask[i])


@_njit
def _blend_threshold_xor_row(rows, low, high, w_low, w_high, thresh, other, oy, ox, i, row):
    """Row i of the thresholded blend XOR `other` into `row`; (count, first, last) of the
    thresholded blend alone."""
    oh, ow = other.shape
    w = row.shape[0]
    count, first, last = _blend_threshold_row(rows[low[i]], rows[high[i]], w_low[i],
                                              w_high[i], thresh, row)
    k = i - oy
    if 0 <= k < oh:
        j0 = max(0, ox)
        j1 = min(w, ox + ow)
        if j1 > j0:
            _xor_row(other[k][j0 - ox:j1 - ox], row[j0:j1])
    return count, first, last


@_njit_parallel
def _blend_threshold_xor_kernel(rows, low, high, w_low, w_high, thresh, other, oy, ox, out,
                                count, first, last):
    for i in prange(out.shape[0]):
        count[i], first[i], last[i] = _blend_threshold_xor_row(
            rows, low, high, w_low, w_high, thresh, other, oy, ox, i, out[i])


@_njit_parallel
def _blend_threshold_xor_runs_kernel(rows, low, high, w_low, w_high, thresh, other, oy, ox,
                                     count, first, last, starts, ends, runs):
    h = len(low)
    w = rows.shape[1]
    chunks = min(h, 64)
    for c in prange(chunks):
        # one row buffer per chunk of rows, padded with zeros to whole uint64 words; the XOR
        # itself is not kept
        buffer = np.zeros((w + 7) // 8 * 8, np.uint8)
        words = buffer.view(np.uint64)
        for i in range(c * h // chunks, (c + 1) * h // chunks):
            count[i], first[i], last[i] = _blend_threshold_xor_row(
                rows, low, high, w_low, w_high, thresh, other, oy, ox, i, buffer[:w])
            runs[i] = _row_runs(buffer, words, starts[i], ends[i])


_ONES64 = np.uint64(0x0101010101010101)
_ZERO64 = np.uint64(0)  # (a uint64 compared with an int64 literal is converted to float64)


@_njit
def _row_runs(row, words, starts, ends):
    """The runs of non-zeros of a 0/1 uint8 row (its bytes `row`, and `words`, the same memory
    as uint64, zero past the row's end): first and last column of each, in order, into `starts`
    / `ends`; returns their number, or -1 when more than fit. A word of eight pixels that all
    continue the current run (or gap) is passed over by one comparison; pixel by pixel only in
    the words where the value changes."""
    cap = starts.shape[0]
    n = 0
    inside = False
    expected = _ZERO64  # the word that continues the current state: all 0, or all 1
    for q in range(words.shape[0]):
        if words[q] == expected:
            continue
        for j in range(8 * q, 8 * q + 8):
            if row[j] != 0:
                if not inside:
                    if n == cap:
                        return -1
                    starts[n] = j
                    inside = True
            elif inside:
                ends[n] = j - 1
                n += 1
                inside = False
        expected = _ONES64 if inside else _ZERO64
    if inside:
        ends[n] = 8 * words.shape[0] - 1
        n += 1
    return n


@_njit
def _component_of_runs(starts, ends, runs, y, x):
    """(pixel count, ymin, ymax, xmin, xmax) of the 8-connected component of non-zeros that
    holds (y, x), from each row's runs (a breadth-first search over runs: two runs on adjacent
    rows touch when their column spans overlap or meet diagonally); count 0 when (y, x) is 0."""
    h, cap = starts.shape
    first = -1
    for k in range(runs[y]):
        if starts[y, k] <= x <= ends[y, k]:
            first = k
            break
    if first < 0:
        return 0, 0, 0, 0, 0
    seen = np.zeros((h, cap), np.uint8)
    queue = np.empty(h * cap, np.int64)
    queue[0] = y * cap + first
    seen[y, first] = 1
    head, tail = 0, 1
    area = 0
    y1, y2, x1, x2 = y, y, starts[y, first], ends[y, first]
    while head < tail:
        i, k = divmod(queue[head], cap)
        head += 1
        s, e = starts[i, k], ends[i, k]
        area += e - s + 1
        y1, y2, x1, x2 = min(y1, i), max(y2, i), min(x1, s), max(x2, e)
        for n in (i - 1, i + 1):
            if n < 0 or n >= h:
                continue
            for m in range(runs[n]):
                if starts[n, m] > e + 1:
                    break  # runs are in order: the rest start further right
                if ends[n, m] >= s - 1 and seen[n, m] == 0:
                    seen[n, m] = 1
                    queue[tail] = n * cap + m
                    tail += 1
    return area, y1, y2, x1, x2


def _bbox(count: np.ndarray, first: np.ndarray, last: np.ndarray
          ) -> Tuple[int, Optional[Tuple[int, int, int, int]]]:
    rows = np.flatnonzero(count)
    if len(rows) == 0:
        return 0, None
    return int(count.sum()), (int(rows[0]), int(rows[-1]), int(first.min()), int(last.max()))


def _row_stats(h: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(h, np.int32), np.empty(h, np.int32), np.empty(h, np.int32)


def _check_c_2d(name: str, array: np.ndarray, dtype) -> None:
    if array.ndim != 2 or array.dtype != dtype or not array.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous 2-D {np.dtype(dtype).name} array, "
                         f"got {array.dtype} {array.shape} (C-contiguous: "
                         f"{array.flags.c_contiguous})")


def blend_rows(rows: np.ndarray, taps: Tuple[np.ndarray, ...], out: np.ndarray,
               window: Tuple[int, int, int, int], col0: int = 0, first_row: int = 0,
               sigmoid: bool = False, mask: Optional[WindowMask] = None) -> np.ndarray:
    """Write rows (first_row .. first_row + h) of a separable resize into `out[r0:r1, c0:c1]`
    (`window` half-open (r0, r1, c0, c1)): out row i = w_low * rows[low] + w_high * rows[high]
    over columns col0 .. col0 + (c1 - c0) of `rows`, taps = (low, high, w_low, w_high) of the
    whole output (`transforms._linear_taps`); with `sigmoid`, the sigmoid of that
    (`_blend_sigmoid_row`). rows: C-contiguous float32; out: float32 with contiguous rows
    (C-contiguous compiles the faster, vectorised form; a strided view of a larger map works
    too). `mask`: a `WindowMask` of `out` (C-contiguous) whose window contains this one, into
    which the written values are thresholded in the same pass."""
    _check_c_2d("blend_rows rows", rows, np.float32)
    if out.ndim != 2 or out.dtype != np.float32 or out.strides[1] != out.itemsize:
        raise ValueError(f"blend_rows out: expected a float32 2-D array with contiguous rows, "
                         f"got {out.dtype} {out.shape} strides {out.strides}")
    r0, r1, c0, c1 = window
    if r1 <= r0 or c1 <= c0:
        return out
    low, high, w_low, w_high = (t[first_row:first_row + r1 - r0] for t in taps)
    if mask is None and not sigmoid:
        _blend_rows_kernel(rows, col0, low, high, w_low, w_high, out, r0, c0, r1 - r0, c1 - c0)
        return out
    if mask is None:
        mask = WindowMask(window, np.inf)  # the sigmoid alone: a mask nobody reads
    m0, m1, m2, m3 = mask.window
    if not (m0 <= r0 and r1 <= m1 and m2 <= c0 and c1 <= m3):
        raise ValueError(f"blend_rows: window {window} outside the mask's window {mask.window}")
    _paste_rows_kernel(rows, col0, low, high, w_low, w_high, sigmoid, out, r0, c0, r1 - r0,
                       c1 - c0, mask.thresh, mask.mask, r0 - m0, c0 - m2, mask.count,
                       mask.first, mask.last)
    mask.covered += (r1 - r0) * (c1 - c0)
    return out


@_njit_parallel
def _resize_rows_kernel(src, low, high, w_low, w_high, out):
    for i in prange(src.shape[0]):
        row = src[i]
        o = out[i]
        for j in range(o.shape[0]):
            o[j] = w_low[j] * row[low[j]] + w_high[j] * row[high[j]]


def resize_rows(src: np.ndarray, taps: Tuple[np.ndarray, ...]) -> np.ndarray:
    """The first pass of a separable bilinear resize: each row of the C-contiguous float32
    `src` (h x w) resized to len(taps[0]) columns with the taps of `transforms._linear_taps`
    (w -> width); a new C-contiguous (h, width) array, ATen's align_corners=True kernel along
    the rows to float rounding (at 256 x 256 -> 256 x 3435: 0.5 instead of 0.9 ms)."""
    _check_c_2d("resize_rows src", src, np.float32)
    out = np.empty((src.shape[0], len(taps[0])), np.float32)
    _resize_rows_kernel(src, *taps, out)
    return out


class WindowMask:
    """`map[window] > thresh` of an output map, built piece by piece by `blend_rows(...,
    mask=...)` as the pieces are written (each row thresholded while it is still in cache):
    the uint8 mask, per-row counts and first / last columns. The pieces must tile the window
    (checked by area)."""

    def __init__(self, window: Tuple[int, int, int, int], thresh: float):
        r0, r1, c0, c1 = window
        h, w = r1 - r0, c1 - c0
        self.window = window
        self.thresh = np.float32(thresh)
        self.mask = np.empty((h, w), np.uint8)
        self.count = np.zeros(h, np.int32)
        self.first = np.full(h, w, np.int32)
        self.last = np.full(h, -1, np.int32)
        self.covered = 0

    def result(self) -> Tuple[np.ndarray, int, Optional[Tuple[int, int, int, int]]]:
        """(mask as bool, its pixel count, its inclusive bbox in the window or None), like
        `threshold_with_bbox` of the finished map."""
        if self.covered != self.mask.size:
            raise ValueError(f"WindowMask: the pieces written cover {self.covered} of the "
                             f"window's {self.mask.size} pixels")
        return (self.mask.view(bool),) + _bbox(self.count, self.first, self.last)


def threshold_with_bbox(values: np.ndarray, window: Tuple[int, int, int, int], thresh: float
                        ) -> Tuple[np.ndarray, int, Optional[Tuple[int, int, int, int]]]:
    """(values[r0:r1, c0:c1] > thresh as bool, its pixel count, its inclusive bbox (rmin, rmax,
    cmin, cmax) in the window, None when empty) of a C-contiguous float32 map, in one parallel
    pass: a threshold, `count_nonzero` and `get_bbox_from_mask` without the three passes."""
    _check_c_2d("threshold_with_bbox values", values, np.float32)
    r0, r1, c0, c1 = window
    h, w = r1 - r0, c1 - c0
    mask = np.empty((h, w), dtype=bool)
    count, first, last = _row_stats(h)
    _threshold_kernel(values, r0, c0, h, w, np.float32(thresh), mask.view(np.uint8), count,
                      first, last)
    return (mask,) + _bbox(count, first, last)


@_njit
def _zeros_of_runs(starts, ends, runs, w):
    """(count, ymin, ymax, xmin, xmax) of the zeros of an h x w mask given its rows' runs of
    non-zeros; count 0 when there are none."""
    count = 0
    y1, y2, x1, x2 = -1, -1, w, -1
    for i in range(runs.shape[0]):
        n = runs[i]
        ones = 0
        for k in range(n):
            ones += ends[i, k] - starts[i, k] + 1
        if ones == w:
            continue
        count += w - ones
        if y1 < 0:
            y1 = i
        y2 = i
        # the first zero: 0, or just after a run that starts the row; the last likewise
        x1 = min(x1, 0 if n == 0 or starts[i, 0] > 0 else ends[i, 0] + 1)
        x2 = max(x2, w - 1 if n == 0 or ends[i, n - 1] < w - 1 else starts[i, n - 1] - 1)
    return count, y1, y2, x1, x2


class RowRuns:
    """The runs of non-zeros of each row of a 0/1 mask (`blend_threshold_xor(..., runs=True)`),
    at most `cap` per row: enough to find a pixel's connected component without a flood fill
    (`component`), and the zeros' count and bbox without a pass over the mask (`zeros`)."""

    def __init__(self, h: int, w: int, cap: int = 64):
        self.shape = (h, w)
        self.starts = np.empty((h, cap), np.int32)
        self.ends = np.empty((h, cap), np.int32)
        self.counts = np.empty(h, np.int32)

    @property
    def complete(self) -> bool:
        """Whether every row's runs were kept (no row had more than `cap`)."""
        return bool((self.counts >= 0).all())

    def zeros(self) -> Tuple[int, Optional[Tuple[int, int, int, int]]]:
        """(count, inclusive bbox or None) of the mask's zero pixels (`complete` runs only)."""
        count, y1, y2, x1, x2 = _zeros_of_runs(self.starts, self.ends, self.counts,
                                                self.shape[1])
        return int(count), ((int(y1), int(y2), int(x1), int(x2)) if count else None)

    def component(self, y: int, x: int) -> Tuple[int, Tuple[int, int, int, int]]:
        """(pixel count, inclusive bbox (ymin, ymax, xmin, xmax)) of the 8-connected component
        holding pixel (y, x), as `cv2.floodFill` from it finds it; count 0 when the pixel is 0
        (`complete` runs only)."""
        area, y1, y2, x1, x2 = _component_of_runs(self.starts, self.ends, self.counts, y, x)
        return int(area), (int(y1), int(y2), int(x1), int(x2))


def blend_threshold_xor(rows: np.ndarray, taps: Tuple[np.ndarray, ...], thresh: float,
                        other: np.ndarray, other_at: Tuple[int, int], runs: bool = False):
    """The thresholded separable resize m = (w_low * rows[low] + w_high * rows[high]) >= thresh
    (an H x W mask, H = len(low), W = rows' width; the blend itself is not stored), XOR the bool
    mask `other` placed at `other_at` = (y, x) (clipped; 0 elsewhere); and m's pixel count and
    inclusive bbox (None when empty): (xor as uint8, count, bbox). The focus rule's coarse
    mask, its statistics and its difference with the previous mask in one pass.

    With `runs`, the XOR's `RowRuns` instead of the XOR itself (which the focus rule then needs
    only when a row has more runs than are kept): (function computing the XOR, count, bbox,
    runs) — a pass without the H x W write."""
    _check_c_2d("blend_threshold_xor rows", rows, np.float32)
    _check_c_2d("blend_threshold_xor other", other, np.bool_)
    low, high, w_low, w_high = taps
    h, w = len(low), rows.shape[1]
    count, first, last = _row_stats(h)
    args = (rows, low, high, w_low, w_high, np.float32(thresh), other.view(np.uint8),
            int(other_at[0]), int(other_at[1]))
    if not runs:
        out = np.empty((h, w), np.uint8)
        _blend_threshold_xor_kernel(*args, out, count, first, last)
        return (out,) + _bbox(count, first, last)
    row_runs = RowRuns(h, w)
    _blend_threshold_xor_runs_kernel(*args, count, first, last, row_runs.starts,
                                     row_runs.ends, row_runs.counts)

    def xor() -> np.ndarray:
        return blend_threshold_xor(rows, taps, thresh, other, other_at)[0]

    return (xor,) + _bbox(count, first, last) + (row_runs,)


# ------------------------------------------------------------------------------------------
# the target crop's network input: a bilinear resize of an image window, from the uint8 image

@_njit_parallel
def _resize_image_kernel(image, channels, r0, c0, y_low, y_high, y_wl, y_wh, x_low, x_high,
                         x_wl, x_wh, scale, out):
    oh = len(y_low)
    ow = len(x_low)
    for i in prange(oh):
        top = image[r0 + y_low[i]]
        bottom = image[r0 + y_high[i]]
        u = y_wl[i]
        v = y_wh[i]
        for j in range(ow):
            a = (c0 + x_low[j]) * channels
            b = (c0 + x_high[j]) * channels
            p = x_wl[j]
            q = x_wh[j]
            for ch in range(channels):
                out[ch, i, j] = (u * (p * np.float32(top[a + ch]) + q * np.float32(top[b + ch]))
                                 + v * (p * np.float32(bottom[a + ch])
                                        + q * np.float32(bottom[b + ch]))) * scale


# From this many window pixels the predictor resizes the target crop from the uint8 image
# (measured at 4K inside a click: ATen's kernel on the float image's strided 2160x3435 window
# 2.8 ms, its four taps per output scattered over 89 MB; this kernel reads two rows of the
# 22 MB uint8 image per output row).
RESIZE_IMAGE_MIN_PIXELS = 1 << 20


def resize_image(image: np.ndarray, window: Tuple[int, int, int, int], taps_y, taps_x,
                 scale: float = 1.0 / 255.0):
    """align_corners=True bilinear resize of image[r0:r1, c0:c1] * `scale` (uint8 H x W x C,
    C-contiguous; `window` half-open) to (len(taps_y[0]), len(taps_x[0])) with the taps of
    `transforms._linear_taps` (window size -> output size): a (1, C, h, w) float32 tensor,
    ATen's bilinear kernel on the float image to float rounding."""
    import torch
    if image.ndim != 3 or image.dtype != np.uint8 or not image.flags.c_contiguous:
        raise ValueError(f"resize_image: expected a C-contiguous HxWxC uint8 image, got "
                         f"{image.dtype} {image.shape}")
    h, w, c = image.shape
    r0, r1, c0, c1 = window
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        raise ValueError(f"resize_image: window {window} outside the {h}x{w} image")
    out = np.empty((c, len(taps_y[0]), len(taps_x[0])), np.float32)
    _resize_image_kernel(image.reshape(h, w * c), c, r0, c0, *taps_y, *taps_x,
                         np.float32(scale), out)
    return torch.from_numpy(out)[None]


# ------------------------------------------------------------------------------------------
# the refiner's image crop: roi_align of one box read from the uint8 HxWxC image

@_njit_parallel
def _roi_align_rows_kernel(image, channels, y_ptr, y_idx, y_val, x_ptr, x_idx, x_val, y0, x0,
                           ww, scale, out):
    ph = len(y_ptr) - 1
    pw = len(x_ptr) - 1
    span = ww * channels
    for py in prange(ph):
        # rows pass: the weighted sum of the box's input rows for this output row, all columns
        # of the window and channels at once (contiguous, vectorised)
        acc = np.zeros(span, np.float32)
        for k in range(y_ptr[py], y_ptr[py + 1]):
            row = image[y0 + y_idx[k]][x0 * channels:x0 * channels + span]
            v = y_val[k]
            for j in range(span):
                acc[j] += v * np.float32(row[j])
        # columns pass: a few taps per output, the channels of a tap together (an image's
        # three in registers)
        total = np.zeros(channels, np.float32)
        for px in range(pw):
            o = out[py, px]
            if channels == 3:
                t0 = np.float32(0)
                t1 = np.float32(0)
                t2 = np.float32(0)
                for k in range(x_ptr[px], x_ptr[px + 1]):
                    v = x_val[k]
                    base = x_idx[k] * 3
                    t0 += v * acc[base]
                    t1 += v * acc[base + 1]
                    t2 += v * acc[base + 2]
                o[0] = t0 * scale
                o[1] = t1 * scale
                o[2] = t2 * scale
                continue
            total[:] = 0
            for k in range(x_ptr[px], x_ptr[px + 1]):
                v = x_val[k]
                base = x_idx[k] * channels
                for ch in range(channels):
                    total[ch] += v * acc[base + ch]
            for ch in range(channels):
                o[ch] = total[ch] * scale


# From this many box pixels the predictor samples the image with `roi_align_image` (measured,
# 2 threads, 256x256 output from a 4K image, ms sparse passes -> this kernel: 400 px square 2.1
# -> 1.8, 1000 px 4.4 -> 2.8, 2160x3435 15.2 -> 6.6; below ~300 px the fixed cost of the taps
# makes it slower).
ROI_ALIGN_MIN_PIXELS = 1 << 18


def _roi_align_csr(size: Tuple[int, int], box, output_size, spatial_scale: float):
    """The row and column taps of `roi_align` for one box on a map of `size` (h, w), as CSR
    matrices over the window they read: (y CSR, x CSR, window (y0, x0, height, width))."""
    from ..model.ops import _axis_csr, box_taps
    iy, wy, ix, wx = box_taps(box, size, output_size, spatial_scale)
    y0, x0 = int(iy.min()), int(ix.min())
    wh, ww = int(iy.max()) - y0 + 1, int(ix.max()) - x0 + 1
    return _axis_csr(iy - y0, wy, wh), _axis_csr(ix - x0, wx, ww), (y0, x0, wh, ww)


def _roi_align_run(rows2d: np.ndarray, channels: int, y_csr, x_csr, y0: int, x0: int, ww: int,
                   scale: float):
    import torch
    out = np.empty((len(y_csr[0]) - 1, len(x_csr[0]) - 1, channels), np.float32)
    _roi_align_rows_kernel(rows2d, channels, *y_csr, *x_csr, y0, x0, ww, np.float32(scale), out)
    return torch.from_numpy(out).permute(2, 0, 1)[None]


def roi_align_image(image: np.ndarray, box, output_size, scale: float = 1.0 / 255.0):
    """`ops.roi_align_box` (aligned, adaptive sampling) of one box (x1, y1, x2, y2) on
    `image` * `scale`, read straight from the uint8 H x W x C image (no float or channels-first
    copy): a (1, C, out_h, out_w) float32 tensor in channels-last memory, equal to
    `roi_align_box(image as (1, C, H, W) float * scale, box, output_size)` to float rounding.
    Output rows in parallel: the box's input rows summed with their weights (the same taps,
    `ops.box_taps`, duplicates merged) over the window's columns and channels at once, then
    the column taps, channels innermost."""
    from ..model.ops import _pair
    if image.ndim != 3 or image.dtype != np.uint8 or not image.flags.c_contiguous:
        raise ValueError(f"roi_align_image: expected a C-contiguous HxWxC uint8 image, got "
                         f"{image.dtype} {image.shape}")
    h, w, c = image.shape
    y_csr, x_csr, (y0, x0, _, ww) = _roi_align_csr((h, w), box, _pair(output_size), 1.0)
    return _roi_align_run(image.reshape(h, w * c), c, y_csr, x_csr, y0, x0, ww, scale)


def roi_align_features(feature, box, output_size, spatial_scale: float = 1.0):
    """`ops.roi_align_box` of one box on a (1, C, H, W) float32 CPU tensor with the kernel of
    `roi_align_image`: only the window the box samples is copied to channels-last, and each
    output pixel is then a few FMAs over all C channels at once (the refiner's decoder-feature
    crop: 256 channels, 64x64, in about half the sparse passes' time)."""
    import torch
    from ..model.ops import _pair
    if feature.ndim != 4 or feature.shape[0] != 1 or feature.dtype != torch.float32:
        raise ValueError(f"roi_align_features: expected a (1, C, H, W) float32 tensor, got "
                         f"{feature.dtype} {tuple(feature.shape)}")
    _, c, h, w = feature.shape
    y_csr, x_csr, (y0, x0, wh, ww) = _roi_align_csr((h, w), box, _pair(output_size),
                                                   spatial_scale)
    window = feature[0, :, y0:y0 + wh, x0:x0 + ww].permute(1, 2, 0).contiguous().numpy()
    return _roi_align_run(window.reshape(wh, ww * c), c, y_csr, x_csr, 0, 0, ww, 1.0)
