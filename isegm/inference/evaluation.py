"""The NoC evaluation loop (evaluation-protocol.md §2).

    clicks, ious, probs = evaluate_sample(image, gt_mask, predictor, max_iou_thr=0.9)
    all_ious, elapsed = evaluate_dataset(dataset, predictor, max_iou_thr=0.9)

With `skip_unreadable=True` (the evaluator's command line), a sample whose files fail to
decode (`DatasetError`, raised by the loaders naming the file) is logged, left out of the
results and listed in `stats['skipped']`; every other sample is evaluated.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..data.io import DatasetError
from ..utils.log import logger, progress
from .boundary import BoundaryScorer
from .clicker import Click, Clicker
from .utils import DEFAULT_MAX_CLICKS, masks_iou

PRED_THRESHOLD = 0.49

# callback(image, gt_mask, pred_probs, sample_id, click_index (0-based), clicks)
SampleCallback = Callable[[np.ndarray, np.ndarray, np.ndarray, Any, int, List[Click]], None]


def progressive_merge(prev_mask: np.ndarray, pred_mask: np.ndarray, click: Click) -> np.ndarray:
    """Rule 38: change `prev_mask` only by the connected component (8-connectivity) of
    prev XOR pred that holds the click: added where the click is positive, removed where it is
    negative. A click outside the XOR leaves `prev_mask` unchanged. HxW bool, a new array."""
    y, x = (int(c) for c in click.coords)
    diff = np.logical_xor(prev_mask, pred_mask)
    merged = prev_mask.copy()
    if not diff[y, x]:
        return merged
    _, labels = cv2.connectedComponents(diff.view(np.uint8), connectivity=8)
    component = labels == labels[y, x]
    if click.is_positive:
        merged |= component
    else:
        merged &= ~component
    return merged


def evaluate_sample(image: np.ndarray, gt_mask: np.ndarray, predictor, max_iou_thr: float,
                    pred_thr: float = PRED_THRESHOLD, min_clicks: int = 1,
                    max_clicks: int = DEFAULT_MAX_CLICKS, sample_id: Any = None,
                    callback: Optional[SampleCallback] = None,
                    stats: Optional[Dict[str, float]] = None,
                    init_mask: Optional[np.ndarray] = None,
                    merge: Optional[bool] = None,
                    boundary_metrics: bool = False,
                    record: Optional[Dict[str, Any]] = None,
                    ) -> Tuple[List[Click], np.ndarray, np.ndarray]:
    """Simulate up to `max_clicks` clicks on one object (rule 13).

    image: HxWx3 uint8 RGB; gt_mask: HxW (1 object, -1 ignore). Stops once IoU >= max_iou_thr
    and at least `min_clicks` clicks were made. Returns (clicks, ious float32 (K,), last probs
    HxW). `stats`, if given, accumulates 'clicks', 'overhead_s' (simulator + IoU time) and
    'predictor_s' (time inside `get_prediction`).

    Mask correction: `init_mask` (HxW, nonzero = object) is the session's starting mask: the
    first click is simulated on it and it is the predictor's previous mask at click 1.
    `merge` switches progressive merge (rule 38; default: on with an initial mask, off
    without): each prediction changes the mask only by the XOR component at the click, and the
    merged mask is what the simulator, the IoU and the predictor's next previous mask see.
    `record`, if given, receives 'init_iou' (IoU of the initial mask, or None) and, with
    `boundary_metrics`, 'biou' and 'assd' (float32 (K,), per click; see `boundary.py`).
    """
    clicker = Clicker(gt_mask=gt_mask)
    obj, valid = clicker.object_and_valid_masks()
    merge = init_mask is not None if merge is None else merge
    if init_mask is not None:
        init_mask = np.asarray(init_mask)
        if init_mask.shape != gt_mask.shape[:2]:
            raise ValueError(f"sample {sample_id!r}: initial mask of shape {init_mask.shape} for "
                             f"an image of shape {gt_mask.shape[:2]}")
        pred_mask = init_mask > 0
    else:
        pred_mask = np.zeros(gt_mask.shape, dtype=bool)
    scorer = BoundaryScorer(gt_mask) if boundary_metrics else None
    bious: List[float] = []
    assds: List[float] = []
    # what the predictor is told is its previous mask before this click (None: its own output)
    prev_for_predictor = pred_mask.astype(np.float32) if init_mask is not None else None
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
            pred_probs = predictor.get_prediction(clicker, prev_mask=prev_for_predictor)
            predict_time += time.perf_counter() - start
            start = time.perf_counter()
            if merge:
                pred_mask = progressive_merge(pred_mask, pred_probs > pred_thr,
                                              clicker.get_clicks()[-1])
                prev_for_predictor = pred_mask.astype(np.float32)
            else:
                pred_mask = pred_probs > pred_thr
                prev_for_predictor = None
            iou = masks_iou(obj, valid, pred_mask)
            ious.append(iou)
            if scorer is not None:
                biou, assd = scorer(pred_mask)
                bious.append(biou)
                assds.append(assd)
            overhead += time.perf_counter() - start
            if callback is not None:
                callback(image, gt_mask, pred_probs, sample_id, click_indx, clicker.get_clicks())
            if iou >= max_iou_thr and click_indx + 1 >= min_clicks:
                break
    if stats is not None:
        stats["clicks"] = stats.get("clicks", 0) + len(ious)
        stats["overhead_s"] = stats.get("overhead_s", 0.0) + overhead
        stats["predictor_s"] = stats.get("predictor_s", 0.0) + predict_time
    if record is not None:
        record["init_iou"] = (float(masks_iou(obj, valid, init_mask > 0))
                              if init_mask is not None else None)
        if scorer is not None:
            record["biou"] = np.array(bious, dtype=np.float32)
            record["assd"] = np.array(assds, dtype=np.float32)
    return clicker.get_clicks(), np.array(ious, dtype=np.float32), pred_probs


def evaluate_dataset(dataset, predictor, indices: Optional[Sequence[int]] = None,
                     show_progress: bool = True, callback: Optional[SampleCallback] = None,
                     stats: Optional[Dict[str, float]] = None,
                     init_masks: Optional[Callable[[Any], np.ndarray]] = None,
                     skip_unreadable: bool = False,
                     **kwargs) -> Tuple[List[np.ndarray], float]:
    """Evaluate every sample (object) of `dataset` (or `indices`); returns (per-sample IoU
    arrays, elapsed seconds). kwargs go to `evaluate_sample` (max_iou_thr, min_clicks, merge,
    boundary_metrics, ...). `stats` accumulates 'clicks', 'overhead_s', 'predictor_s',
    'model_s', 'elapsed_s' and 'sample_ids' for reporting, and per sample 'init_iou' (with
    initial masks) and 'biou' / 'assd' arrays (with `boundary_metrics=True`).

    `skip_unreadable`: a `DatasetError` while reading a sample (a file that does not decode, a
    mask of another size) skips that sample with a warning instead of stopping; the skipped
    samples go to `stats['skipped']` as {'index', 'file', 'error'} dicts (`file`: the sample's
    image, '' for datasets without files). Without it the error propagates.

    Initial masks (mask correction): `init_masks(sample)` if given (e.g. `FolderInitMasks`),
    else the sample's own `init_mask` when its dataset has one (DAVIS-585), else none.
    """
    indices = list(range(len(dataset))) if indices is None else list(indices)
    all_ious: List[np.ndarray] = []
    sample_ids: List[Any] = []
    records: Dict[str, list] = {"init_iou": [], "biou": [], "assd": []}
    skipped: List[Dict[str, Any]] = []
    local: Dict[str, float] = {}
    model_time_start = getattr(predictor, "model_time", 0.0)
    name = getattr(dataset, "name", type(dataset).__name__)
    start = time.perf_counter()
    for index in progress(indices, desc=name, total=len(indices), disable=not show_progress):
        try:
            sample = dataset.get_sample(index)
            init_mask = init_masks(sample) if init_masks is not None \
                else getattr(sample, "init_mask", None)
        except DatasetError as e:
            if not skip_unreadable:
                raise
            files = dataset.sample_files(index) if hasattr(dataset, "sample_files") else None
            skipped.append({"index": int(index), "file": str(files[0]) if files else "",
                            "error": str(e)})
            logger.warning("%s: sample %d skipped: %s", name, index, e)
            continue
        sample_id = sample.sample_id if getattr(sample, "sample_id", None) is not None else index
        record: Dict[str, Any] = {}
        _, ious, _ = evaluate_sample(sample.image, sample.gt_mask, predictor, sample_id=sample_id,
                                     callback=callback, stats=local, init_mask=init_mask,
                                     record=record, **kwargs)
        all_ious.append(ious)
        sample_ids.append(sample_id)
        for key, values in records.items():
            if record.get(key) is not None:
                values.append(record[key])
    elapsed = time.perf_counter() - start
    if stats is not None:
        stats["clicks"] = stats.get("clicks", 0) + local.get("clicks", 0)
        stats["overhead_s"] = stats.get("overhead_s", 0.0) + local.get("overhead_s", 0.0)
        stats["predictor_s"] = stats.get("predictor_s", 0.0) + local.get("predictor_s", 0.0)
        stats["model_s"] = stats.get("model_s", 0.0) + (getattr(predictor, "model_time", 0.0)
                                                        - model_time_start)
        stats["elapsed_s"] = stats.get("elapsed_s", 0.0) + elapsed
        stats.setdefault("sample_ids", []).extend(sample_ids)
        stats.setdefault("skipped", []).extend(skipped)
        for key, values in records.items():
            if values:
                stats.setdefault(key, []).extend(values)
    return all_ious, elapsed
