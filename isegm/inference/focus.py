"""The focus rule (rule 35): where the refiner looks at each click, in one place.

The coarse mask Pc is the coarse logits > 0.49 (rule 35a; as probabilities, p >=
`COARSE_PROB_THRESH`, `coarse_mask_of_probs`), the previous mask Pp the previous probabilities
> 0.49 (`PREV_MASK_THRESHOLD`). Then (rule 35b):

- `'diff'` (IGLR's released behaviour): without Pp, the box of Pc; else D, the 8-connected
  component of Pc XOR Pp at the last click (label 0, every pixel off the XOR, when the click is
  off it); if D is under 1 / `THIN_COMPONENT_DIVISOR` of Pc's box in height or width, the
  square of half-side `CLICK_SQUARE_RATIO` * max(Pc's box extents) around the click, else D's
  box. Extents are max - min; a mask of fewer than `MIN_MASK_PIXELS` pixels has the whole
  image as its box.
- `'click_square'`: always that square; `'whole_object'`: always Pc's box.

The box is scaled about its centre to `focus_crop_r` * (extent + 1), truncated with int(),
clamped to the image and the target crop (rule 35c): a half-open (y1, y2, x1, x2).

`focus_crop` takes the masks (full image, or the window of the target crop); `focus_box` takes
their statistics, which the predictor's backends compute in their own way (the numba backend:
one pass over the coarse crop's rows, the XOR's component from its row runs,
`kernels.runs.RowRuns`). Training draws its refiner boxes by another rule (near the object's
boundary at the last click: `engine.interaction.FocusBoxSampler`, architecture spec §5).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import cv2
import numpy as np
import torch

from .utils import get_bbox_from_mask

Box = Tuple[int, int, int, int]
FOCUS_STRATEGIES = ("diff", "click_square", "whole_object")
# rule 35a: the coarse logits are thresholded at 0.49: log(p / (1 - p)) > 0.49 in float32. On
# the float32 probabilities that is p >= float32(sigmoid(0.49)) = 0.62010646 exactly (a strict
# `>` misses p = 0.62010646 itself, whose logit is 0.49000007): `coarse_mask_of_probs`.
FOCUS_LOGIT_THRESHOLD = 0.49
COARSE_PROB_THRESH = float(torch.sigmoid(torch.tensor(FOCUS_LOGIT_THRESHOLD,
                                                      dtype=torch.float32)))
PREV_MASK_THRESHOLD = 0.49  # rule 35a: Pp = previous probabilities > 0.49
MIN_MASK_PIXELS = 10  # rule 35b: the bbox of a smaller mask (or component) is the whole image
# rule 35b: a component under 1 / THIN_COMPONENT_DIVISOR of Pc's box (height or width) gives
# way to the click square (a division, as the rule's hp / 3: exact at multiples of 3)
THIN_COMPONENT_DIVISOR = 3
CLICK_SQUARE_RATIO = 0.2  # rule 35b: the square's half-side, of the coarse box's larger extent


def coarse_mask_of_probs(probs: Union[np.ndarray, torch.Tensor]
                         ) -> Union[np.ndarray, torch.Tensor]:
    """Rule 35a's coarse mask from float32 coarse probabilities (any shape, NumPy or torch):
    `probs >= COARSE_PROB_THRESH`, equal to thresholding their float32 logits at 0.49."""
    return probs >= COARSE_PROB_THRESH


def _outside_bbox(window: Box, image_size: Tuple[int, int]
                  ) -> Tuple[int, Optional[Box]]:
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
                    image_size: Tuple[int, int], runs=None) -> Box:
    """(ymin, ymax, xmin, xmax) in image coordinates (inclusive maxima; (0, H, 0, W) under
    `MIN_MASK_PIXELS`) of the OpenCV label of pixel (y, x) in an image that is `diff` (uint8, placed at
    `origin`) inside and 0 outside. Label 0 (background) gathers every zero pixel, those
    outside the window included. `runs`: `diff`'s `kernels.runs.RowRuns`, if known: the clicked
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
                return (0, h, 0, w) if area < MIN_MASK_PIXELS else (cy1 + oy, cy2 + oy, cx1 + ox, cx2 + ox)
    elif inside and diff[y - oy, x - ox]:
        # the 8-connected component of the click alone: a flood fill from it visits only that
        # component (labelling every component of the window costs several full passes)
        area, _, _, (cx, cy, cw, ch) = cv2.floodFill(diff, None, (x - ox, y - oy), 2,
                                                     loDiff=0, upDiff=0, flags=8)
        if area < MIN_MASK_PIXELS:
            return 0, h, 0, w
        return cy + oy, cy + ch - 1 + oy, cx + ox, cx + cw - 1 + ox
    count, outside = _outside_bbox((oy, oy + dh, ox, ox + dw), (h, w))
    if runs is not None:
        inside_count, inner = runs.zeros()
    else:
        zeros = diff == 0
        inside_count, inner = int(np.count_nonzero(zeros)), get_bbox_from_mask(zeros)
    count += inside_count
    if count < MIN_MASK_PIXELS:
        return 0, h, 0, w
    boxes = [outside] if outside is not None else []
    if inner is not None:
        boxes.append((inner[0] + oy, inner[1] + oy, inner[2] + ox, inner[3] + ox))
    return (min(b[0] for b in boxes), max(b[1] for b in boxes),
            min(b[2] for b in boxes), max(b[3] for b in boxes))


def focus_crop(coarse_logits: np.ndarray, prev_prob: np.ndarray, target_box: Box,
               click: Tuple[float, float], strategy: str = "diff", expand_ratio: float = 1.4,
               thresh: float = FOCUS_LOGIT_THRESHOLD, origin: Tuple[int, int] = (0, 0),
               image_size: Optional[Tuple[int, int]] = None) -> Optional[Box]:
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


def focus_box(strategy: str, pred_count: int, pred_bbox: Optional[Box], prev_any: bool,
              diff, target_box: Box, click: Tuple[float, float],
              expand_ratio: float, origin: Tuple[int, int], image_size: Tuple[int, int],
              runs=None) -> Optional[Box]:
    """`focus_crop` from the statistics of its masks in a window at `origin` of an image of
    `image_size`: the coarse mask's pixel count and inclusive bbox in the window (None when
    empty), whether the previous mask has any pixel, and `diff`, the uint8 XOR of the two over
    the window (0/1, filled in place by the flood fill; an array, or a function returning one,
    called only if the rule needs it); `runs`: the XOR's `kernels.runs.RowRuns`, if known (the
    clicked component is then found over them, without the flood fill). The predictor's
    numba backend computes them all in one pass (`kernels.maps.blend_threshold_xor`)."""
    h, w = image_size
    oy, ox = origin
    y, x = int(click[0]), int(click[1])
    if pred_count < MIN_MASK_PIXELS or pred_bbox is None:
        py1, py2, px1, px2 = 0, h, 0, w
    else:
        py1, py2, px1, px2 = pred_bbox
        py1, py2, px1, px2 = py1 + oy, py2 + oy, px1 + ox, px2 + ox
    hp, wp = py2 - py1, px2 - px1
    r = CLICK_SQUARE_RATIO * max(hp, wp)
    if strategy == "whole_object":
        box = (py1, py2, px1, px2)
    elif strategy == "click_square":
        box = (y - r, y + r, x - r, x + r)
    elif not prev_any:
        box = (py1, py2, px1, px2)
    else:
        dy1, dy2, dx1, dx2 = _component_bbox(diff, y, x, (oy, ox), (h, w), runs)
        if (dy2 - dy1) < hp / THIN_COMPONENT_DIVISOR or (dx2 - dx1) < wp / THIN_COMPONENT_DIVISOR:
            box = (y - r, y + r, x - r, x + r)
        else:
            box = (dy1, dy2, dx1, dx2)
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
