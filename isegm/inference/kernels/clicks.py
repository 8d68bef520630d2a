"""Compiled kernel of the evaluation click (rules 7-9): the deepest pixel of an error mask,
exact, from a bound instead of the whole distance transform (`clicker.py` uses it when
`isegm.utils.jit.ENABLED`; its reference there is the full transform)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ...utils.jit import njit

@njit
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


@njit
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


@njit
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
