"""Training-time click sampling (evaluation-protocol.md §7, rules 48-52).

    sampler = MultiPointSampler(max_num_points=24, prob_gamma=0.8, first_click_center=True)
    sampler.sample_object(sample, rng)   # chooses the target object(s) of a DSample
    gt = sampler.selected_mask           # HxW, 1/0/-1 (float32 in [0, 1] with soft_targets)
    points = sampler.sample_points(rng)  # (2M, 3) float32: M positive rows, then M negative rows

Each row is (y, x, order): order 0 for the centre first click, 100 for a random click; padding
rows are (-1, -1, -1).
"""
from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np

from isegm.data.sample import DSample

MaskChoice = list  # [(mask, prob), ...]: a mixture, one mask drawn per click
_KERNEL = np.ones((3, 3), np.uint8)


def generate_probs(n: int, gamma: float) -> np.ndarray:
    """probs_i proportional to gamma**i for i < n (rule 49), shape (n,)."""
    probs = gamma ** np.arange(n, dtype=np.float64)
    return probs / probs.sum()


def center_click_candidates(mask: np.ndarray, k: float = 1.7, full_prob: float = 0.0,
                            rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """(K, 2) pixels deep inside `mask`: {D > max D / k}, D the EDT of the zero-padded mask.

    With probability `full_prob` every object pixel is a candidate. With k <= 0 a single pixel
    is drawn with probability proportional to D.
    """
    rng = rng if rng is not None else np.random.default_rng()
    if full_prob > 0 and rng.random() < full_prob:
        return np.argwhere(mask)
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]
    if k > 0:
        return np.argwhere(dist > dist.max() / k)
    flat = dist.ravel().astype(np.float64)
    if flat.sum() <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    index = rng.choice(flat.size, p=flat / flat.sum())
    return np.array([np.unravel_index(index, dist.shape)])


class MultiPointSampler:
    """RITM's multi-point sampler: positives in the object, negatives by strategy (rules 49-52).

    Args:
        max_num_points: M, the rows per sign.
        prob_gamma: gamma of the count distributions (rule 49).
        expand_ratio: border band width is ceil(expand_ratio * sqrt(area)) dilations.
        positive_erode_prob / positive_erode_iters: erode positive masks (3x3) before drawing.
        negative_bg_prob / negative_other_prob / negative_border_prob: strategy probabilities.
        merge_objects_prob / max_num_merged_objects: union of several roots as one target.
        use_hierarchy: descend the object tree (COCO+LVIS parts) to pick the target.
        soft_targets: `selected_mask` is float32 in [0, 1] from `get_soft_object_mask`.
        first_click_center: the first positive is drawn deep inside (order 0).
        only_one_first_click: with several positive masks, keep only the first's first click.
        sfc_inner_k / sfc_full_inner_prob: parameters of `center_click_candidates`.
    """

    neg_strategies = ('bg', 'other', 'border')

    def __init__(self, max_num_points: int, prob_gamma: float = 0.7, expand_ratio: float = 0.1,
                 positive_erode_prob: float = 0.9, positive_erode_iters: int = 3,
                 negative_bg_prob: float = 0.1, negative_other_prob: float = 0.4,
                 negative_border_prob: float = 0.5, merge_objects_prob: float = 0.0,
                 max_num_merged_objects: int = 2, use_hierarchy: bool = False,
                 soft_targets: bool = False, first_click_center: bool = False,
                 only_one_first_click: bool = False, sfc_inner_k: float = 1.7,
                 sfc_full_inner_prob: float = 0.0):
        if max_num_points < 1:
            raise ValueError(f"MultiPointSampler: max_num_points must be >= 1, got {max_num_points}")
        strategy_probs = np.array([negative_bg_prob, negative_other_prob, negative_border_prob])
        if np.any(strategy_probs < 0) or not np.isclose(strategy_probs.sum(), 1.0):
            raise ValueError("MultiPointSampler: negative_bg_prob + negative_other_prob + "
                             f"negative_border_prob must be 1, got {strategy_probs.tolist()}")
        self.max_num_points = max_num_points
        self.prob_gamma = prob_gamma
        self.expand_ratio = expand_ratio
        self.positive_erode_prob = positive_erode_prob
        self.positive_erode_iters = positive_erode_iters
        self.neg_strategies_prob = strategy_probs.tolist()
        self.merge_objects_prob = merge_objects_prob
        self.max_num_merged_objects = max_num_merged_objects
        self.use_hierarchy = use_hierarchy
        self.soft_targets = soft_targets
        self.first_click_center = first_click_center
        self.only_one_first_click = only_one_first_click
        self.sfc_inner_k = sfc_inner_k
        self.sfc_full_inner_prob = sfc_full_inner_prob
        self._pos_probs = generate_probs(max_num_points, prob_gamma)
        self._neg_probs = generate_probs(max_num_points + 1, prob_gamma)
        self._rng = np.random.default_rng()
        self.selected_mask: Optional[np.ndarray] = None
        self._pos_masks: list[np.ndarray] = []
        self._neg_masks: dict[str, Union[np.ndarray, list]] = {}

    # --- object selection ----------------------------------------------------------------------
    def sample_object(self, sample: DSample, rng: Optional[np.random.Generator] = None) -> None:
        """Choose the target of `sample` (rule 50) and prepare positive and negative masks."""
        if rng is not None:
            self._rng = rng
        rng = self._rng
        if len(sample) == 0:
            bg = sample.get_background_mask()
            self.selected_mask = np.zeros(bg.shape, dtype=np.float32)
            self._pos_masks = []
            self._neg_masks = {'bg': bg, 'other': bg, 'border': bg, 'required': []}
            return
        roots = sample.root_objects
        if len(roots) > 1 and rng.random() < self.merge_objects_prob:
            hi = min(len(roots), self.max_num_merged_objects)
            count = int(rng.integers(2, hi + 1))
            chosen = [roots[i] for i in rng.choice(len(roots), size=count, replace=False)]
        else:
            chosen = [roots[int(rng.integers(len(roots)))]]

        gt_mask = None
        pos_segments: list[np.ndarray] = []
        neg_segments: list[np.ndarray] = []
        for obj_id in chosen:
            obj_gt, obj_pos, obj_neg = self._sample_from_hierarchy(sample, obj_id)
            gt_mask = obj_gt if gt_mask is None else np.maximum(gt_mask, obj_gt)
            pos_segments.extend(obj_pos)
            neg_segments.extend(obj_neg)
        self.selected_mask = gt_mask
        self._pos_masks = [self._positive_erode(m) for m in pos_segments]
        required_neg = [self._positive_erode(m) for m in neg_segments]

        binary_gt = gt_mask > 0.5 if self.soft_targets else gt_mask > 0
        bg = ~binary_gt
        if len(chosen) >= len(sample):
            other = bg
        else:
            other = ~sample.get_background_mask() & bg
        self._neg_masks = {'bg': bg, 'other': other, 'border': self._border_mask(binary_gt),
                           'required': required_neg}

    def _sample_from_hierarchy(self, sample: DSample, obj_id: int):
        if self.soft_targets:
            gt = sample.get_soft_object_mask(obj_id)
        else:
            gt = sample.get_object_mask(obj_id)
        if not self.use_hierarchy:
            return gt, [gt > 0], []
        rng = self._rng
        tree = sample.objects
        node = obj_id
        while tree[node]['children'] and rng.random() >= 0.5:
            children = tree[node]['children']
            node = children[int(rng.integers(len(children)))]
        info = tree[node]
        node_mask = sample.get_object_mask(node) > 0
        gt = (sample.get_soft_object_mask(node) if self.soft_targets
              else sample.get_object_mask(node))
        pos = node_mask.copy()
        negatives = []
        if info['parent'] is not None and info['parent'] in tree:
            negatives.append((sample.get_object_mask(info['parent']) > 0) & ~node_mask)
        node_area = max(sample.get_area(node), 1)
        for child in info['children']:
            if sample.get_area(child) / node_area < 0.10:
                pos &= ~(sample.get_object_mask(child) > 0)
        if info['children']:
            children = info['children']
            num_disabled = int(rng.integers(0, min(len(children), 3) + 1))
            for k in rng.choice(len(children), size=num_disabled, replace=False):
                child_mask = sample.get_object_mask(children[int(k)]) > 0
                pos &= ~child_mask
                if self.soft_targets:
                    gt = np.minimum(gt, 1.0 - sample.get_soft_object_mask(children[int(k)]))
                else:
                    gt = gt.copy()
                    gt[child_mask] = 0
                negatives.append(child_mask)
        return gt, [pos], negatives

    def _positive_erode(self, mask: np.ndarray) -> np.ndarray:
        if self._rng.random() >= self.positive_erode_prob:
            return mask
        eroded = cv2.erode(mask.astype(np.uint8), _KERNEL, iterations=self.positive_erode_iters)
        eroded = eroded.astype(bool)
        return eroded if np.count_nonzero(eroded) > 10 else mask

    def _border_mask(self, mask: np.ndarray) -> np.ndarray:
        iters = int(np.ceil(self.expand_ratio * np.sqrt(np.count_nonzero(mask))))
        expanded = cv2.dilate(mask.astype(np.uint8), _KERNEL, iterations=iters).astype(bool)
        return expanded & ~mask

    # --- clicks --------------------------------------------------------------------------------
    def sample_points(self, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """(2M, 3) float32 clicks for the object chosen by the last `sample_object` call."""
        if self.selected_mask is None:
            raise RuntimeError("MultiPointSampler.sample_points: call sample_object first")
        if rng is not None:
            self._rng = rng
        pos = self._multi_mask_points(self._pos_masks, [False] * len(self._pos_masks),
                                      with_first_click=self.first_click_center)
        mixture = [(self._neg_masks[k], p) for k, p in zip(self.neg_strategies,
                                                            self.neg_strategies_prob)]
        required = self._neg_masks['required']
        neg = self._multi_mask_points(required + [mixture], [False] * len(required) + [True])
        return np.array(pos + neg, dtype=np.float32)

    def _multi_mask_points(self, masks: list, is_negative: list[bool],
                           with_first_click: bool = False) -> list[list[int]]:
        masks = masks[:self.max_num_points]
        per_mask = [self._draw(m, neg, with_first_click) for m, neg in zip(masks, is_negative)]
        per_mask = [p for p in per_mask if p]
        points: list[list[int]] = []
        if len(per_mask) == 1:
            points = per_mask[0]
        elif len(per_mask) > 1:
            if self.only_one_first_click:
                per_mask = per_mask[:1]
            points = [p[0] for p in per_mask]
            union: list = []
            for m in masks:
                if isinstance(m, list):
                    union.extend((sub, prob / len(masks)) for sub, prob in m)
                else:
                    union.append((m, 1.0 / len(masks)))
            extra = self._draw(union, True, False)
            room = self.max_num_points - len(points)
            if len(extra) > room:
                keep = self._rng.choice(len(extra), size=room, replace=False)
                extra = [extra[int(i)] for i in keep]
            points.extend(extra)
        points = points[:self.max_num_points]
        points.extend([[-1, -1, -1]] * (self.max_num_points - len(points)))
        return points

    def _draw(self, mask: Union[np.ndarray, MaskChoice], is_negative: bool,
              with_first_click: bool) -> list[list[int]]:
        """Draw a count (rule 49) of uniform pixels of `mask`, or per click one mask of a mixture."""
        rng = self._rng
        if is_negative:
            num = int(rng.choice(self.max_num_points + 1, p=self._neg_probs))
        else:
            num = 1 + int(rng.choice(self.max_num_points, p=self._pos_probs))
        if isinstance(mask, list):
            probs = np.array([p for _, p in mask], dtype=np.float64)
            probs = probs / probs.sum()
            candidates = [None] * len(mask)
        else:
            cand = np.argwhere(mask)
        points = []
        for j in range(num):
            first = with_first_click and j == 0 and not isinstance(mask, list)
            if first:
                pix = center_click_candidates(mask, self.sfc_inner_k, self.sfc_full_inner_prob, rng)
            elif isinstance(mask, list):
                k = int(rng.choice(len(mask), p=probs))
                if candidates[k] is None:
                    candidates[k] = np.argwhere(mask[k][0])
                pix = candidates[k]
            else:
                pix = cand
            if len(pix) > 0:
                y, x = pix[int(rng.integers(len(pix)))]
                points.append([int(y), int(x), 0 if first else 100])
        return points
