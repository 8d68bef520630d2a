"""Training-time interaction: iterative clicks (protocol rule 53) and refiner targets (spec §5).

    points = add_training_clicks(points, gt, prev_prob, t, rng)   # one click per sample at round t
    boxes = FocusBoxSampler()(gt, points, rng)                   # (B, 4) x1, y1, x2, y2
    crop, band = crop_refine_targets(gt, boxes, size=256)        # (B, 1, S, S) each
    rois = target_crop_rois(prev_prob, points, expand=1.4)       # the predictor's target crops
    images, gt, prev_prob, points = crop_to_rois(images, gt, prev_prob, points, rois)

The click rule itself lives in `isegm.inference.clicker.next_click_training`, shared with the
click simulator of the evaluation.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import nn

from isegm.engine.losses import boundary_band
from isegm.inference.clicker import Click, next_click_training
from isegm.inference.crops import Roi, object_roi
from isegm.inference.focus import PREV_MASK_THRESHOLD
from isegm.inference.resize import resize_bilinear
from isegm.inference.utils import get_bbox_from_mask
from isegm.model.ops import resize_coord


@torch.no_grad()
def add_training_clicks(points: torch.Tensor, gt: torch.Tensor, prev_prob: torch.Tensor, t: int,
                        rng: np.random.Generator) -> torch.Tensor:
    """Add the rule-53 click of round `t` (1-based) to every sample.

    points: (B, 2M, 3) rows (y, x, order), [0, M) positive, [M, 2M) negative, padding -1.
    gt: (B, 1, H, W) 1/0/-1 (ignore counts as background). prev_prob: (B, 1, H, W) probabilities.
    The click overwrites row M - t (positive) or 2M - t (negative) with (y, x, t); a sample
    without an error region gets no click. Returns a new tensor.
    """
    num_rows = points.shape[1]
    m = num_rows // 2
    if not 1 <= t <= m:
        raise ValueError(f"iterative round t={t} needs 1 <= t <= M={m} (max_num_points)")
    out = points.clone()
    gt_np = gt[:, 0].detach().float().cpu().numpy()
    prob_np = prev_prob[:, 0].detach().float().cpu().numpy()
    for b in range(points.shape[0]):
        click = next_click_training(gt_np[b], prob_np[b], rng)
        if click is None:
            continue
        y, x, is_positive = click
        row = m - t if is_positive else num_rows - t
        out[b, row] = torch.tensor([float(y), float(x), float(t)], dtype=out.dtype)
    return out


@torch.no_grad()
def target_crop_rois(prev_prob: torch.Tensor, points: torch.Tensor, expand: float,
                     min_crop_size: float = 10.0) -> list[Optional[Roi]]:
    """The predictor's target crop (protocol rule 31) of every sample, in its own frame.

    prev_prob: (B, 1, H, W) probabilities; points: (B, 2M, 3) as in `add_training_clicks`.
    Returns per sample the inclusive (rmin, rmax, cmin, cmax) of the previous mask
    (> `PREV_MASK_THRESHOLD`) united with the positive clicks, expanded by `expand` about its
    centre (at least `min_crop_size`) and clamped to the frame, as `IGLRPredictor` builds it
    from the previous prediction; None for a sample with an empty mask (the predictor then
    sees the whole image, i.e. no crop).
    """
    masks = (prev_prob[:, 0].detach().float().cpu() > PREV_MASK_THRESHOLD).numpy()
    pts = points.detach().cpu().numpy()
    m = pts.shape[1] // 2
    rois: list[Optional[Roi]] = []
    for b in range(masks.shape[0]):
        bbox = get_bbox_from_mask(masks[b])
        if bbox is None:
            rois.append(None)
            continue
        positive = [Click(True, (float(y), float(x))) for y, x, _ in pts[b, :m]
                    if y >= 0 and x >= 0]
        rois.append(object_roi(bbox, positive, masks.shape[1:], expand, min_crop_size))
    return rois


def resample_gt(gt: torch.Tensor, resample: Callable[[torch.Tensor], torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A 1/0/-1 ground truth (B, 1, H, W) through a linear resampling of its object and ignore
    planes (`resample`: (B, 2, H, W) -> (B, 2, h, w)), each thresholded at 0.5. Returns (object
    (B, 1, h, w) 1/0 in gt's dtype, ignore (B, 1, h, w) bool)."""
    planes = torch.cat([(gt > 0.5).to(gt.dtype), (gt == -1).to(gt.dtype)], dim=1)
    out = resample(planes) > 0.5
    return out[:, :1].to(gt.dtype), out[:, 1:]


@torch.no_grad()
def crop_to_rois(images: torch.Tensor, gt: torch.Tensor, prev_prob: torch.Tensor,
                 points: torch.Tensor, rois: list[Optional[Roi]]
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sample's inclusive `roi` resized back to the full frame, as the predictor resizes
    its target crop: image and previous probabilities bilinearly with align_corners=True
    (`resize_bilinear`), clicks moved where that resize moves their pixels (`resize_coord`,
    clicks outside the crop included, as `map_clicks` maps them), the ground truth (1/0/-1)
    through the same resize of its object and ignore planes thresholded at 0.5. A sample whose
    roi is None is left as it is. Returns new tensors (images, gt, prev_prob, points)."""
    images, gt, prev_prob, points = images.clone(), gt.clone(), prev_prob.clone(), points.clone()
    h, w = images.shape[-2:]
    for b, roi in enumerate(rois):
        if roi is None:
            continue
        r0, r1, c0, c1 = roi
        window = (slice(b, b + 1), slice(None), slice(r0, r1 + 1), slice(c0, c1 + 1))
        images[b] = resize_bilinear(images[window], (h, w))[0]
        prev_prob[b] = resize_bilinear(prev_prob[window], (h, w))[0]
        obj, ignore = resample_gt(gt[window], lambda planes: resize_bilinear(planes, (h, w)))
        gt[b] = torch.where(ignore, torch.full_like(obj, -1), obj)[0]
        rows = points[b]
        valid = rows.amax(dim=1) >= 0
        y = rows[valid, 0].tolist()
        x = rows[valid, 1].tolist()
        rows[valid, 0] = torch.tensor([resize_coord(v, r0, r1 - r0 + 1, h) for v in y],
                                      dtype=rows.dtype, device=rows.device)
        rows[valid, 1] = torch.tensor([resize_coord(v, c0, c1 - c0 + 1, w) for v in x],
                                      dtype=rows.dtype, device=rows.device)
    return images, gt, prev_prob, points


def last_click(points_b: np.ndarray, rng: np.random.Generator) -> Optional[Tuple[float, float]]:
    """(y, x) of the most recent click of one sample: the iterative click of the highest round,
    else the centre first click (order 0), else a random one of the sampled clicks."""
    valid = points_b[:, 0] >= 0
    if not valid.any():
        return None
    rows = points_b[valid]
    orders = rows[:, 2]
    iterative = (orders >= 1) & (orders < 100)
    if iterative.any():
        row = rows[iterative][np.argmax(orders[iterative])]
    elif (orders == 0).any():
        row = rows[orders == 0][0]
    else:
        row = rows[rng.integers(len(rows))]
    return float(row[0]), float(row[1])


CLICK_ROUND_BN_MODES = ("eval", "batch")


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of `module` (SyncBatchNorm included)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def batch_statistics_mode(module: nn.Module, momentum: Optional[float]) -> Iterator[None]:
    """`module` in eval mode (no dropout, no drop path) with its BatchNorm layers on the batch's
    statistics, updating their running statistics with `momentum` (0: left untouched; None: a
    plain average over the batches, as `reset_running_stats` then precise BN use it). The
    previous mode and momenta are restored on exit."""
    was_training = module.training
    norms = batch_norms(module)
    momenta = [m.momentum for m in norms]
    module.eval()
    for m in norms:
        m.train()
        m.momentum = momentum
    try:
        yield
    finally:
        for m, previous in zip(norms, momenta):
            m.momentum = previous
        module.train(was_training)


@contextlib.contextmanager
def click_round_mode(module: nn.Module, bn_mode: str = "eval") -> Iterator[None]:
    """The mode of the no-gradient click rounds: the module in eval mode (no dropout, no drop
    path), and BatchNorm either with its running statistics (`bn_mode='eval'`) or with the
    batch's statistics (`'batch'`; the running statistics are left untouched: momentum 0 for
    the duration). The previous mode is restored on exit."""
    if bn_mode not in CLICK_ROUND_BN_MODES:
        raise ValueError(f"click-round BN mode must be one of {CLICK_ROUND_BN_MODES}, "
                         f"got '{bn_mode}'")
    if bn_mode == "batch":
        with batch_statistics_mode(module, momentum=0.0):
            yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@dataclass
class FocusBoxSampler:
    """Focus boxes for refiner training, drawn as the predictor draws them (spec §5).

    With probability `object_prob` (and an object present): the whole object's box, each side
    grown by r ~ U(`object_scale_range`) about its centre (the predictor's first focus box is the
    coarse object's box x 1.4, and later ones are often as large). Otherwise a square around the
    object boundary near the last click: the centre is a boundary pixel (1-px band of the
    object) among those within `near_px` of the boundary pixel nearest to the last click,
    jittered by `center_jitter` x side; the side is `U(size_range) * max(object box h, w)`.
    Sides are at least `min_size` px and at most the image. Without an object (or clicks) the box
    is a square centred on the last click (or the image centre) with side
    `U(size_range) * max(H, W)`. Boxes are shifted inside the image, then clamped to it.
    """
    size_range: Tuple[float, float] = (0.3, 0.8)
    object_prob: float = 0.6
    object_scale_range: Tuple[float, float] = (1.1, 1.6)
    min_size: float = 16.0
    center_jitter: float = 0.1
    near_px: float = 8.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.object_prob <= 1.0:
            raise ValueError(f"FocusBoxSampler: object_prob must be in [0, 1], "
                             f"got {self.object_prob}")
        for name in ("size_range", "object_scale_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"FocusBoxSampler: {name} must be 0 < low <= high, "
                                 f"got {(lo, hi)}")

    def __call__(self, gt: torch.Tensor, points: torch.Tensor,
                 rng: np.random.Generator) -> torch.Tensor:
        """gt (B, 1, H, W), points (B, 2M, 3) -> boxes (B, 4) float (x1, y1, x2, y2) in pixels."""
        gt_np = (gt[:, 0].detach().cpu().numpy() > 0.5)
        pts = points.detach().cpu().numpy()
        boxes = [self.sample_one(gt_np[b], pts[b], rng) for b in range(gt_np.shape[0])]
        return torch.tensor(np.array(boxes), dtype=torch.float32, device=gt.device)

    def sample_one(self, mask: np.ndarray, points_b: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
        h, w = mask.shape
        click = last_click(points_b, rng)
        lo, hi = self.size_range
        ys, xs = np.nonzero(mask)
        whole_object = len(ys) > 0 and rng.random() < self.object_prob
        if whole_object:
            r = rng.uniform(*self.object_scale_range)
            obj_h, obj_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            side_h = float(np.clip(r * obj_h, min(self.min_size, h), h))
            side_w = float(np.clip(r * obj_w, min(self.min_size, w), w))
            cy = (ys.min() + ys.max()) / 2.0
            cx = (xs.min() + xs.max()) / 2.0
            return np.array([*self._fit(cx, side_w, w), *self._fit(cy, side_h, h)])[[0, 2, 1, 3]]
        if len(ys) == 0:
            cy, cx = click if click is not None else ((h - 1) / 2.0, (w - 1) / 2.0)
            side = rng.uniform(lo, hi) * max(h, w)
        else:
            extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
            side = rng.uniform(lo, hi) * extent
            by, bx = self._boundary_pixels(mask)
            if click is None:
                k = rng.integers(len(by))
            else:
                d = np.hypot(by - click[0], bx - click[1])
                near = np.flatnonzero(d <= d.min() + self.near_px)
                k = near[rng.integers(len(near))]
            cy, cx = float(by[k]), float(bx[k])
        side = float(np.clip(side, min(self.min_size, max(h, w)), max(h, w)))
        cy += rng.uniform(-self.center_jitter, self.center_jitter) * side
        cx += rng.uniform(-self.center_jitter, self.center_jitter) * side
        return np.array([*self._fit(cx, side, w), *self._fit(cy, side, h)])[[0, 2, 1, 3]]

    @staticmethod
    def _fit(center: float, side: float, limit: int) -> Tuple[float, float]:
        """[start, end] of length `side` around `center`, shifted inside [0, limit]."""
        start = center + 0.5 - side / 2.0
        start = min(max(start, 0.0), max(limit - side, 0.0))
        return start, min(start + side, float(limit))

    @staticmethod
    def _boundary_pixels(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        inner = 1.0 - torch.nn.functional.max_pool2d(1.0 - m, 3, stride=1, padding=1)
        edge = (m - inner)[0, 0].numpy() > 0
        if not edge.any():
            edge = mask
        return np.nonzero(edge)


@torch.no_grad()
def crop_refine_targets(gt: torch.Tensor, boxes: torch.Tensor, size: int,
                        band_ratio: float = 0.02) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ground truth of the refiner over the focus boxes, sampled like the model's image crops.

    gt: (B, 1, H, W) 1/0/-1; boxes: (B, 4) x1, y1, x2, y2 in pixels; size: refine_size S.
    Returns (instances_crop, boundary_crop), both (B, 1, S, S) with 1/0/-1: the object mask and the
    band dilate(gt) XOR erode(gt) of half-width max(1, round(band_ratio * S)); ignore stays -1.
    """
    from isegm.model.roi_sampling import roi_align
    obj, ignore = resample_gt(gt, lambda planes: roi_align(
        planes, boxes.to(gt.dtype), output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1,
        aligned=True))
    band = boundary_band(obj, max(1, int(round(band_ratio * size))))
    instances = torch.where(ignore, torch.full_like(obj, -1), obj)
    boundary = torch.where(ignore, torch.full_like(band, -1), band)
    return instances, boundary
