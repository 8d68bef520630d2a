"""RoIAlign (torchvision semantics, aligned, adaptive sampling), in one family:

- `roi_align(input, boxes, output_size, ...)`: K boxes as a tensor (training: the refiner's
  crops of a batch), average of bilinear samples on a regular grid per output bin, computed
  separably (columns, then rows) on a window around each box, with no Python loop over boxes.
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

import warnings
from typing import Sequence, Tuple

import numpy as np
import torch

from ..utils.jit import njit_parallel, prange
from .ops import Size, _pair, csr_matrix

def _taps(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, n_out: int,
          length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """1-D bilinear taps of roi_align along one axis, for K boxes.

    Returns indices (K, n_out, 2G) (long, within [0, length)) and weights (K, n_out, 2G) that
    already include the 1/grid averaging and zero weight for invalid samples, G = max grid.
    """
    k = start.shape[0]
    g_max = max(int(grid.max().item()) if k else 1, 1)
    dtype = start.dtype
    p = torch.arange(n_out, device=start.device, dtype=dtype).view(1, n_out, 1)
    i = torch.arange(g_max, device=start.device, dtype=dtype).view(1, 1, g_max)
    g = grid.clamp(min=1).to(dtype).view(k, 1, 1)
    b = bin_size.view(k, 1, 1)
    pos = start.view(k, 1, 1) + p * b + (i + 0.5) * b / g  # (K, n_out, G)
    valid = (i < grid.view(k, 1, 1)) & (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    at_end = low >= length - 1
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(pos), pos - low.to(dtype))
    scale = valid.to(dtype) / g
    idx = torch.stack((low, high), 3).view(k, n_out, 2 * g_max)
    wts = torch.stack(((1 - frac) * scale, frac * scale), 3).view(k, n_out, 2 * g_max)
    return idx, wts


def roi_align(input: torch.Tensor, boxes: torch.Tensor, output_size: Size,
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = True) -> torch.Tensor:
    """RoIAlign with torchvision semantics.

    input: (N, C, H, W); boxes: (K, 5) rows (batch_idx, x1, y1, x2, y2) in input pixel
    coordinates before `spatial_scale`. With `aligned`, 0.5 is subtracted from the scaled box
    corners (pixel-centre alignment); `sampling_ratio` <= 0 samples ceil(roi_size / output_size)
    points per bin and axis; samples outside [-1, size] count as zero, others are clamped
    bilinear. Returns (K, C, out_h, out_w) (channels-last memory layout).
    """
    if input.ndim != 4:
        raise ValueError(f"roi_align: input must be (N, C, H, W), got {tuple(input.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"roi_align: boxes must be (K, 5) (batch_idx, x1, y1, x2, y2), "
                         f"got {tuple(boxes.shape)}")
    ph, pw = _pair(output_size)
    n, c, h, w = input.shape
    k = boxes.shape[0]
    dtype = input.dtype if input.is_floating_point() else torch.float32
    boxes = boxes.to(device=input.device, dtype=dtype)
    if k == 0:
        return input.new_zeros(0, c, ph, pw)
    bidx = boxes[:, 0].long()
    offset = 0.5 if aligned else 0.0
    x1 = boxes[:, 1] * spatial_scale - offset
    y1 = boxes[:, 2] * spatial_scale - offset
    roi_w = boxes[:, 3] * spatial_scale - offset - x1
    roi_h = boxes[:, 4] * spatial_scale - offset - y1
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_w = roi_w / pw
    bin_h = roi_h / ph
    if sampling_ratio > 0:
        grid_w = torch.full((k,), sampling_ratio, device=input.device, dtype=torch.long)
        grid_h = grid_w
    else:
        grid_w = torch.ceil(roi_w / pw).long()
        grid_h = torch.ceil(roi_h / ph).long()
    ix, wx = _taps(x1, bin_w, grid_w, pw, w)  # (K, pw, Tx)
    iy, wy = _taps(y1, bin_h, grid_h, ph, h)  # (K, ph, Ty)

    # Window of rows / columns each box touches, padded to the largest window.
    x0 = ix.amin(dim=(1, 2))
    y0 = iy.amin(dim=(1, 2))
    ww = int((ix.amax(dim=(1, 2)) - x0).max().item()) + 1
    wh = int((iy.amax(dim=(1, 2)) - y0).max().item()) + 1
    cols = (x0.view(k, 1) + torch.arange(ww, device=input.device)).clamp_(max=w - 1)
    rows = (y0.view(k, 1) + torch.arange(wh, device=input.device)).clamp_(max=h - 1)
    ix = ix - x0.view(k, 1, 1)
    iy = iy - y0.view(k, 1, 1)
    # (K, wh, ww, C): channel-last so that gathers move whole channel vectors.
    window = input.to(dtype)[bidx.view(k, 1, 1), :, rows.view(k, wh, 1), cols.view(k, 1, ww)]

    # Pass 1: along x -> (K, wh, pw, C).
    tmp = window.new_zeros(k, wh, pw, c)
    for t in range(ix.shape[2]):
        index = ix[:, :, t].view(k, 1, pw, 1).expand(k, wh, pw, c)
        tmp.addcmul_(window.gather(2, index), wx[:, :, t].view(k, 1, pw, 1))
    # Pass 2: along y -> (K, ph, pw, C).
    out = window.new_zeros(k, ph, pw, c)
    for t in range(iy.shape[2]):
        index = iy[:, :, t].view(k, ph, 1, 1).expand(k, ph, pw, c)
        out.addcmul_(tmp.gather(1, index), wy[:, :, t].view(k, ph, 1, 1))
    return out.permute(0, 3, 1, 2)


def _taps_host(start: float, bin_size: float, grid: int, n_out: int,
               length: int) -> Tuple["np.ndarray", "np.ndarray"]:
    """`_taps` for one box, computed on the host in float32 (the same arithmetic, so the same
    samples): indices (n_out, 2G) int64 in [0, length) and weights (n_out, 2G) float32."""
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
