"""Click encoding in core torch (no torchvision), vectorised over the batch.

- `click_maps(points, size, radius)`: positive / negative disk (or soft distance) maps.
- `points_to_crop(points, boxes, size)`: map clicks into crops taken with
  `roi_sampling.roi_align` (RoIAlign itself lives in `isegm.model.roi_sampling`).
- `csr_matrix(...)`: a torch CSR matrix from NumPy arrays (RoIAlign's and the resize's sparse
  interpolation products).
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


def csr_matrix(indptr: "np.ndarray", indices: "np.ndarray", values: "np.ndarray",
               shape: Tuple[int, int]) -> torch.Tensor:
    """A torch CSR matrix from NumPy arrays valid by construction (no invariant checks), with
    torch's "beta" warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices),
                                       torch.from_numpy(values), size=shape,
                                       check_invariants=False)

