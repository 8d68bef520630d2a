"""Crops used at inference (evaluation-protocol.md §4-5).

- `ZoomIn`: RITM's stateful zoom-in (rule 28, `--eval-mode=cvpr`; rule 29, `fixed<S>`).
- `target_crop_roi`: the FocalClick/IGLR target crop (rules 31-32), recomputed at every click.
- `focus_crop`: the IGLR/FocalClick focus region for the refiner (rule 35), with the named
  strategies of `FOCUS_STRATEGIES` ('diff' is the released behaviour).

ROIs named `roi` are inclusive (rmin, rmax, cmin, cmax) like RITM's; focus boxes are half-open
(y1, y2, x1, x2).
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..model.ops import csr_matrix, resize_coord
from . import kernels
from .clicker import Click
from .utils import get_bbox_from_mask

Roi = Tuple[int, int, int, int]
FOCUS_STRATEGIES = ("diff", "click_square", "whole_object")


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


# From this many output pixels a one-channel CPU map is resized in two passes (below): ATen's
# bilinear kernel writes a large one-channel map at a fraction of the memory bandwidth
# (measured, 2 threads, 256x256 -> 2160x3435 into a window of a 4K map: 10.9 ms; the two passes
# 7.1 ms with the sparse product, about half that with the compiled row blend; at 480x854 sizes
# (~0.1 MP) all are under 1 ms).
SEPARABLE_MIN_PIXELS = 1 << 20


@functools.lru_cache(maxsize=32)
def _linear_taps(n_in: int, n_out: int) -> Tuple[np.ndarray, ...]:
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
    """(n_out, n_in) CSR matrix of `_linear_taps` (two taps per row; a CSR row may repeat a
    column, as the last one does)."""
    low, high, w_low, w_high = _linear_taps(n_in, n_out)
    indices = np.stack((low, high), 1).reshape(-1)
    values = np.stack((w_low, w_high), 1).reshape(-1)
    indptr = np.arange(0, 2 * n_out + 1, 2, dtype=np.int64)
    return csr_matrix(indptr, indices, values, (n_out, n_in))


def _resize_one_map_separable(tensor: torch.Tensor, size: Tuple[int, int],
                              out: torch.Tensor) -> torch.Tensor:
    """`resize_bilinear` of a (1, 1, h, w) float32 CPU map into `out` as two passes: along the
    rows (h x W, small; `resize_rows`), then across them straight into `out` (a bandwidth-bound
    pass): the compiled row blend (`kernels.blend_rows`), or without numba a sparse product.
    Equal to ATen's kernel to float rounding."""
    h = tensor.shape[-2]
    target = out[0, 0]
    if kernels.ENABLED and target.stride(1) == 1 and h > 1:
        full, window = _map_and_window(target)
        kernels.blend_rows(resize_rows(tensor, size[1]), _linear_taps(h, size[0]), full, window)
        return out
    rows = F.interpolate(tensor, size=(h, size[1]), mode="bilinear", align_corners=True)
    if h == 1:
        return out.copy_(rows.expand_as(out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.mm(_rows_matrix(h, size[0]), rows[0, 0], out=out[0, 0])
    return out


def resize_rows(tensor: torch.Tensor, width: int) -> np.ndarray:
    """A (1, 1, h, w) float32 CPU map resized along its rows only to `width` (align_corners
    bilinear): the first pass of the separable resize, as a C-contiguous (h, width) array for
    the compiled second pass (`kernels.resize_rows` where numba is present, else ATen)."""
    if kernels.ENABLED:
        src = tensor[0, 0].contiguous().numpy()
        return kernels.resize_rows(src, _linear_taps(src.shape[1], int(width)))
    rows = F.interpolate(tensor, size=(tensor.shape[-2], int(width)), mode="bilinear",
                         align_corners=True)
    return rows[0, 0].contiguous().numpy()


def _map_and_window(target: torch.Tensor) -> Tuple[np.ndarray, Roi]:
    """(a C-contiguous 2-D map, the half-open window of it that the 2-D CPU view `target` is)
    when `target` is a window of one (e.g. of an output map), so that the row blend compiles its
    contiguous form; else (`target` itself, its whole extent)."""
    base = target._base
    if (base is not None and base.dim() == 2 and base.is_contiguous()
            and target.stride() == (base.stride(0), 1)):
        r0, c0 = divmod(target.storage_offset() - base.storage_offset(), base.stride(0))
        return base.numpy(), (r0, r0 + target.shape[0], c0, c0 + target.shape[1])
    return target.numpy(), (0, target.shape[0], 0, target.shape[1])


def expand_bbox(bbox: Roi, expand_ratio: float, min_crop_size: Optional[float] = None) -> Roi:
    """Scale an inclusive box about its centre to expand_ratio * (extent + 1), at least
    `min_crop_size`; corners rounded with Python's round (half to even), rule 28b."""
    rmin, rmax, cmin, cmax = bbox
    rcenter = 0.5 * (rmin + rmax)
    ccenter = 0.5 * (cmin + cmax)
    height = expand_ratio * (rmax - rmin + 1)
    width = expand_ratio * (cmax - cmin + 1)
    if min_crop_size is not None:
        height = max(height, min_crop_size)
        width = max(width, min_crop_size)
    return (int(round(rcenter - 0.5 * height)), int(round(rcenter + 0.5 * height)),
            int(round(ccenter - 0.5 * width)), int(round(ccenter + 0.5 * width)))


def clamp_bbox(bbox: Roi, rmin: int, rmax: int, cmin: int, cmax: int) -> Roi:
    return (max(rmin, bbox[0]), min(rmax, bbox[1]), max(cmin, bbox[2]), min(cmax, bbox[3]))


def get_object_roi(pred_mask: np.ndarray, clicks: Sequence[Click], expansion_ratio: float,
                   min_crop_size: float) -> Roi:
    """Inclusive ROI around (mask united with the positive click pixels), expanded and clamped."""
    mask = np.asarray(pred_mask, dtype=bool).copy()
    for click in clicks:
        if click.is_positive:
            mask[int(click.coords[0]), int(click.coords[1])] = True
    bbox = get_bbox_from_mask(mask)
    if bbox is None:
        raise ValueError("get_object_roi needs a non-empty mask or a positive click")
    bbox = expand_bbox(bbox, expansion_ratio, min_crop_size)
    h, w = mask.shape
    return clamp_bbox(bbox, 0, h - 1, 0, w - 1)


def segments_iou(s1: Tuple[int, int], s2: Tuple[int, int]) -> float:
    """1-D IoU of inclusive integer intervals."""
    a, b = s1
    c, d = s2
    intersection = max(0, min(b, d) - max(a, c) + 1)
    union = max(1e-6, max(b, d) - min(a, c) + 1)
    return intersection / union


def get_bbox_iou(b1: Roi, b2: Roi) -> float:
    """Product of the row and column interval IoUs (rule 28c)."""
    return segments_iou(b1[:2], b2[:2]) * segments_iou(b1[2:4], b2[2:4])


def check_object_roi(roi: Roi, clicks: Sequence[Click]) -> bool:
    """True iff every positive click lies in [rmin, rmax) x [cmin, cmax) (rule 28c)."""
    for click in clicks:
        if click.is_positive:
            y, x = click.coords
            if y < roi[0] or y >= roi[1] or x < roi[2] or x >= roi[3]:
                return False
    return True


def map_clicks(clicks: Sequence[Click], roi: Roi, new_size: Tuple[int, int],
               align_corners: bool = False) -> list:
    """Clicks into an inclusive ROI resized to new_size.

    `align_corners=False`: RITM's y' = h_new * (y - rmin) / h (rule 28d, ZoomIn). With
    `align_corners=True`: y' = (y - rmin) * (h_new - 1) / (h - 1), the pixel the
    align_corners=True resize (`resize_bilinear`) moves pixel y to, so the click disk covers the
    pixels it covered in the image at any zoom (the IGLR target crop; `ops.resize_coord`)."""
    rmin, rmax, cmin, cmax = roi
    h, w = rmax - rmin + 1, cmax - cmin + 1
    if align_corners:
        return [c.copy(coords=(resize_coord(c.coords[0], rmin, h, new_size[0]),
                               resize_coord(c.coords[1], cmin, w, new_size[1])))
                for c in clicks]
    return [c.copy(coords=(new_size[0] * (c.coords[0] - rmin) / h,
                           new_size[1] * (c.coords[1] - cmin) / w)) for c in clicks]


class ZoomIn:
    """RITM zoom-in (rules 28-29); state lives across the clicks of one sample.

    target_size: int (longest side, aspect kept; up-sampling allowed) or (h, w) (fixed, aspect
    ignored). skip_clicks: clicks processed on the full image at native resolution (1 for cvpr,
    -1 for fixed). prob_thresh 0.50 as in RITM.
    """

    def __init__(self, target_size: Union[int, Tuple[int, int]] = 400, skip_clicks: int = 1,
                 expansion_ratio: float = 1.4, min_crop_size: int = 200,
                 recompute_thresh_iou: float = 0.5, prob_thresh: float = 0.50):
        self.target_size = target_size
        self.skip_clicks = skip_clicks
        self.expansion_ratio = expansion_ratio
        self.min_crop_size = min_crop_size
        self.recompute_thresh_iou = recompute_thresh_iou
        self.prob_thresh = prob_thresh
        self.reset()

    def reset(self) -> None:
        self._object_roi: Optional[Roi] = None
        self._prev_probs: Optional[np.ndarray] = None
        self._roi_size: Optional[Tuple[int, int]] = None
        self.image_changed = False

    def _roi_output_size(self, roi: Roi) -> Tuple[int, int]:
        h, w = roi[1] - roi[0] + 1, roi[3] - roi[2] + 1
        if isinstance(self.target_size, (tuple, list)):
            return int(self.target_size[0]), int(self.target_size[1])
        scale = self.target_size / max(h, w)
        return int(round(h * scale)), int(round(w * scale))

    def transform(self, image_nd: torch.Tensor, clicks: Sequence[Click]) -> Tuple[torch.Tensor, list]:
        """image_nd (1, C, H, W) -> (cropped and resized (1, C, h', w'), clicks in its coords)."""
        self.image_changed = False
        clicks = list(clicks)
        if len(clicks) <= self.skip_clicks:
            return image_nd, clicks
        current_roi = None
        if self._prev_probs is not None:
            mask = self._prev_probs > self.prob_thresh
            if mask.any():
                current_roi = get_object_roi(mask, clicks, self.expansion_ratio, self.min_crop_size)
        if current_roi is None:
            if self.skip_clicks >= 0:
                return image_nd, clicks  # rule 28f: an old ROI may still receive the output
            current_roi = (0, image_nd.shape[2] - 1, 0, image_nd.shape[3] - 1)
        update = (self._object_roi is None or not check_object_roi(self._object_roi, clicks)
                  or get_bbox_iou(current_roi, self._object_roi) < self.recompute_thresh_iou)
        if update:
            self._object_roi = current_roi
            self.image_changed = True
        rmin, rmax, cmin, cmax = self._object_roi
        size = self._roi_output_size(self._object_roi)
        roi_image = resize_bilinear(image_nd[:, :, rmin:rmax + 1, cmin:cmax + 1], size)
        return roi_image, map_clicks(clicks, self._object_roi, size)

    def inv_transform(self, prob_map: torch.Tensor, full_size: Tuple[int, int]) -> torch.Tensor:
        """prob_map (1, 1, h', w') -> (1, 1, H, W): resized into the stored ROI, zero outside."""
        if self._object_roi is None:
            self._prev_probs = prob_map[0, 0].detach().cpu().numpy()
            return prob_map
        rmin, rmax, cmin, cmax = self._object_roi
        roi_probs = resize_bilinear(prob_map, (rmax - rmin + 1, cmax - cmin + 1))
        out = torch.zeros((1, 1) + tuple(full_size), dtype=prob_map.dtype, device=prob_map.device)
        out[:, :, rmin:rmax + 1, cmin:cmax + 1] = roi_probs
        self._prev_probs = out[0, 0].detach().cpu().numpy()
        return out


def target_crop_roi(prev_prob: Optional[np.ndarray], clicks: Sequence[Click], image_size: Tuple[int, int],
                    expansion_ratio: float = 1.4, min_crop_size: int = 10,
                    prob_thresh: float = 0.49) -> Roi:
    """FocalClick/IGLR target crop (rule 31), inclusive: the whole image at click 1 or when the
    previous mask (> 0.49) is empty, otherwise the expanded box of mask + positive clicks."""
    h, w = image_size
    full = (0, h - 1, 0, w - 1)
    if len(clicks) <= 1 or prev_prob is None:
        return full
    mask = np.asarray(prev_prob) > prob_thresh
    if not mask.any():
        return full
    return get_object_roi(mask, clicks, expansion_ratio, min_crop_size)


def _outside_bbox(window: Tuple[int, int, int, int], image_size: Tuple[int, int]
                  ) -> Tuple[int, Optional[Tuple[int, int, int, int]]]:
    """Pixel count and inclusive bbox of the image minus a half-open window."""
    (y1, y2, x1, x2), (h, w) = window, image_size
    count = h * w - (y2 - y1) * (x2 - x1)
    if count == 0:
        return 0, None
    rows_full = x1 > 0 or x2 < w  # a column strip outside spans every row
    cols_full = y1 > 0 or y2 < h
    ymin = 0 if rows_full or y1 > 0 else y2
    ymax = h - 1 if rows_full or y2 < h else y1 - 1
    xmin = 0 if cols_full or x1 > 0 else x2
    xmax = w - 1 if cols_full or x2 < w else x1 - 1
    return count, (ymin, ymax, xmin, xmax)


def _component_bbox(diff: np.ndarray, y: int, x: int, origin: Tuple[int, int],
                    image_size: Tuple[int, int], runs=None) -> Tuple[int, int, int, int]:
    """(ymin, ymax, xmin, xmax) in image coordinates (inclusive maxima; (0, H, 0, W) under 10
    pixels) of the OpenCV label of pixel (y, x) in an image that is `diff` (uint8, placed at
    `origin`) inside and 0 outside. Label 0 (background) gathers every zero pixel, those
    outside the window included. `runs`: `diff`'s `kernels.RowRuns`, if known: the clicked
    component (or the zeros) are then found over the runs instead of by a flood fill (or a
    pass over the mask)."""
    oy, ox = origin
    h, w = image_size
    if runs is not None and not runs.complete:
        runs = None  # a row had more runs than were kept: the mask itself
    if runs is None and callable(diff):
        diff = diff()
    dh, dw = runs.shape if runs is not None else diff.shape
    inside = 0 <= y - oy < dh and 0 <= x - ox < dw
    if runs is not None:
        if inside:
            area, (cy1, cy2, cx1, cx2) = runs.component(y - oy, x - ox)
            if area > 0:
                return (0, h, 0, w) if area < 10 else (cy1 + oy, cy2 + oy, cx1 + ox, cx2 + ox)
    elif inside and diff[y - oy, x - ox]:
        # the 8-connected component of the click alone: a flood fill from it visits only that
        # component (labelling every component of the window costs several full passes)
        area, _, _, (cx, cy, cw, ch) = cv2.floodFill(diff, None, (x - ox, y - oy), 2,
                                                     loDiff=0, upDiff=0, flags=8)
        if area < 10:
            return 0, h, 0, w
        return cy + oy, cy + ch - 1 + oy, cx + ox, cx + cw - 1 + ox
    count, outside = _outside_bbox((oy, oy + dh, ox, ox + dw), (h, w))
    if runs is not None:
        inside_count, inner = runs.zeros()
    else:
        zeros = diff == 0
        inside_count, inner = int(np.count_nonzero(zeros)), get_bbox_from_mask(zeros)
    count += inside_count
    if count < 10:
        return 0, h, 0, w
    boxes = [outside] if outside is not None else []
    if inner is not None:
        boxes.append((inner[0] + oy, inner[1] + oy, inner[2] + ox, inner[3] + ox))
    return (min(b[0] for b in boxes), max(b[1] for b in boxes),
            min(b[2] for b in boxes), max(b[3] for b in boxes))


def focus_crop(coarse_logits: np.ndarray, prev_prob: np.ndarray, target_box: Tuple[int, int, int, int],
               click: Tuple[float, float], strategy: str = "diff", expand_ratio: float = 1.4,
               thresh: float = 0.49, origin: Tuple[int, int] = (0, 0),
               image_size: Optional[Tuple[int, int]] = None) -> Optional[Tuple[int, int, int, int]]:
    """Half-open focus box (y1, y2, x1, x2) for the refiner (rule 35), or None if empty.

    coarse_logits: HxW full-resolution coarse logits (-inf outside the target crop), or a bool
    mask already thresholded. prev_prob: HxW previous final probabilities (or a bool mask
    already thresholded). target_box:
    half-open target crop. strategy: 'diff' (the connected XOR component at the click, else a
    square around the click), 'click_square' (always the square), 'whole_object' (the coarse
    object's box).

    Window form (the predictor's fast path): `coarse_logits` and `prev_prob` may be the window
    of the image at `origin` = (y, x) of an `image_size` = (H, W) image, provided both
    thresholded masks are empty outside it (true of the target crop: the coarse mask lives
    there and the crop contains the previous mask). Click, target box and result stay in image
    coordinates, and the result equals the full-image call's.
    """
    if strategy not in FOCUS_STRATEGIES:
        raise KeyError(f"unknown focus strategy '{strategy}'; known: {', '.join(FOCUS_STRATEGIES)}")
    pred, prev = (m if m.dtype == bool else m > thresh
                  for m in (np.asarray(coarse_logits), np.asarray(prev_prob)))
    count = int(np.count_nonzero(pred))
    bbox = get_bbox_from_mask(pred) if count else None
    diff = (lambda: np.not_equal(pred, prev).view(np.uint8)) if strategy == "diff" else None
    return focus_box(strategy, count, bbox, bool(prev.any()), diff, target_box, click,
                     expand_ratio, origin, pred.shape if image_size is None else image_size)


def focus_box(strategy: str, pred_count: int, pred_bbox: Optional[Roi], prev_any: bool,
              diff, target_box: Tuple[int, int, int, int], click: Tuple[float, float],
              expand_ratio: float, origin: Tuple[int, int], image_size: Tuple[int, int],
              runs=None) -> Optional[Tuple[int, int, int, int]]:
    """`focus_crop` from the statistics of its masks in a window at `origin` of an image of
    `image_size`: the coarse mask's pixel count and inclusive bbox in the window (None when
    empty), whether the previous mask has any pixel, and `diff`, the uint8 XOR of the two over
    the window (0/1, filled in place by the flood fill; an array, or a function returning one,
    called only if the rule needs it); `runs`: the XOR's `kernels.RowRuns`, if known (the
    clicked component is then found over them, without the flood fill). The predictor's
    compiled path computes them all in one pass (`kernels.blend_threshold_xor`)."""
    h, w = image_size
    oy, ox = origin
    y, x = int(click[0]), int(click[1])
    if pred_count < 10 or pred_bbox is None:
        py1, py2, px1, px2 = 0, h, 0, w
    else:
        py1, py2, px1, px2 = pred_bbox
        py1, py2, px1, px2 = py1 + oy, py2 + oy, px1 + ox, px2 + ox
    hp, wp = py2 - py1, px2 - px1
    square = None
    r = 0.2 * max(hp, wp)
    if strategy == "whole_object":
        box = (py1, py2, px1, px2)
    elif strategy == "click_square":
        box = (y - r, y + r, x - r, x + r)
    elif not prev_any:
        box = (py1, py2, px1, px2)
    else:
        dy1, dy2, dx1, dx2 = _component_bbox(diff, y, x, (oy, ox), (h, w), runs)
        if (dy2 - dy1) < hp / 3 or (dx2 - dx1) < wp / 3:
            square = (y - r, y + r, x - r, x + r)
        box = square if square is not None else (dy1, dy2, dx1, dx2)
    y1, y2, x1, x2 = box
    cy, cx = 0.5 * (y1 + y2), 0.5 * (x1 + x2)
    hh = expand_ratio * (y2 - y1 + 1) / 2
    hw = expand_ratio * (x2 - x1 + 1) / 2
    y1, y2, x1, x2 = int(cy - hh), int(cy + hh), int(cx - hw), int(cx + hw)
    ty1, ty2, tx1, tx2 = target_box
    y1, y2 = max(y1, ty1, 0), min(y2, ty2, h)
    x1, x2 = max(x1, tx1, 0), min(x2, tx2, w)
    if y2 - y1 < 1 or x2 - x1 < 1:
        return None
    return y1, y2, x1, x2
