"""The NoC evaluation loop (evaluation-protocol.md §2).

    clicks, ious, probs = evaluate_sample(image, gt_mask, predictor, max_iou_thr=0.9)
    all_ious, elapsed = evaluate_dataset(dataset, predictor, max_iou_thr=0.9)
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils.log import progress
from .clicker import Click, Clicker
from .utils import DEFAULT_MAX_CLICKS, masks_iou

PRED_THRESHOLD = 0.49

# callback(image, gt_mask, pred_probs, sample_id, click_index (0-based), clicks)
SampleCallback = Callable[[np.ndarray, np.ndarray, np.ndarray, Any, int, List[Click]], None]


def evaluate_sample(image: np.ndarray, gt_mask: np.ndarray, predictor, max_iou_thr: float,
                    pred_thr: float = PRED_THRESHOLD, min_clicks: int = 1,
                    max_clicks: int = DEFAULT_MAX_CLICKS, sample_id: Any = None,
                    callback: Optional[SampleCallback] = None,
                    stats: Optional[Dict[str, float]] = None
                    ) -> Tuple[List[Click], np.ndarray, np.ndarray]:
    """Simulate up to `max_clicks` clicks on one object (rule 13).

    image: HxWx3 uint8 RGB; gt_mask: HxW (1 object, -1 ignore). Stops once IoU >= max_iou_thr
    and at least `min_clicks` clicks were made. Returns (clicks, ious float32 (K,), last probs
    HxW). `stats`, if given, accumulates 'clicks', 'overhead_s' (simulator + IoU time) and
    'predictor_s' (time inside `get_prediction`).
    """
    clicker = Clicker(gt_mask=gt_mask)
    obj, valid = clicker.object_and_valid_masks()
    pred_mask = np.zeros(gt_mask.shape, dtype=bool)
    ious: List[float] = []
    pred_probs = np.zeros(gt_mask.shape, dtype=np.float32)
    overhead = 0.0
    predict_time = 0.0
    with torch.no_grad():
        predictor.set_image(image)
        for click_indx in range(max_clicks):
            start = time.perf_counter()
            clicker.make_next_click(pred_mask)
            overhead += time.perf_counter() - start
            start = time.perf_counter()
            pred_probs = predictor.get_prediction(clicker)
            predict_time += time.perf_counter() - start
            start = time.perf_counter()
            pred_mask = pred_probs > pred_thr
            iou = masks_iou(obj, valid, pred_mask)
            ious.append(iou)
            overhead += time.perf_counter() - start
            if callback is not None:
                callback(image, gt_mask, pred_probs, sample_id, click_indx, clicker.get_clicks())
            if iou >= max_iou_thr and click_indx + 1 >= min_clicks:
                break
    if stats is not None:
        stats["clicks"] = stats.get("clicks", 0) + len(ious)
        stats["overhead_s"] = stats.get("overhead_s", 0.0) + overhead
        stats["predictor_s"] = stats.get("predictor_s", 0.0) + predict_time
    return clicker.get_clicks(), np.array(ious, dtype=np.float32), pred_probs


def evaluate_dataset(dataset, predictor, indices: Optional[Sequence[int]] = None,
                     show_progress: bool = True, callback: Optional[SampleCallback] = None,
                     stats: Optional[Dict[str, float]] = None,
                     **kwargs) -> Tuple[List[np.ndarray], float]:
    """Evaluate every sample (object) of `dataset` (or `indices`); returns (per-sample IoU
    arrays, elapsed seconds). kwargs go to `evaluate_sample` (max_iou_thr, min_clicks, ...).
    `stats` accumulates 'clicks', 'overhead_s', 'predictor_s', 'model_s', 'elapsed_s' and
    'sample_ids' for reporting."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    all_ious: List[np.ndarray] = []
    sample_ids: List[Any] = []
    local: Dict[str, float] = {}
    model_time_start = getattr(predictor, "model_time", 0.0)
    name = getattr(dataset, "name", type(dataset).__name__)
    start = time.perf_counter()
    for index in progress(indices, desc=name, total=len(indices), disable=not show_progress):
        sample = dataset.get_sample(index)
        sample_id = sample.sample_id if getattr(sample, "sample_id", None) is not None else index
        _, ious, _ = evaluate_sample(sample.image, sample.gt_mask, predictor, sample_id=sample_id,
                                     callback=callback, stats=local, **kwargs)
        all_ious.append(ious)
        sample_ids.append(sample_id)
    elapsed = time.perf_counter() - start
    if stats is not None:
        stats["clicks"] = stats.get("clicks", 0) + local.get("clicks", 0)
        stats["overhead_s"] = stats.get("overhead_s", 0.0) + local.get("overhead_s", 0.0)
        stats["predictor_s"] = stats.get("predictor_s", 0.0) + local.get("predictor_s", 0.0)
        stats["model_s"] = stats.get("model_s", 0.0) + (getattr(predictor, "model_time", 0.0)
                                                        - model_time_start)
        stats["elapsed_s"] = stats.get("elapsed_s", 0.0) + elapsed
        stats.setdefault("sample_ids", []).extend(sample_ids)
    return all_ious, elapsed
