"""Metrics of the NoC protocol (evaluation-protocol.md §3) and small dataset-free helpers.

    iou = get_iou(gt_mask, pred_mask)                          # rule 14
    noc, nof = compute_noc_metric(all_ious, [0.8, 0.85, 0.9])  # rules 18, 20, 21
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_MAX_CLICKS = 20
NO_EARLY_STOP_IOU = 1.01  # tau_stop when the full N-click series is wanted (rule 15)


def get_iou(gt_mask: np.ndarray, pred_mask: np.ndarray, ignore_label: int = -1) -> float:
    """IoU of a binary prediction (HxW) against one object's ground truth (HxW, 1 object,
    `ignore_label` ignore). Ignore pixels count in neither term; computed in float64 (rule 14)."""
    gt_mask = np.asarray(gt_mask)
    pred_mask = np.asarray(pred_mask, dtype=bool)
    if gt_mask.shape != pred_mask.shape:
        raise ValueError(f"gt mask {gt_mask.shape} and prediction {pred_mask.shape} differ in shape")
    valid = gt_mask != ignore_label
    return masks_iou(gt_mask == 1, None if valid.all() else valid, pred_mask)


def masks_iou(obj: np.ndarray, valid: Optional[np.ndarray], pred_mask: np.ndarray) -> float:
    """`get_iou` from the object mask and the valid mask (None: every pixel counts), both HxW
    bool, computed once per sample by callers that score many predictions of one object."""
    if valid is None:
        intersection = np.count_nonzero(pred_mask & obj)
        union = np.count_nonzero(pred_mask | obj)
    else:
        intersection = np.count_nonzero(pred_mask & obj & valid)
        union = np.count_nonzero((pred_mask | obj) & valid)
    return float(np.float64(intersection) / np.float64(union)) if union > 0 else 0.0


def sample_noc(ious: Sequence[float], iou_thr: float, max_clicks: int = DEFAULT_MAX_CLICKS) -> int:
    """1-based index of the first IoU >= thr (float32 comparison, rule 18), else `max_clicks`."""
    arr = np.asarray(ious, dtype=np.float32)
    reached = arr >= np.float32(iou_thr)
    return int(np.argmax(reached)) + 1 if reached.any() else max_clicks


def compute_noc_metric(all_ious: Sequence[Sequence[float]], iou_thrs: Sequence[float],
                       max_clicks: int = DEFAULT_MAX_CLICKS) -> Tuple[List[float], List[int]]:
    """Mean NoC per threshold over samples and NoF per threshold (RITM's definition: samples
    whose NoC equals `max_clicks`, including a success exactly at the last click; rule 21)."""
    noc_list: List[float] = []
    over_max_list: List[int] = []
    for thr in iou_thrs:
        scores = np.array([sample_noc(ious, thr, max_clicks) for ious in all_ious], dtype=np.int64)
        noc_list.append(float(scores.mean()) if len(scores) else float("nan"))
        over_max_list.append(int((scores == max_clicks).sum()))
    return noc_list, over_max_list


def compute_strict_nof(all_ious: Sequence[Sequence[float]], iou_thr: float) -> int:
    """Samples that never reach `iou_thr` (the strict count; never larger than RITM's NoF)."""
    thr = np.float32(iou_thr)
    return int(sum(not (np.asarray(ious, dtype=np.float32) >= thr).any() for ious in all_ious))


def get_iou_thresholds(target_iou: float) -> List[float]:
    """NoC thresholds valid for an early stop at `target_iou` (rule 19): arange(0.8,
    min(0.95, target) + 0.001, 0.05), i.e. [0.8, 0.85, 0.9] for the default 0.90."""
    return np.arange(0.8, min(0.95, target_iou) + 0.001, 0.05).tolist()


def stop_iou(target_iou: float, full_series: bool, min_clicks: int = 1) -> float:
    """tau_stop of rule 15: max(0.8, target), or 1.01 when full series are requested and
    `min_clicks` <= 1."""
    if full_series and min_clicks <= 1:
        return NO_EARLY_STOP_IOU
    return max(0.8, target_iou)


def mean_iou_per_click(all_ious: Sequence[Sequence[float]]) -> np.ndarray:
    """mIoU@k for k = 1..L (float64 array, length L), after truncating every series to the
    shortest one (rule 22)."""
    if len(all_ious) == 0:
        return np.zeros(0)
    min_len = min(len(ious) for ious in all_ious)
    stacked = np.stack([np.asarray(ious, dtype=np.float32)[:min_len] for ious in all_ious])
    return stacked.astype(np.float64).mean(axis=0)


def summarize_ious(all_ious: Sequence[Sequence[float]], iou_thrs: Sequence[float],
                   max_clicks: int = DEFAULT_MAX_CLICKS) -> Dict[str, float]:
    """NoC@thr and NoF@thr keyed as 'NoC@85' / 'NoF@85' (integer percent), plus sample count."""
    noc, nof = compute_noc_metric(all_ious, iou_thrs, max_clicks)
    out: Dict[str, float] = {"num_samples": len(all_ious)}
    for thr, n, f in zip(iou_thrs, noc, nof):
        key = percent_key(thr)
        out[f"NoC@{key}"] = n
        out[f"NoF@{key}"] = f
    return out


def percent_key(thr: float) -> str:
    """0.9000000000000001 -> '90'; 0.875 -> '87.5'."""
    value = round(100 * thr, 4)
    return str(int(value)) if float(value).is_integer() else str(value)


def get_bbox_from_mask(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Inclusive (rmin, rmax, cmin, cmax) of a boolean HxW mask, or None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def half_open_bbox(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Half-open (r0, r1, c0, c1) of a boolean HxW mask (`get_bbox_from_mask` + 1 at the
    ends), or None if empty."""
    bbox = get_bbox_from_mask(mask)
    return None if bbox is None else (bbox[0], bbox[1] + 1, bbox[2], bbox[3] + 1)
