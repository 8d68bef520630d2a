"""Compiled full-resolution passes over one-channel maps (the predictor's numba backend,
`inference/backends.py`), rows in parallel:

- `resize_rows`, `blend_rows`: the two passes of a separable bilinear resize (align_corners),
  the second written straight into a window of the output map, optionally as the sigmoid of
  the blend, and thresholded in the same pass (`WindowMask`: the next click's previous mask,
  with its count and bbox, without reading the map again).
- `threshold_with_bbox`: a map thresholded with its count and bbox in one pass.
- `blend_threshold_xor`: the focus rule's coarse mask computed from the separable resize's rows
  (never written as floats), XOR the previous mask, with its count and bbox (and the XOR's
  row runs, `runs.RowRuns`).

Rows are taken as contiguous 1-D slices of C-contiguous 2-D arrays (`full[r][c0:c1]`), which
numba vectorises (a 2-D strided window is several times slower). A row's pixel count is a
reduction inside its loop; its first and last columns are two scans of the written mask that
stop at the first hit. What makes a loop vectorise: float arithmetic only, NumPy's error model
where it divides, no call per element (the sigmoid's exp is a polynomial and an exponent
shift, `_exp2_int`), and on AVX-512 CPUs 512-bit vectors (`utils.jit`). Tried and not kept:
a kernel for the first pass (0.4 ms gained at 4K).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ...utils.jit import njit, njit_parallel, njit_vector_math, numba, prange
from .runs import RowRuns, _row_runs

if numba is not None:
    from llvmlite import ir as _llvm_ir
    from numba.core import types as _nb_types
    from numba.extending import intrinsic as _intrinsic

@njit
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


@njit_vector_math
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


@njit
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


@njit
def _threshold_row(values, thresh, out):
    """out = values > thresh (uint8); (count, first, last) of it."""
    count = np.int32(0)
    for j in range(out.shape[0]):
        above = values[j] > thresh
        count += np.int32(above)
        out[j] = np.uint8(above)
    first, last = _first_last(out, count)
    return count, first, last


@njit
def _blend_threshold_row(a, b, u, v, thresh, out):
    """out = (u * a + v * b) >= thresh (uint8), without keeping the blend; (count, first, last).
    `>=`: the focus rule's coarse threshold on probabilities (`focus.COARSE_PROB_THRESH`)."""
    count = np.int32(0)
    for j in range(out.shape[0]):
        above = u * a[j] + v * b[j] >= thresh
        count += np.int32(above)
        out[j] = np.uint8(above)
    first, last = _first_last(out, count)
    return count, first, last


@njit
def _xor_row(mask, out):
    for j in range(out.shape[0]):
        out[j] ^= mask[j]


@njit_parallel
def _blend_rows_kernel(rows, col0, low, high, w_low, w_high, out, r0, c0, h, w):
    for i in prange(h):
        _blend_row(rows[low[i]][col0:col0 + w], rows[high[i]][col0:col0 + w], w_low[i],
                   w_high[i], out[r0 + i][c0:c0 + w])


@njit_parallel
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


@njit_parallel
def _threshold_kernel(values, r0, c0, h, w, thresh, mask, count, first, last):
    for i in prange(h):
        count[i], first[i], last[i] = _threshold_row(values[r0 + i][c0:c0 + w], thresh, mask[i])


@njit
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


@njit_parallel
def _blend_threshold_xor_kernel(rows, low, high, w_low, w_high, thresh, other, oy, ox, out,
                                count, first, last):
    for i in prange(out.shape[0]):
        count[i], first[i], last[i] = _blend_threshold_xor_row(
            rows, low, high, w_low, w_high, thresh, other, oy, ox, i, out[i])


@njit_parallel
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
    whole output (`resize.linear_taps`); with `sigmoid`, the sigmoid of that
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


@njit_parallel
def _resize_rows_kernel(src, low, high, w_low, w_high, out):
    for i in prange(src.shape[0]):
        row = src[i]
        o = out[i]
        for j in range(o.shape[0]):
            o[j] = w_low[j] * row[low[j]] + w_high[j] * row[high[j]]


def resize_rows(src: np.ndarray, taps: Tuple[np.ndarray, ...]) -> np.ndarray:
    """The first pass of a separable bilinear resize: each row of the C-contiguous float32
    `src` (h x w) resized to len(taps[0]) columns with the taps of `resize.linear_taps`
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

