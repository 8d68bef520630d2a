"""Measure the evaluator: seconds per click split into model time and evaluator overhead, and
the classical (OpenCV GrabCut) predictor's NoC on GrabCut.

    python scripts/benchmark_eval.py --samples 5 --clicks 5 --output bench.json

Part 1: IGLR predictor (flip averaging on, as in evaluation) with freshly initialised B0-S2 and
B3-S2 models at infer/refine size 256 on the first `--samples` GrabCut images, `--clicks`
clicks each (no early stop). Per click: model (network forward passes), the refiner's ROI
sampling (roi_align of image, coarse logits and feature), other predictor work (target crop,
resampling, focus box, paste), simulator + IoU, and the rest (image loading, set_image). On a
shared CPU use `--threads 1`: oversubscribed OpenMP threads inflate every small op. Part 2: `cv_grabcut` on all GrabCut samples, NoC@85/90 and NoF (20 clicks).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from isegm.data.datasets import get_dataset  # noqa: E402
from isegm.inference.evaluation import evaluate_dataset  # noqa: E402
from isegm.inference.predictors import get_predictor  # noqa: E402
from isegm.inference.utils import compute_noc_metric, compute_strict_nof, get_iou_thresholds  # noqa: E402
from isegm.utils.config import load_config  # noqa: E402
from isegm.utils.device import select_device  # noqa: E402


def time_model(backbone: str, dataset, samples: int, clicks: int, device: torch.device) -> dict:
    from isegm.model import IGLRModel
    torch.manual_seed(0)
    model = IGLRModel(backbone, pipeline="s2", infer_size=256, refine_size=256)
    predictor = get_predictor("iglr", model, device, with_flip=True)
    # warm-up (allocator, lazy initialisation) on one sample, not counted
    evaluate_dataset(dataset, predictor, indices=[0], show_progress=False, max_iou_thr=1.01,
                     max_clicks=2)
    predictor.model_time = 0.0
    predictor.sampling_time = 0.0
    stats: dict = {}
    evaluate_dataset(dataset, predictor, indices=range(samples), show_progress=False,
                     stats=stats, max_iou_thr=1.01, max_clicks=clicks)
    n = stats["clicks"]
    model_s = stats["model_s"] / n
    sampling = predictor.sampling_time / n
    predictor_overhead = (stats["predictor_s"] - stats["model_s"]) / n - sampling
    simulator = stats["overhead_s"] / n
    total = stats["elapsed_s"] / n
    rest = total - model_s - sampling - predictor_overhead - simulator
    return {"backbone": backbone, "clicks": n, "total_s_per_click": total,
            "model_s_per_click": model_s, "roi_sampling_s_per_click": sampling,
            "predictor_overhead_s_per_click": predictor_overhead,
            "simulator_iou_s_per_click": simulator, "other_s_per_click": rest,
            "overhead_fraction": (total - model_s) / total,
            "overhead_fraction_without_roi_sampling": (total - model_s - sampling) / total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--backbones", type=str, default="mit_b0,mit_b3")
    parser.add_argument("--skip-classical", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--output", type=str, default=None, help="JSON file for the figures")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(cpu=args.cpu)
    dataset = get_dataset("GrabCut", load_config())
    result: dict = {"device": str(device), "threads": torch.get_num_threads(), "timing": []}
    for backbone in [b for b in args.backbones.split(",") if b]:
        row = time_model(backbone, dataset, args.samples, args.clicks, device)
        result["timing"].append(row)
        print(f"{backbone}-S2: {row['total_s_per_click']:.3f} s/click = model "
              f"{row['model_s_per_click']:.3f} + refiner ROI sampling "
              f"{row['roi_sampling_s_per_click']:.4f} + other crops/resampling "
              f"{row['predictor_overhead_s_per_click']:.4f} + simulator/IoU "
              f"{row['simulator_iou_s_per_click']:.4f} + other {row['other_s_per_click']:.4f} "
              f"(overhead {100 * row['overhead_fraction']:.1f}%, "
              f"{100 * row['overhead_fraction_without_roi_sampling']:.1f}% without ROI sampling)",
              flush=True)
    if not args.skip_classical:
        start = time.perf_counter()
        stats: dict = {}
        all_ious, _ = evaluate_dataset(dataset, get_predictor("cv_grabcut"), show_progress=False,
                                       stats=stats, max_iou_thr=0.9, max_clicks=20)
        thrs = get_iou_thresholds(0.9)
        noc, nof = compute_noc_metric(all_ious, thrs, 20)
        result["classical"] = {
            "predictor": "cv_grabcut", "dataset": "GrabCut", "num_samples": len(all_ious),
            "NoC@80": noc[0], "NoC@85": noc[1], "NoC@90": noc[2], "NoF@85": nof[1],
            "NoF@90": nof[2], "strict_NoF@90": compute_strict_nof(all_ious, 0.9),
            "spc_s": (time.perf_counter() - start) / stats["clicks"]}
        print(f"cv_grabcut on GrabCut ({len(all_ious)} samples): NoC@80 {noc[0]:.2f}, NoC@85 "
              f"{noc[1]:.2f}, NoC@90 {noc[2]:.2f}, NoF@85 {nof[1]}, NoF@90 {nof[2]}")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
