"""Row runs of a 0/1 mask: each row's runs of non-zeros, enough to find a pixel's 8-connected
component without a flood fill and the zeros' count and bbox without a pass over the mask
(the connected-component step of the focus rule, `inference/focus.py`, on the masks that
`maps.blend_threshold_xor` writes as runs)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ...utils.jit import njit

_ONES64 = np.uint64(0x0101010101010101)
_ZERO64 = np.uint64(0)  # (a uint64 compared with an int64 literal is converted to float64)


@njit
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


@njit
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


@njit
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

