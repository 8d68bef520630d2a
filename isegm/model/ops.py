"""Click encoding and ROI sampling in core torch (no torchvision), vectorised over the batch.

- `click_maps(points, size, radius)`: positive / negative disk (or soft distance) maps.
- `points_to_crop(points, boxes, size)`: map clicks into crops taken with `roi_align`.
- `roi_align(input, boxes, output_size, ...)`: torchvision `roi_align` semantics, average of
  bilinear samples on a regular grid per output bin, computed separably (columns, then rows)
  on a window around each box, with no Python loop over boxes.
- `roi_align_box(input, box, output_size, ...)`: the same for one host-side box (inference):
  taps built on the host, only the sampled window is read, no device synchronisation.
"""
from __future__ import annotations

import warnings
from typing import Sequence, Tuple, Union

import numpy as np
import torch

Size = Union[int, Sequence[int]]


def _pair(size: Size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def valid_points(points: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) clicks -> (B, K) bool; a padding row has all of (y, x, order) negative."""
    return points.amax(dim=2) >= 0


def click_maps(points: torch.Tensor, size: Size, radius: float = 5.0,
               use_disks: bool = True) -> torch.Tensor:
    """Encode padded clicks as a positive and a negative map.

    points: (B, 2M, 3) float rows (y, x, order) in pixel coordinates of a `size` = (H, W) image;
    rows [0, M) positive, [M, 2M) negative; padding rows are (-1, -1, -1).
    Returns (B, 2, H, W) float: with `use_disks`, 1 inside the union of disks
    (y - cy)^2 + (x - cx)^2 <= radius^2, else 0; otherwise the soft map
    1 - tanh(2 d / radius) of the distance d to the nearest click (1 at a click, 0 far away and
    where there is no click).
    """
    if points.ndim != 3 or points.shape[2] < 2 or points.shape[1] % 2:
        raise ValueError(f"click_maps: points must be (B, 2M, 3), got {tuple(points.shape)}")
    h, w = _pair(size)
    b, k2, _ = points.shape
    m = k2 // 2
    dtype = points.dtype if points.is_floating_point() else torch.float32
    pts = points.to(dtype)
    valid = valid_points(pts)
    ys = torch.arange(h, device=pts.device, dtype=dtype)
    xs = torch.arange(w, device=pts.device, dtype=dtype)
    if m == 0:
        return pts.new_zeros(b, 2, h, w)
    dy2 = (ys.view(1, 1, h) - pts[:, :, 0:1]).square_()  # (B, 2M, H)
    dx2 = (xs.view(1, 1, w) - pts[:, :, 1:2]).square_()  # (B, 2M, W)
    big = torch.finfo(dtype).max / 4
    dy2 = dy2.masked_fill_(~valid.unsqueeze(2), big)
    d2 = dy2.view(b, 2, m, h, 1) + dx2.view(b, 2, m, 1, w)  # (B, 2, M, H, W)
    d2 = d2.amin(dim=2)
    if use_disks:
        return (d2 <= radius * radius).to(dtype)
    return 1 - torch.tanh(2 * torch.sqrt(d2.clamp_(max=1e12)) / max(float(radius), 1e-6))


def resize_coord(coord: float, start: float, length: int, new_length: int) -> float:
    """Where an align_corners=True bilinear resize of the `length` pixels from `start` to
    `new_length` pixels moves pixel coordinate `coord`: (coord - start) * (new_length - 1) /
    (length - 1) (the centre, (new_length - 1) / 2, for a one-pixel source)."""
    if length <= 1:
        return (new_length - 1) / 2.0
    return (coord - start) * (new_length - 1) / (length - 1)


def box_coord(coord: float, start: float, end: float, size: int) -> float:
    """Where a `roi_align(aligned=True)` crop of the half-open box [start, end) sampled at `size`
    moves pixel coordinate `coord`: (coord + 0.5 - start) * size / (end - start) - 0.5 (the
    scalar form of `points_to_crop`)."""
    return (coord + 0.5 - start) * size / max(end - start, 1e-6) - 0.5


def points_to_crop(points: torch.Tensor, boxes: torch.Tensor, size: Size) -> torch.Tensor:
    """Map clicks into crops of `size` = (S_h, S_w) sampled with `roi_align(aligned=True)`.

    points: (B, K, 3) pixel (y, x, order); boxes: (B, 4) (x1, y1, x2, y2) in the same pixel
    frame (pixel i covers [i, i+1)). A pixel centre u maps to (u + 0.5 - x1) * S / (x2 - x1) - 0.5.
    Padding rows stay (-1, -1, -1). Returns (B, K, 3).
    """
    sh, sw = _pair(size)
    boxes = boxes.to(points.dtype)
    x1, y1, x2, y2 = boxes.unbind(1)
    sy = sh / (y2 - y1).clamp(min=1e-6)
    sx = sw / (x2 - x1).clamp(min=1e-6)
    out = points.clone()
    out[:, :, 0] = (points[:, :, 0] + 0.5 - y1[:, None]) * sy[:, None] - 0.5
    out[:, :, 1] = (points[:, :, 1] + 0.5 - x1[:, None]) * sx[:, None] - 0.5
    return torch.where(valid_points(points).unsqueeze(2), out, torch.full_like(out, -1))


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


def csr_matrix(indptr: "np.ndarray", indices: "np.ndarray", values: "np.ndarray",
               shape: Tuple[int, int]) -> torch.Tensor:
    """A torch CSR matrix from NumPy arrays valid by construction (no invariant checks), with
    torch's "beta" warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices),
                                       torch.from_numpy(values), size=shape,
                                       check_invariants=False)


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
