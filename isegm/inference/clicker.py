"""Simulated user clicks: the evaluation rule and the training rule, sharing one error-map code.

Evaluation (evaluation-protocol.md rules 4-12): the next click goes to the pixel farthest from
the boundary of the largest error, measured with the exact Euclidean distance transform on the
one-pixel-padded error mask; squared distances are compared as integers, so ties are exact:

    clicker = Clicker(gt_mask=gt)                 # gt: HxW, 1 object, -1 ignore, other background
    click = clicker.make_next_click(pred_mask)    # pred_mask: HxW bool, the previous binary mask
    clicker.get_clicks()                          # [Click(is_positive, coords=(y, x), indx), ...]

Training (rule 53): `next_click_training(gt_mask, pred_prob, rng)` uses OpenCV's chamfer distance
(maskSize 5) and a uniform pick among pixels deeper than half the maximum.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy import ndimage

from ..utils import jit
from .kernels.clicks import deepest_pixel
from .utils import half_open_bbox

PRED_THRESHOLD = 0.49  # rule 3 and rule 53


@dataclass(frozen=True)
class Click:
    """One click. `coords` are (y, x) in image pixels; `indx` is its 0-based order."""

    is_positive: bool
    coords: Tuple[float, float]
    indx: Optional[int] = None

    @property
    def coords_and_indx(self) -> Tuple[float, float, Optional[int]]:
        return (self.coords[0], self.coords[1], self.indx)

    def copy(self, **kwargs) -> "Click":
        return replace(self, **kwargs)


def error_masks(gt_positive: np.ndarray, pred_mask: np.ndarray,
                valid: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """False-negative and false-positive masks (HxW bool each).

    FN = gt & ~pred & valid, FP = ~gt & pred & valid (rule 6). `valid=None` means every pixel
    counts (the training rule, where ignore pixels are background).
    """
    gt_positive = np.asarray(gt_positive, dtype=bool)
    pred_mask = np.asarray(pred_mask, dtype=bool)
    if gt_positive.shape != pred_mask.shape:
        raise ValueError(f"gt mask {gt_positive.shape} and prediction {pred_mask.shape} differ in shape")
    fn = gt_positive & ~pred_mask
    fp = ~gt_positive & pred_mask
    if valid is not None:
        fn &= valid
        fp &= valid
    return fn, fp


# Squared distances up to this value are read from OpenCV's exact ("precise") L2 transform,
# which returns float32 distances: d^2 is recovered by rounding, exact while the float32 error of
# d (a few ulp, 2.4e-7 relative per ulp of d^2) stays far below 0.5 in d^2. Above it (error
# regions over ~1000 px wide) SciPy's transform with integer feature indices is used instead.
_CV2_EXACT_MAX_SQ = 500 * 500
# OpenCV's float distances of equal integer d^2 differ by a few ulp (< 1e-4 below 500); those
# of different d^2 by more than 1 / (2 * 500) = 1e-3
_TIE_TOLERANCE = 4e-4


def _squared_edt_scipy(padded: np.ndarray) -> np.ndarray:
    """Exact integer squared EDT of a padded bool mask from SciPy's feature indices."""
    indices = ndimage.distance_transform_edt(padded, return_distances=False, return_indices=True)
    h, w = padded.shape
    dy = indices[0].astype(np.int64) - np.arange(h, dtype=np.int64)[:, None]
    dx = indices[1].astype(np.int64) - np.arange(w, dtype=np.int64)[None, :]
    return dy * dy + dx * dx


def _padded_box_dt(mask: np.ndarray, box: Tuple[int, int, int, int]
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """(the mask's `box` (r0, r1, c0, c1) with a one-pixel ring of 0, uint8; OpenCV's precise
    float32 distance transform of it, ring removed: a (r1 - r0, c1 - c0) array, 0 outside the
    mask).

    Exact on the box: the one-pixel ring around it is all False (image padding or background),
    and for any pixel inside, the nearest False pixel outside the box is never closer than that
    ring (the ring pixel nearest along the way is at most as far in both coordinates).
    """
    r0, r1, c0, c1 = box
    crop = np.ascontiguousarray(mask[r0:r1, c0:c1]).view(np.uint8)
    padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return padded, cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def _squared_edt_box(mask: np.ndarray, box: Tuple[int, int, int, int],
                     method: str = "auto") -> np.ndarray:
    """Exact squared EDT (int64) of the padded `mask` on its bounding `box`, as a
    (r1 - r0, c1 - c0) array; 0 outside the mask. method: 'auto' or 'scipy'."""
    padded, dist = _padded_box_dt(mask, box)
    if method == "auto" and float(dist.max()) ** 2 <= _CV2_EXACT_MAX_SQ:
        # float32 suffices: d^2 <= 250000 < 2^18, where the float32 error of d^2 (from d's
        # few-ulp error and the product's rounding) stays below 0.1, far from 0.5
        return np.rint(dist * dist).astype(np.int64)  # 0 outside the mask, as d is
    return _squared_edt_scipy(padded.view(bool))[1:-1, 1:-1]  # 0 outside the mask


def squared_edt_padded(mask: np.ndarray, method: str = "auto") -> np.ndarray:
    """Exact squared Euclidean distance (int64, HxW) of each mask pixel to the nearest pixel
    outside the mask, where the mask is first padded with a one-pixel ring of False (so the image
    border is a boundary and a border pixel of the mask has distance 1). 0 outside the mask.

    method: 'auto' (OpenCV's precise transform, rounded, while distances are small enough for
    that to be exact; SciPy's integer form otherwise) or 'scipy' (always the integer form).
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=np.int64)
    box = half_open_bbox(mask)
    if method not in ("auto", "scipy"):
        raise ValueError(f"squared_edt_padded: method must be 'auto' or 'scipy', got '{method}'")
    if box is not None:
        r0, r1, c0, c1 = box
        out[r0:r1, c0:c1] = _squared_edt_box(mask, box, method)
    return out


def _deepest_pixel(mask: np.ndarray, clicked: Optional[np.ndarray],
                   box: Optional[Tuple[int, int, int, int]] = None) -> Tuple[int, int, int]:
    """(squared distance, y, x) of the first (row-major) pixel of maximal padded EDT in `mask`,
    clicked pixels excluded; (0, 0, 0) when there is none. Works on the mask's bounding `box`
    only (found if not given): row-major order inside the box is row-major order in the image.
    With numba, the compiled `kernels.clicks.deepest_pixel` (no full transform); otherwise,
    and as its reference in the tests, `_deepest_pixel_reference`."""
    if box is None:
        box = half_open_bbox(mask)
    if box is None:
        return 0, 0, 0
    if not jit.ENABLED:
        return _deepest_pixel_reference(mask, clicked, box)
    r0, r1, c0, c1 = box
    sq, y, x = deepest_pixel(mask[r0:r1, c0:c1],
                             None if clicked is None else clicked[r0:r1, c0:c1])
    return (sq, y + r0, x + c0) if sq > 0 else (0, 0, 0)


def _deepest_pixel_reference(mask: np.ndarray, clicked: Optional[np.ndarray],
                             box: Optional[Tuple[int, int, int, int]] = None
                             ) -> Tuple[int, int, int]:
    """`_deepest_pixel` from OpenCV's precise distance transform of the padded box.

    OpenCV's precise transform returns float32 distances within a few ulp (1e-4 below 500) of
    sqrt(d^2), d^2 an integer: equal d^2 may differ in the last bits, while different d^2 are
    at least 1e-3 apart. So the pixels of the largest d^2 are exactly those within
    `_TIE_TOLERANCE` of the float maximum, and the first of them is the rule's pixel.
    """
    if box is None:
        box = half_open_bbox(mask)
    if box is None:
        return 0, 0, 0
    r0, r1, c0, c1 = box
    padded, dist = _padded_box_dt(mask, box)
    peak = float(dist.max())
    if peak * peak > _CV2_EXACT_MAX_SQ:  # very large regions: the integer transform
        sq = _squared_edt_scipy(padded.view(bool))[1:-1, 1:-1]
        if clicked is not None:
            sq[clicked[r0:r1, c0:c1]] = 0
        flat = int(np.argmax(sq))
        y, x = divmod(flat, c1 - c0)
        return int(sq[y, x]), y + r0, x + c0
    y, x = divmod(int(np.argmax(dist >= peak - _TIE_TOLERANCE)), c1 - c0)
    if clicked is not None and clicked[y + r0, x + c0]:
        # exclude every clicked pixel and look again (only then: the first maximal pixel, if
        # not clicked, is the first unclicked one too)
        dist[clicked[r0:r1, c0:c1]] = 0
        peak = float(dist.max())
        y, x = divmod(int(np.argmax(dist >= peak - _TIE_TOLERANCE)), c1 - c0)
    return int(round(peak * peak)), y + r0, x + c0


def _depth_bound_sq(mask: Optional[np.ndarray], box: Optional[Tuple[int, int, int, int]]) -> float:
    """An upper bound of the largest squared padded EDT in `mask` (bounding `box`), without the
    transform. A pixel at distance d has every lattice point nearer than d inside the mask, at
    least pi (d - sqrt(2)/2)^2 of them, so d <= sqrt(area / pi) + sqrt(2)/2; and the rows and
    columns just outside the box are background, so d <= (min(box height, width) + 1) / 2."""
    if box is None:
        return 0.0
    r0, r1, c0, c1 = box
    area = np.count_nonzero(mask[r0:r1, c0:c1])
    bound = min(np.sqrt(area / np.pi) + np.sqrt(0.5), (min(r1 - r0, c1 - c0) + 1) / 2)
    return bound * bound * (1 + 1e-9)


def chamfer_dt_padded(mask: np.ndarray) -> np.ndarray:
    """OpenCV chamfer distance (DIST_L2, maskSize 5; float32 HxW) on the one-pixel-padded mask,
    ring removed: the training rule's distance (rule 53, rule 63)."""
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1, mode="constant", constant_values=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]


def next_click_evaluation(gt_mask: np.ndarray, pred_mask: np.ndarray,
                          clicked: Optional[np.ndarray] = None,
                          ignore_label: int = -1) -> Tuple[int, int, bool]:
    """The evaluation click (rules 6-11) as (y, x, is_positive).

    gt_mask: HxW, 1 object, `ignore_label` ignore, anything else background.
    pred_mask: HxW bool, the previous binary prediction. clicked: HxW bool of already clicked
    pixels (excluded as candidates, still part of the error regions).
    """
    gt_mask = np.asarray(gt_mask)
    return _next_click(gt_mask == 1, gt_mask != ignore_label, pred_mask, clicked)


def _error_window(region: np.ndarray, other: np.ndarray,
                  box: Optional[Tuple[int, int, int, int]], valid: Optional[np.ndarray]):
    """(region & ~other & valid over `box` (the region's bounding box), that error's own
    bounding box in the window, the window's origin (y, x)); (None, None, (0, 0)) without box."""
    if box is None:
        return None, None, (0, 0)
    r0, r1, c0, c1 = box
    error = region[r0:r1, c0:c1] & ~other[r0:r1, c0:c1]
    if valid is not None:
        error &= valid[r0:r1, c0:c1]
    return error, half_open_bbox(error), (r0, c0)


def _next_click(gt_positive: np.ndarray, valid: Optional[np.ndarray], pred_mask: np.ndarray,
                clicked: Optional[np.ndarray],
                gt_box: Optional[Tuple[int, int, int, int]] = None) -> Tuple[int, int, bool]:
    """Rules 6-11 on the error masks' bounding boxes. FN lies in the object's box (`gt_box`,
    found if not given), FP in the prediction's, so only those windows are combined and
    transformed; and the second transform is skipped when the first error's depth already
    exceeds the other's upper bound (`_depth_bound_sq`), which cannot change the click."""
    if gt_box is None:
        gt_box = half_open_bbox(gt_positive)
    fn, fn_box, fn_at = _error_window(gt_positive, pred_mask, gt_box, valid)
    fp, fp_box, fp_at = _error_window(pred_mask, gt_positive, half_open_bbox(pred_mask), valid)

    def deepest(mask, box, origin):
        if box is None:
            return 0, 0, 0
        oy, ox = origin
        sub = clicked[oy:oy + mask.shape[0], ox:ox + mask.shape[1]] if clicked is not None else None
        sq, y, x = _deepest_pixel(mask, sub, box)
        return sq, y + oy, x + ox

    bound_fn = _depth_bound_sq(fn, fn_box)
    bound_fp = _depth_bound_sq(fp, fp_box)
    if bound_fn > bound_fp:
        a, fy, fx = deepest(fn, fn_box, fn_at)
        if a > bound_fp:  # b <= bound_fp < a: positive, whatever b is
            return fy, fx, True
        b, py, px = deepest(fp, fp_box, fp_at)
    else:
        b, py, px = deepest(fp, fp_box, fp_at)
        if b >= bound_fn:  # a <= bound_fn <= b: negative (or no error at all)
            return (py, px, False) if b > 0 else (0, 0, False)
        a, fy, fx = deepest(fn, fn_box, fn_at)
    if a == 0 and b == 0:
        return 0, 0, False
    if a > b:  # negative on equality (rule 9)
        return fy, fx, True
    return py, px, False


def next_click_training(gt_mask: np.ndarray, pred_prob: np.ndarray,
                        rng: Optional[np.random.Generator] = None,
                        pred_thresh: float = PRED_THRESHOLD) -> Optional[Tuple[int, int, bool]]:
    """The iterative-training click (rule 53) as (y, x, is_positive), or None without candidate.

    gt_mask: HxW; object where gt > 0.5 (ignore counts as background). pred_prob: HxW
    probabilities. FN = gt & prob < thresh, FP = ~gt & prob > thresh; chamfer DT (maskSize 5) on
    the padded masks; positive iff max FN > max FP; uniform pick among pixels of the chosen map
    with d > max(maxFN, maxFP) / 2. `rng` is a numpy Generator (or RandomState).
    """
    if rng is None:
        rng = np.random.default_rng()
    gt_positive = np.asarray(gt_mask) > 0.5
    pred_prob = np.asarray(pred_prob)
    fn = gt_positive & (pred_prob < pred_thresh)
    fp = ~gt_positive & (pred_prob > pred_thresh)
    d_fn = chamfer_dt_padded(fn)
    d_fp = chamfer_dt_padded(fp)
    max_fn = float(d_fn.max())
    max_fp = float(d_fp.max())
    is_positive = max_fn > max_fp
    dist = d_fn if is_positive else d_fp
    candidates = np.argwhere(dist > max(max_fn, max_fp) / 2.0)
    if len(candidates) == 0:
        return None
    pick = rng.integers(len(candidates)) if hasattr(rng, "integers") else rng.randint(len(candidates))
    y, x = candidates[int(pick)]
    return int(y), int(x), bool(is_positive)


class Clicker:
    """RITM-style click simulator for one sample (rules 4-12).

    gt_mask: HxW ground truth (1 object, `ignore_label` ignore, other values background), or None
    when clicks are only added by hand. init_clicks: clicks to start from.
    """

    def __init__(self, gt_mask: Optional[np.ndarray] = None,
                 init_clicks: Optional[Sequence[Click]] = None,
                 ignore_label: int = -1, click_indx_offset: int = 0):
        self.click_indx_offset = click_indx_offset
        self.ignore_label = ignore_label
        if gt_mask is not None:
            self.gt_mask = np.asarray(gt_mask)
            if self.gt_mask.ndim != 2:
                raise ValueError(f"gt_mask must be HxW, got shape {self.gt_mask.shape}")
            # fixed per sample: computed once, not at every click
            self._gt_positive = self.gt_mask == 1
            self._gt_box = half_open_bbox(self._gt_positive)
            ignore = self.gt_mask == ignore_label
            self._valid = ~ignore if ignore.any() else None
        else:
            self.gt_mask = None
        self.reset_clicks()
        if init_clicks is not None:
            for click in init_clicks:
                self.add_click(click)

    def make_next_click(self, pred_mask: np.ndarray) -> Click:
        """Add and return the next simulated click given the previous binary prediction (HxW)."""
        if self.gt_mask is None:
            raise ValueError("Clicker.make_next_click needs a gt_mask")
        pred_mask = np.asarray(pred_mask)
        if pred_mask.shape != self.gt_mask.shape:
            raise ValueError(f"prediction shape {pred_mask.shape} differs from the gt mask shape "
                             f"{self.gt_mask.shape}")
        y, x, is_positive = _next_click(self._gt_positive, self._valid,
                                        pred_mask.astype(bool, copy=False), self._clicked,
                                        self._gt_box)
        click = Click(is_positive=is_positive, coords=(y, x))
        self.add_click(click)
        return self.clicks_list[-1]

    def object_and_valid_masks(self) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(object mask, valid mask or None when nothing is ignored), HxW bool, of the gt."""
        if self.gt_mask is None:
            raise ValueError("Clicker.object_and_valid_masks needs a gt_mask")
        return self._gt_positive, self._valid

    def add_click(self, click: Click) -> None:
        """Append a click; its index is the number of earlier clicks (plus the offset)."""
        click = click.copy(indx=self.click_indx_offset + len(self.clicks_list))
        self.clicks_list.append(click)
        if self._clicked is not None:
            y, x = int(round(click.coords[0])), int(round(click.coords[1]))
            if 0 <= y < self._clicked.shape[0] and 0 <= x < self._clicked.shape[1]:
                self._clicked[y, x] = True

    def get_clicks(self, clicks_limit: Optional[int] = None) -> List[Click]:
        """The clicks so far, or only the first `clicks_limit` of them."""
        if clicks_limit is None or clicks_limit < 0:
            return list(self.clicks_list)
        return self.clicks_list[:clicks_limit]

    def reset_clicks(self) -> None:
        self.clicks_list: List[Click] = []
        self._clicked = (np.zeros(self.gt_mask.shape, dtype=bool)
                         if self.gt_mask is not None else None)

    @property
    def num_pos_clicks(self) -> int:
        return sum(c.is_positive for c in self.clicks_list)

    @property
    def num_neg_clicks(self) -> int:
        return len(self.clicks_list) - self.num_pos_clicks

    def get_state(self) -> List[Click]:
        return list(self.clicks_list)

    def set_state(self, state: Sequence[Click]) -> None:
        self.reset_clicks()
        for click in state:
            self.add_click(click)

    def __len__(self) -> int:
        return len(self.clicks_list)
