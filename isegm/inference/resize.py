"""Bilinear resizes (align_corners=True) of the inference code, in PyTorch.

- `resize_bilinear(tensor, size, out=None)`: ATen's kernel, optionally written into a strided
  view (e.g. the window of a full-resolution output map); a large one-channel CPU map in two
  passes (rows, then a sparse product across them), which ATen writes at a fraction of the
  memory bandwidth.
- `linear_taps(n_in, n_out)`: the taps of that interpolation along one axis, with ATen's float32
  arithmetic, for the compiled kernels that apply them (`kernels.maps`, `kernels.image`).
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..model.ops import csr_matrix

# From this many output pixels a one-channel CPU map is resized in two passes (below): ATen's
# bilinear kernel writes a large one-channel map at a fraction of the memory bandwidth
# (measured, 2 threads, 256x256 -> 2160x3435 into a window of a 4K map: 10.9 ms; the two passes
# 7.1 ms with the sparse product, about half that with the compiled row blend of the numba
# backend; at 480x854 sizes (~0.1 MP) all are under 1 ms).
SEPARABLE_MIN_PIXELS = 1 << 20


def resize_bilinear(tensor: torch.Tensor, size: Tuple[int, int],
                    out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bilinear resize with align_corners=True of a (B, C, H, W) tensor (no-op on equal size).

    `out`: a (B, C, *size) tensor, possibly a strided view (e.g. the window of a full-resolution
    output map), written in place and returned; no intermediate result is allocated.
    """
    size = (int(size[0]), int(size[1]))
    if out is None:
        if tuple(tensor.shape[-2:]) == size:
            return tensor
        return F.interpolate(tensor, size=size, mode="bilinear", align_corners=True)
    if tuple(tensor.shape[-2:]) == size:
        return out.copy_(tensor)
    if (tensor.shape[:2] == (1, 1) and tensor.device.type == "cpu"
            and tensor.dtype == torch.float32 and out.dtype == torch.float32
            and size[0] * size[1] >= SEPARABLE_MIN_PIXELS and size[0] > 1):
        return _resize_one_map_separable(tensor, size, out)
    return torch.ops.aten.upsample_bilinear2d.out(tensor, list(size), True, None, None, out=out)


@functools.lru_cache(maxsize=32)
def linear_taps(n_in: int, n_out: int) -> Tuple[np.ndarray, ...]:
    """(low, high, weight of low, weight of high) per output index of align_corners=True linear
    interpolation along one axis, with ATen's float32 arithmetic (src = i * (n_in - 1) /
    (n_out - 1)); the two taps are equal only on the last input index (weight 0 on high)."""
    f32 = np.float32
    scale = f32((n_in - 1) / (n_out - 1)) if n_out > 1 else f32(0)  # one output: the first
    src = np.arange(n_out, dtype=f32) * scale
    low = np.minimum(src.astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = (src - low.astype(f32)).astype(f32)
    return low, high, (f32(1) - frac).astype(f32), frac


@functools.lru_cache(maxsize=8)
def _rows_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) CSR matrix of `linear_taps` (two taps per row; a CSR row may repeat a
    column, as the last one does)."""
    low, high, w_low, w_high = linear_taps(n_in, n_out)
    indices = np.stack((low, high), 1).reshape(-1)
    values = np.stack((w_low, w_high), 1).reshape(-1)
    indptr = np.arange(0, 2 * n_out + 1, 2, dtype=np.int64)
    return csr_matrix(indptr, indices, values, (n_out, n_in))


def _resize_one_map_separable(tensor: torch.Tensor, size: Tuple[int, int],
                              out: torch.Tensor) -> torch.Tensor:
    """`resize_bilinear` of a (1, 1, h, w) float32 CPU map into `out` as two passes: along the
    rows (h x W, small), then across them as a sparse product straight into `out` (a
    bandwidth-bound pass). Equal to ATen's kernel to float rounding."""
    h = tensor.shape[-2]
    rows = F.interpolate(tensor, size=(h, size[1]), mode="bilinear", align_corners=True)
    if h == 1:
        return out.copy_(rows.expand_as(out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.mm(_rows_matrix(h, size[0]), rows[0, 0], out=out[0, 0])
    return out
