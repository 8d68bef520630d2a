"""The crops of the coarse stage (evaluation-protocol.md §4).

- `target_crop_roi`: the FocalClick/IGLR target crop (rules 31-32), recomputed at every click
  from the previous mask's bbox and the positive clicks (the predictor's crop).
- `ZoomIn`: RITM's stateful zoom-in (rule 28, `--eval-mode=cvpr`; rule 29, `fixed<S>`; the
  coarse predictor's `crop_mode='zoom_in'`).
- `map_clicks`: clicks into a crop resized to the network's input.

ROIs named `roi` are inclusive (rmin, rmax, cmin, cmax) like RITM's.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .clicker import Click
from .resize import resize_bilinear
from .utils import get_bbox_from_mask

Roi = Tuple[int, int, int, int]


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


def object_roi(mask_bbox: Optional[Roi], clicks: Sequence[Click], image_size: Tuple[int, int],
               expansion_ratio: float, min_crop_size: float) -> Roi:
    """Inclusive ROI around a mask (its inclusive bbox `mask_bbox`, None when empty) united with
    the positive click pixels, expanded (`expand_bbox`) and clamped to the image (rules 28b,
    31); ValueError when both are empty."""
    boxes = [(int(c.coords[0]), int(c.coords[0]), int(c.coords[1]), int(c.coords[1]))
             for c in clicks if c.is_positive]
    if mask_bbox is not None:
        boxes.append(mask_bbox)
    if not boxes:
        raise ValueError("object_roi needs a non-empty mask or a positive click")
    rmin, rmax = min(b[0] for b in boxes), max(b[1] for b in boxes)
    cmin, cmax = min(b[2] for b in boxes), max(b[3] for b in boxes)
    h, w = image_size
    return clamp_bbox(expand_bbox((rmin, rmax, cmin, cmax), expansion_ratio, min_crop_size),
                      0, h - 1, 0, w - 1)


def get_object_roi(pred_mask: np.ndarray, clicks: Sequence[Click], expansion_ratio: float,
                   min_crop_size: float) -> Roi:
    """Inclusive ROI around (mask united with the positive click pixels), expanded and clamped."""
    mask = np.asarray(pred_mask, dtype=bool)
    return object_roi(get_bbox_from_mask(mask), clicks, mask.shape, expansion_ratio,
                      min_crop_size)


def target_crop_roi(prev_bbox: Optional[Roi], clicks: Sequence[Click],
                    image_size: Tuple[int, int], expansion_ratio: float = 1.4,
                    min_crop_size: int = 10) -> Roi:
    """FocalClick/IGLR target crop (rule 31), inclusive: the whole image at click 1 or when the
    previous mask (previous probabilities > 0.49; `prev_bbox`, its inclusive bbox in image
    coordinates, None when empty) is empty, otherwise the expanded box of mask + positive
    clicks."""
    h, w = image_size
    if len(clicks) <= 1 or prev_bbox is None:
        return 0, h - 1, 0, w - 1
    return object_roi(prev_bbox, clicks, image_size, expansion_ratio, min_crop_size)


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


def map_clicks(clicks: Sequence[Click], roi: Roi, new_size: Tuple[int, int]) -> list:
    """Clicks into an inclusive ROI resized to new_size: y' = h_new * (y - rmin) / h."""
    rmin, rmax, cmin, cmax = roi
    h, w = rmax - rmin + 1, cmax - cmin + 1
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
