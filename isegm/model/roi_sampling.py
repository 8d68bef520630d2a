"""RoIAlign (torchvision semantics, aligned, adaptive sampling), in one family:

- `roi_align(input, boxes, output_size, ...)`: K boxes as a tensor (training: the refiner's
  crops of a batch), average of bilinear samples on a regular grid per output bin:
  `torchvision.ops.roi_align` when torchvision imports, else per box two matrix products with
  interpolation matrices built on the device for all boxes at once (`axis_weights`), with no
  host synchronisation and no copy per sampling tap; the backward pass is the adjoint
  products (only the matrices are kept for it).
- `roi_align_box(input, box, output_size, ...)`: ONE box known on the host (the predictor's
  focus box): taps built on the host with the same float32 arithmetic (`box_taps`), only the
  sampled window is read, no device synchronisation; two (sparse) matrix products.
- `roi_align_image(image_u8, box, ...)`, `roi_align_features(feature, box, ...)`: the same
  taps applied by a compiled kernel (numba, `isegm.utils.jit`) to the uint8 HxWxC image (no
  float copy) or to a float feature map's window in channels-last order; the predictor's
  numba backend uses them for large boxes (`inference/backends.py`).

All equal `roi_align` to float rounding (tests/test_speed_equivalence.py).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..utils.jit import njit_parallel, prange
from .ops import Size, _pair, csr_matrix

# Boxes per step of `axis_weights`: its (boxes, n_out, length) temporaries stay under this many
# elements each (a 320x480 image cropped to 256x256 for 28 boxes: 3.4 M, four steps).
AXIS_CHUNK_ELEMENTS = 1 << 20


def axis_weights(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, n_out: int,
                 length: int) -> torch.Tensor:
    """The (K, n_out, length) interpolation matrix of roi_align along one axis, for K boxes
    (start, bin_size, grid: (K,) tensors; see `_axis_weights`), built on the device in steps
    of boxes that bound the temporaries, with no host synchronisation."""
    k = start.shape[0]
    step = max(1, AXIS_CHUNK_ELEMENTS // max(1, n_out * length))
    if k <= step:
        return _axis_weights(start, bin_size, grid, n_out, length)
    out = start.new_empty(k, n_out, length)
    for i in range(0, k, step):
        out[i:i + step] = _axis_weights(start[i:i + step], bin_size[i:i + step],
                                        grid[i:i + step], n_out, length)
    return out


def _axis_weights(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, n_out: int,
                  length: int) -> torch.Tensor:
    """The (K, n_out, length) interpolation matrix of roi_align along one axis, for K boxes,
    built without enumerating the samples (so with no bound on their number).

    Bin p of box k averages `grid[k]` samples s_i = c + (i + 0.5) d, i < grid, with
    c = start + p * bin_size and d = bin_size / grid; a sample outside [-1, length] counts as
    zero, the others are clamped bilinear. Unclamped, pixel j gets the tent max(0, 1 - |s - j|),
    the second difference over x = j-1, j, j+1 of the ramp max(0, s - x); so column j is
    P(j-1) - 2 P(j) + P(j+1), P(x) the sum of the ramps of the bin's samples, whose closed form
    needs only the number of samples at or below x. The clamp gives pixel 0 the share of the
    samples in [-1, 0) that the tent puts on pixel -1, and the last pixel the share of those in
    (length-1, length] put on pixel `length`. Entries beyond the samples' reach are set to 0
    (the difference cancels there only to rounding). grid <= 0 gives no samples (zeros).
    """
    k = start.shape[0]
    dtype, device = start.dtype, start.device
    g = grid.to(dtype).clamp(min=0).view(k, 1, 1)
    samples = g.clamp(min=1)
    b = bin_size.view(k, 1, 1)
    p = torch.arange(n_out, device=device, dtype=dtype).view(1, n_out, 1)
    c = start.view(k, 1, 1) + p * b  # (K, n_out, 1): where each bin starts
    d = b / samples
    c = torch.where(d < 0, c + samples * d, c)  # an inverted bin: the same samples, ascending
    d = d.abs()
    moving = d > 0
    step = torch.where(moving, d, torch.ones_like(d))

    def count(x: Union[torch.Tensor, float], inclusive: bool) -> torch.Tensor:
        """How many samples of each bin lie below x (at or below, `inclusive`)."""
        t = (x - c) / step - 0.5
        n = torch.floor(t) + 1 if inclusive else torch.ceil(t)
        static = ((c <= x) if inclusive else (c < x)).to(dtype) * g  # d == 0: all or none
        return torch.minimum(torch.where(moving, n, static).clamp(min=0), g)

    def offsets(n0: torch.Tensor, n1: torch.Tensor, origin: Union[torch.Tensor, float]
                ) -> torch.Tensor:
        """The sum of s_i - origin over the samples n0 <= i < n1."""
        return (n1 - n0) * (c - origin) + d * (n1 * n1 - n0 * n0) / 2

    x = torch.arange(-1, length + 1, device=device, dtype=dtype).view(1, 1, length + 2)
    ramps = offsets(count(x, inclusive=True), g, x)  # P(x), x = -1 .. length
    w = ramps[..., :-2] - 2 * ramps[..., 1:-1] + ramps[..., 2:]
    j = x[..., 1:-1]
    reach = (j > c + 0.5 * d - 1) & (j < c + (g - 0.5) * d + 1) & (g > 0)
    w = torch.where(reach, w, torch.zeros_like(w))
    w[..., :1] -= offsets(count(-1.0, False), count(0.0, False), 0.0)  # samples in [-1, 0)
    last = float(length - 1)
    w[..., -1:] += offsets(count(last, True), count(float(length), True), last)
    return w / samples


@functools.lru_cache(maxsize=1)
def torchvision_roi_align() -> Optional[Callable[..., torch.Tensor]]:
    """`torchvision.ops.roi_align` when torchvision imports and runs beside this torch, else
    None (imported on the first call, not at import time)."""
    try:
        from torchvision.ops import roi_align as tv_roi_align
        tv_roi_align(torch.zeros(1, 1, 2, 2), torch.zeros(1, 5), 1)
    except Exception:  # absent, or built for another torch (missing operators)
        return None
    return tv_roi_align


def roi_align(input: torch.Tensor, boxes: torch.Tensor, output_size: Size,
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = True) -> torch.Tensor:
    """RoIAlign with torchvision semantics.

    input: (N, C, H, W); boxes: (K, 5) rows (batch_idx, x1, y1, x2, y2), or (N, 4) rows
    (x1, y1, x2, y2), box n on input n (the training crops: no batch gather), in input pixel
    coordinates before `spatial_scale`. With `aligned`, 0.5 is subtracted from the scaled box
    corners (pixel-centre alignment); `sampling_ratio` <= 0 samples ceil(roi_size / output_size)
    points per bin and axis; samples outside [-1, size] count as zero, others are clamped
    bilinear. Returns (K, C, out_h, out_w) in the input's dtype.

    `torchvision.ops.roi_align` when it imports (`torchvision_roi_align`); otherwise the
    interpolation matrices of all boxes are built on the device (`axis_weights`, (K, out,
    size) per axis) and each crop is two matrix products over all its channels
    (`_SeparableCrops`): no host synchronisation, no copy per sampling tap, the intermediates
    of one crop at a time. Reduced-precision inputs are computed in float32 (as torchvision's
    autocast rule).
    """
    if input.ndim != 4:
        raise ValueError(f"roi_align: input must be (N, C, H, W), got {tuple(input.shape)}")
    n, c, h, w = input.shape
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5) or \
            (boxes.shape[1] == 4 and boxes.shape[0] != n):
        raise ValueError(f"roi_align: boxes must be (K, 5) (batch_idx, x1, y1, x2, y2) or "
                         f"({n}, 4) (x1, y1, x2, y2, one per input), got {tuple(boxes.shape)}")
    ph, pw = _pair(output_size)
    k = boxes.shape[0]
    out_dtype = input.dtype if input.is_floating_point() else torch.float32
    dtype = torch.promote_types(out_dtype, torch.float32)
    boxes = boxes.to(device=input.device, dtype=dtype)
    if k == 0:
        return input.new_zeros(0, c, ph, pw, dtype=out_dtype)
    tv_roi_align = torchvision_roi_align()
    if tv_roi_align is not None:
        if boxes.shape[1] == 4:
            boxes = torch.cat((torch.arange(k, device=boxes.device, dtype=dtype)[:, None],
                               boxes), dim=1)
        return tv_roi_align(input.to(dtype), boxes, (ph, pw), spatial_scale, sampling_ratio,
                            aligned).to(out_dtype)
    with torch.autocast(device_type=input.device.type, enabled=False):
        x = input.to(dtype)
        batch = boxes[:, 0].long() if boxes.shape[1] == 5 else None
        boxes = boxes[:, -4:]
        offset = 0.5 if aligned else 0.0
        x1 = boxes[:, 0] * spatial_scale - offset
        y1 = boxes[:, 1] * spatial_scale - offset
        roi_w = boxes[:, 2] * spatial_scale - offset - x1
        roi_h = boxes[:, 3] * spatial_scale - offset - y1
        if not aligned:
            roi_w = roi_w.clamp(min=1.0)
            roi_h = roi_h.clamp(min=1.0)
        if sampling_ratio > 0:
            grid_w = grid_h = torch.full((k,), sampling_ratio, device=x.device, dtype=dtype)
        else:
            grid_w, grid_h = torch.ceil(roi_w / pw), torch.ceil(roi_h / ph)
        wx = axis_weights(x1, roi_w / pw, grid_w, pw, w)  # (K, pw, W)
        wy = axis_weights(y1, roi_h / ph, grid_h, ph, h)  # (K, ph, H)
        return _SeparableCrops.apply(x, wy, wx, batch).to(out_dtype)


def _crops(x: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor,
           batch: Optional[torch.Tensor]) -> torch.Tensor:
    """(K, C, ph, pw) crops wy[k] @ x[batch[k]][c] @ wx[k]^T of x (N, C, H, W) (x[k] without
    `batch`), one crop at a time so that only one crop's intermediates exist; channels-last
    when x is."""
    k, c = wy.shape[0], x.shape[1]
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and c > 1
    out = torch.empty((k, c, wy.shape[1], wx.shape[1]), device=x.device, dtype=x.dtype,
                      memory_format=torch.channels_last if channels_last
                      else torch.contiguous_format)
    # the gather of an input for a box keeps its memory order (index_select would not)
    rows = x.permute(0, 2, 3, 1) if channels_last else x
    for i in range(k):
        if batch is None:
            xi = x[i]
        else:
            xi = rows.index_select(0, batch[i:i + 1])[0]
            xi = xi.permute(2, 0, 1) if channels_last else xi
        out[i] = _crop(xi, wy[i], wx[i])
    return out


class _SeparableCrops(torch.autograd.Function):
    """`_crops` with its adjoint as backward: grad_x[batch[k]] += wy[k]^T @ grad[k] @ wx[k].
    Only the small matrices are kept for backward, neither the input nor intermediates; the
    matrices (and so the boxes) get no gradient, as in torchvision."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor,
                batch: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(wy, wx, batch)
        ctx.input_shape = x.shape
        ctx.channels_last = x.is_contiguous(memory_format=torch.channels_last)
        return _crops(x, wy, wx, batch)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        wy, wx, batch = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty(ctx.input_shape, device=grad.device, dtype=grad.dtype,
                                 memory_format=torch.channels_last if ctx.channels_last
                                 else torch.contiguous_format)
            if batch is not None:  # several boxes may read one input, or none
                grad_x.zero_()
            for i in range(wy.shape[0]):
                gi = _crop(grad[i], wy[i].t(), wx[i].t())  # (C, H, W)
                if batch is None:
                    grad_x[i] = gi
                else:
                    grad_x.index_add_(0, batch[i:i + 1], gi[None])
        return grad_x, None, None, None


def _crop(x: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """wy @ x[c] @ wx^T for every channel of x (C, H, W): wy (ph, H), wx (pw, W) -> (C, ph, pw),
    two matrix products over all channels at once. A channels-last x (many channels: the
    decoder feature) is read as (H, W, C) rows, wx applied to each row (an (H, pw, W) copy of
    wx); otherwise as (C*H, W) rows, then the (C, H, pw) intermediate is transposed (a copy)."""
    c, h, w = x.shape
    ph, pw = wy.shape[0], wx.shape[0]
    if x.permute(1, 2, 0).is_contiguous() and pw * w < c * (w + pw):
        t = torch.matmul(wx, x.permute(1, 2, 0))  # (H, pw, C): along x, row by row
        return (wy @ t.reshape(h, pw * c)).view(ph, pw, c).permute(2, 0, 1)
    t = (x.contiguous().view(c * h, w) @ wx.t()).view(c, h, pw)  # along x
    return (wy @ t.transpose(0, 1).reshape(h, c * pw)).view(ph, c, pw).transpose(0, 1)


def _taps_host(start: float, bin_size: float, grid: int, n_out: int,
               length: int) -> Tuple["np.ndarray", "np.ndarray"]:
    """The bilinear taps of `roi_align` for one box along one axis, on the host in float32 (the
    same samples): indices (n_out, 2G) int64 in [0, length) and weights (n_out, 2G) float32,
    G the grid (the weights include the 1/G averaging and are 0 for samples outside the map)."""
    f32 = np.float32
    g = max(int(grid), 1)
    p = np.arange(n_out, dtype=f32).reshape(n_out, 1)
    i = np.arange(g, dtype=f32).reshape(1, g)
    b = f32(bin_size)
    pos = f32(start) + p * b + (i + f32(0.5)) * b / f32(g)  # (n_out, G)
    valid = (pos >= -1.0) & (pos <= length)
    pos = np.maximum(pos, f32(0))
    low = np.floor(pos).astype(np.int64)
    at_end = low >= length - 1
    low = np.where(at_end, length - 1, low)
    high = np.where(at_end, low, low + 1)
    frac = np.where(at_end, f32(0), pos - low.astype(f32)).astype(f32)
    scale = valid.astype(f32) / f32(g)
    idx = np.stack((low, high), 2).reshape(n_out, 2 * g)
    wts = np.stack(((f32(1) - frac) * scale, frac * scale), 2).reshape(n_out, 2 * g)
    return idx, wts


# Above this ratio of input length to output length the separable pass is a sparse (CSR)
# product: each output reads 2G of the L inputs, so the dense product wastes L / 2G of its work.
# Measured (2 threads, 3-channel 4K image, 256 outputs, ms dense -> sparse): 150 px box 3.2 -> 1.8,
# 300 px 5.4 -> 2.3, 600 px 10.1 -> 3.5, 1000 px 19.9 -> 6.2; equal within noise for the small
# logit and feature crops. So: sparse unless the input is much shorter than the output.
SPARSE_AXIS_RATIO = 0.5


def _axis_matrix(idx: "np.ndarray", wts: "np.ndarray", length: int) -> "np.ndarray":
    """Dense (n_out, length) float32 interpolation matrix from 1-D taps (duplicates summed)."""
    n_out, taps = idx.shape
    mat = np.zeros((n_out, length), dtype=np.float32)
    np.add.at(mat, (np.repeat(np.arange(n_out), taps), idx.ravel()), wts.ravel())
    return mat


def _axis_csr(idx: "np.ndarray", wts: "np.ndarray", length: int) -> "tuple[np.ndarray, ...]":
    """The same matrix as `_axis_matrix` in CSR form (indptr, indices, values), built from the
    taps directly (duplicate taps summed, columns sorted), never as a dense array."""
    n_out, taps = idx.shape
    rows = np.repeat(np.arange(n_out, dtype=np.int64), taps)
    key = rows * length + idx.ravel()
    order = np.argsort(key, kind="stable")
    key, vals = key[order], wts.ravel()[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    values = np.add.reduceat(vals, starts).astype(np.float32)
    unique = key[starts]
    indptr = np.searchsorted(unique // length, np.arange(n_out + 1), side="left")
    return indptr.astype(np.int64), (unique % length).astype(np.int64), values


def _apply_axis(idx: "np.ndarray", wts: "np.ndarray", length: int, x: torch.Tensor
                ) -> torch.Tensor:
    """The (n_out, length) interpolation matrix of the taps applied to the rows of x
    (length, F) -> (n_out, F): a dense product for small ratios, else a sparse (CSR) one."""
    if length <= SPARSE_AXIS_RATIO * idx.shape[0]:
        weights = torch.from_numpy(_axis_matrix(idx, wts, length))
        return weights.to(device=x.device, dtype=x.dtype, non_blocking=True) @ x
    weights = csr_matrix(*_axis_csr(idx, wts, length), (idx.shape[0], length))
    with warnings.catch_warnings():  # CSR support is flagged "beta" by torch
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(weights.to(device=x.device, dtype=x.dtype), x)




def roi_align_box(input: torch.Tensor, box: Sequence[float], output_size: Size,
                  spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = True,
                  batch_index: int = 0) -> torch.Tensor:
    """`roi_align` of ONE box known on the host (the predictor's focus box), without device
    synchronisation and reading only the window of the input that the box samples.

    input: (N, C, H, W); box: (x1, y1, x2, y2) Python numbers in input pixels before
    `spatial_scale`. The bilinear taps are built on the host in float32 with the arithmetic of
    `roi_align` and folded into two small interpolation matrices over the window (a view, never a
    copy of the full input); the separable passes are two matrix products (sparse when the box
    is much larger than the output). Returns (1, C, out_h, out_w) (channels-last memory layout),
    equal to `roi_align(input, [[batch_index, *box]], ...)` to float tolerance.
    """
    if input.ndim != 4:
        raise ValueError(f"roi_align_box: input must be (N, C, H, W), got {tuple(input.shape)}")
    _, c, h, w = input.shape
    ph, pw = _pair(output_size)
    iy, wy, ix, wx = box_taps(box, (h, w), output_size, spatial_scale, sampling_ratio, aligned)
    x0, y0 = int(ix.min()), int(iy.min())
    ww, wh = int(ix.max()) - x0 + 1, int(iy.max()) - y0 + 1
    dtype = input.dtype if input.is_floating_point() else torch.float32
    # (wh, ww, C) view of the window; contiguous rows when the input is channels-last
    window = input[batch_index, :, y0:y0 + wh, x0:x0 + ww].permute(1, 2, 0).to(dtype)
    rows = _apply_axis(iy - y0, wy, wh, window.reshape(wh, ww * c))  # (ph, ww*C)
    cols = rows.view(ph, ww, c).transpose(0, 1).reshape(ww, ph * c)
    out = _apply_axis(ix - x0, wx, ww, cols)  # (pw, ph*C)
    return out.view(pw, ph, c).permute(2, 1, 0).unsqueeze(0)


def box_taps(box: Sequence[float], size: Tuple[int, int], output_size: Size,
             spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = True
             ) -> Tuple["np.ndarray", "np.ndarray", "np.ndarray", "np.ndarray"]:
    """The bilinear taps of `roi_align` for one box (x1, y1, x2, y2) over an input of `size`
    (h, w): (row indices, row weights, column indices, column weights), each (out, 2G) from
    `_taps_host` (float32 host arithmetic, the same samples as `roi_align`)."""
    if len(box) != 4:
        raise ValueError(f"roi_align_box: box must be (x1, y1, x2, y2), got {box}")
    ph, pw = _pair(output_size)
    h, w = size
    f32 = np.float32
    scale = f32(spatial_scale)
    offset = f32(0.5 if aligned else 0.0)
    bx1, by1, bx2, by2 = (f32(v) for v in box)
    x1 = bx1 * scale - offset
    y1 = by1 * scale - offset
    roi_w = bx2 * scale - offset - x1
    roi_h = by2 * scale - offset - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, f32(1)), max(roi_h, f32(1))
    bin_w, bin_h = roi_w / f32(pw), roi_h / f32(ph)
    if sampling_ratio > 0:
        grid_w = grid_h = int(sampling_ratio)
    else:
        grid_w, grid_h = int(np.ceil(roi_w / f32(pw))), int(np.ceil(roi_h / f32(ph)))
    ix, wx = _taps_host(x1, bin_w, grid_w, pw, w)
    iy, wy = _taps_host(y1, bin_h, grid_h, ph, h)
    return iy, wy, ix, wx


# ------------------------------------------------------------------------------------------
# compiled: the taps applied to the uint8 image or to a feature window, output rows in parallel

@njit_parallel
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


def _roi_align_csr(size: Tuple[int, int], box, output_size, spatial_scale: float):
    """The row and column taps of `roi_align` for one box on a map of `size` (h, w), as CSR
    matrices over the window they read: (y CSR, x CSR, window (y0, x0, height, width))."""
    iy, wy, ix, wx = box_taps(box, size, output_size, spatial_scale)
    y0, x0 = int(iy.min()), int(ix.min())
    wh, ww = int(iy.max()) - y0 + 1, int(ix.max()) - x0 + 1
    return _axis_csr(iy - y0, wy, wh), _axis_csr(ix - x0, wx, ww), (y0, x0, wh, ww)


def _roi_align_run(rows2d: np.ndarray, channels: int, y_csr, x_csr, y0: int, x0: int, ww: int,
                   scale: float):
    out = np.empty((len(y_csr[0]) - 1, len(x_csr[0]) - 1, channels), np.float32)
    _roi_align_rows_kernel(rows2d, channels, *y_csr, *x_csr, y0, x0, ww, np.float32(scale), out)
    return torch.from_numpy(out).permute(2, 0, 1)[None]


def roi_align_image(image: np.ndarray, box, output_size, scale: float = 1.0 / 255.0):
    """`roi_align_box` (aligned, adaptive sampling) of one box (x1, y1, x2, y2) on
    `image` * `scale`, read straight from the uint8 H x W x C image (no float or channels-first
    copy): a (1, C, out_h, out_w) float32 tensor in channels-last memory, equal to
    `roi_align_box(image as (1, C, H, W) float * scale, box, output_size)` to float rounding.
    Output rows in parallel: the box's input rows summed with their weights (the same taps,
    `box_taps`, duplicates merged) over the window's columns and channels at once, then
    the column taps, channels innermost."""
    if image.ndim != 3 or image.dtype != np.uint8 or not image.flags.c_contiguous:
        raise ValueError(f"roi_align_image: expected a C-contiguous HxWxC uint8 image, got "
                         f"{image.dtype} {image.shape}")
    h, w, c = image.shape
    y_csr, x_csr, (y0, x0, _, ww) = _roi_align_csr((h, w), box, _pair(output_size), 1.0)
    return _roi_align_run(image.reshape(h, w * c), c, y_csr, x_csr, y0, x0, ww, scale)


def roi_align_features(feature, box, output_size, spatial_scale: float = 1.0):
    """`roi_align_box` of one box on a (1, C, H, W) float32 CPU tensor with the kernel of
    `roi_align_image`: only the window the box samples is copied to channels-last, and each
    output pixel is then a few FMAs over all C channels at once (the refiner's decoder-feature
    crop: 256 channels, 64x64, in about half the sparse passes' time)."""
    if feature.ndim != 4 or feature.shape[0] != 1 or feature.dtype != torch.float32:
        raise ValueError(f"roi_align_features: expected a (1, C, H, W) float32 tensor, got "
                         f"{feature.dtype} {tuple(feature.shape)}")
    _, c, h, w = feature.shape
    y_csr, x_csr, (y0, x0, wh, ww) = _roi_align_csr((h, w), box, _pair(output_size),
                                                   spatial_scale)
    window = feature[0, :, y0:y0 + wh, x0:x0 + ww].permute(1, 2, 0).contiguous().numpy()
    return _roi_align_run(window.reshape(wh, ww * c), c, y_csr, x_csr, 0, 0, ww, 1.0)
