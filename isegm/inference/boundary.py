"""Boundary quality of a predicted mask: boundary IoU and average symmetric surface distance
(docs/evaluation-protocol.md, rule 37; the released IGLR evaluator's mBIoU@k and ASSD@k).

    scorer = BoundaryScorer(gt_mask)          # once per sample (HxW: 1 object, 0, -1 ignore)
    biou, assd = scorer(pred_mask)            # per click (HxW bool)

Boundary IoU: a mask's boundary band is the mask minus its erosion by a 3x3 square, repeated
`boundary_width(shape)` = round(0.02 * image diagonal) times (at least once), on the mask padded
by one background pixel, so that the image border counts as an edge. BIoU = |Bp & Bg| / |Bp | Bg|.
Like the released code, ignore pixels (-1) are background and exclude nothing by default (its
`gt != 255` test is always true on a 0/1 mask); `exclude_ignore=True` removes them from both bands.

ASSD: the outer contour of a mask is what OpenCV's external contours trace: the pixels of the
mask with its holes filled that have a 4-neighbour outside it (the image border counting as
outside), one pixel wide. ASSD is the mean, over the pixels of both contours, of the Euclidean
distance (pixels) to the nearest pixel of the other contour (exact, through k-d trees).

Empty masks, where the released code divides by zero: two empty masks score BIoU 1 and ASSD 0
(they agree); exactly one empty mask scores BIoU 0 and ASSD equal to the image diagonal (the
largest distance the image allows), so that averages over clicks stay finite.
"""
from __future__ import annotations

import math
from typing import Tuple

import cv2
import numpy as np
from scipy.spatial import cKDTree

from .utils import half_open_bbox

BOUNDARY_DILATION_RATIO = 0.02
_SQUARE3 = np.ones((3, 3), np.uint8)



def boundary_width(shape: Tuple[int, int]) -> int:
    """Erosion steps of the boundary band: round(0.02 * diagonal), at least 1 (Python rounding,
    as released)."""
    height, width = shape[:2]
    return max(1, int(round(BOUNDARY_DILATION_RATIO * math.hypot(height, width))))


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """HxW bool: the pixels of `mask` that `width` 3x3 erosions of the zero-padded mask remove.

    Computed on the mask's bounding box (outside it the mask is zero, so the result is the same).
    """
    mask = np.asarray(mask, dtype=bool)
    band = np.zeros(mask.shape, dtype=bool)
    box = half_open_bbox(mask)
    if box is None:
        return band
    y1, y2, x1, x2 = box
    crop = mask[y1:y2, x1:x2].astype(np.uint8)
    padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, _SQUARE3, iterations=width)[1:-1, 1:-1]
    band[y1:y2, x1:x2] = (crop > 0) & (eroded == 0)
    return band


def contour_points(mask: np.ndarray) -> np.ndarray:
    """(K, 2) int (y, x) of the outer contours of `mask` (OpenCV's external contours, every
    pixel once): the pixels of the hole-filled mask with a 4-neighbour outside it, the image
    border counting as outside."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((0, 2), dtype=np.int64)
    xy = np.concatenate([c.reshape(-1, 2) for c in contours])
    flat = np.unique(xy[:, 1].astype(np.int64) * mask.shape[1] + xy[:, 0])
    return np.stack(np.divmod(flat, mask.shape[1]), axis=1)


def outer_contour(mask: np.ndarray) -> np.ndarray:
    """HxW bool image of `contour_points(mask)`."""
    contour = np.zeros(np.shape(mask)[:2], dtype=bool)
    points = contour_points(mask)
    contour[points[:, 0], points[:, 1]] = True
    return contour


class BoundaryScorer:
    """Boundary IoU and ASSD of predictions against one ground truth (its parts computed once).

    gt_mask: HxW, 1 object, 0 background, -1 ignore (or bool). `exclude_ignore`: drop ignore
    pixels from both boundary bands (off by default, as released).
    """

    def __init__(self, gt_mask: np.ndarray, exclude_ignore: bool = False):
        gt_mask = np.asarray(gt_mask)
        self.shape = gt_mask.shape[:2]
        self.width = boundary_width(self.shape)
        self.diagonal = math.hypot(*self.shape)
        gt = gt_mask > 0 if gt_mask.dtype != bool else gt_mask
        self._valid = (gt_mask != -1) if exclude_ignore and gt_mask.dtype != bool else None
        self._gt_band = self._restrict(boundary_band(gt, self.width))
        self._gt_points = contour_points(gt)
        self._gt_tree = cKDTree(self._gt_points) if len(self._gt_points) else None

    def _restrict(self, band: np.ndarray) -> np.ndarray:
        return band if self._valid is None else band & self._valid

    def boundary_iou(self, pred_mask: np.ndarray) -> float:
        pred_band = self._restrict(boundary_band(pred_mask, self.width))
        union = np.count_nonzero(pred_band | self._gt_band)
        if union == 0:
            return 1.0
        return float(np.count_nonzero(pred_band & self._gt_band) / union)

    def assd(self, pred_mask: np.ndarray) -> float:
        points = contour_points(pred_mask)
        if len(points) == 0 and self._gt_tree is None:
            return 0.0
        if len(points) == 0 or self._gt_tree is None:
            return float(self.diagonal)
        to_gt, _ = self._gt_tree.query(points)
        to_pred, _ = cKDTree(points).query(self._gt_points)
        return float((to_gt.sum() + to_pred.sum()) / (len(to_gt) + len(to_pred)))

    def __call__(self, pred_mask: np.ndarray) -> Tuple[float, float]:
        """(boundary IoU, ASSD in pixels) of `pred_mask` (HxW bool)."""
        pred_mask = np.asarray(pred_mask, dtype=bool)
        if pred_mask.shape != self.shape:
            raise ValueError(f"prediction of shape {pred_mask.shape} scored against a ground truth "
                             f"of shape {self.shape}")
        return self.boundary_iou(pred_mask), self.assd(pred_mask)
