"""What a checkpoint does click by click: IoU, predicted area against the object's, the target
crop's share of the image, and how large its IGA coefficients grew.

    .venv/bin/python scripts/inspect_clicks.py --checkpoint experiments/.../last_checkpoint.pth \
        --dataset GrabCut --samples 20 --clicks 5

Per click k (NoC protocol clicks, no early stop), over the first `--samples` objects:
    mIoU            mean IoU after click k
    area ratio      mean of (predicted pixels / object pixels): < 1 under-, > 1 over-segmentation
    crop share      mean of (target-crop area / image area) used for click k
and, for IGA models, the mean |a|, |b|, |c| (positive-click, negative-click and feedback terms)
per stage, the scale of the interaction embedding. A model that has only learnt "a blob around
each click" shows an area ratio far below 1 that falls further once the crop zooms in.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from isegm.data.io import DatasetError  # noqa: E402
from isegm.inference.evaluation import evaluate_sample  # noqa: E402
from isegm.inference.predictors import get_predictor, predictor_name_for_mode  # noqa: E402
from isegm.inference.utils import NO_EARLY_STOP_IOU  # noqa: E402
from isegm.jobs.noc import build_eval_dataset  # noqa: E402
from isegm.model import load_is_model  # noqa: E402
from isegm.utils.serialization import CheckpointError  # noqa: E402
from isegm.utils.config import ConfigError, ConfigPathError, load_config  # noqa: E402


def iga_summary(model: torch.nn.Module) -> list[str]:
    """One line per stage: mean |coefficient| of each IGA term over its blocks and heads."""
    stages: dict[str, dict[str, list[float]]] = {}
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("iga_pos", "iga_neg", "iga_feedback"):
            stage = next((p for p in name.split(".") if p.startswith("block")), "?")
            stages.setdefault(stage, {}).setdefault(leaf, []).extend(
                param.detach().abs().flatten().tolist())
    lines = []
    for stage, terms in stages.items():
        cells = "  ".join(f"{t[4:]} {np.mean(v):.3f}" for t, v in terms.items())
        lines.append(f"  {stage}: mean |coefficient|  {cells}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="inspect_clicks.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="accept a checkpoint that needs full unpickling, which can run code "
                        "stored in the file: only for files from a trusted source")
    p.add_argument("--dataset", default="GrabCut")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--config", default=None, help="configs.yml (default: the repository's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_is_model(args.checkpoint, "cpu", trust=args.trust_checkpoint)
        dataset = build_eval_dataset(args.dataset, load_config(args.config))
    except (CheckpointError, ConfigError, ConfigPathError, DatasetError, KeyError,
            FileNotFoundError) as e:
        print(f"inspect_clicks.py: error: {e}", file=sys.stderr)
        return 2
    predictor = get_predictor(predictor_name_for_mode("NoBRS", model), model, "cpu")
    ious, ratios, shares = [], [], []
    for index in range(min(args.samples, len(dataset))):
        sample = dataset.get_sample(index)
        gt = sample.gt_mask
        h, w = gt.shape
        crop_shares: list[float] = []
        area_ratios: list[float] = []

        def record(image, gt_mask, probs, sample_id, click_indx, clicks):
            y1, y2, x1, x2 = predictor.last_target_roi
            crop_shares.append((y2 - y1 + 1) * (x2 - x1 + 1) / float(h * w))
            area_ratios.append(float((probs > 0.49).sum()) / max(1.0, float((gt_mask == 1).sum())))

        _, sample_ious, _ = evaluate_sample(sample.image, gt, predictor, NO_EARLY_STOP_IOU,
                                            max_clicks=args.clicks, callback=record)
        ious.append(sample_ious)
        ratios.append(area_ratios)
        shares.append(crop_shares)
    ious, ratios, shares = (np.asarray(x, dtype=np.float64) for x in (ious, ratios, shares))
    print(f"{args.checkpoint}\n{args.dataset}, {len(ious)} objects, {args.clicks} clicks "
          f"({type(predictor).__name__}, target_crop_r {predictor.target_crop_r}, "
          f"infer_size {predictor.infer_size})\n")
    print("click    mIoU   area ratio (pred/object)   crop share of image")
    for k in range(ious.shape[1]):
        print(f"{k + 1:5d}   {ious[:, k].mean():.3f}   {np.median(ratios[:, k]):6.3f} (median)"
              f"            {shares[:, k].mean():.3f}")
    scale = getattr(getattr(model, "backbone", None), "interaction_scale", None)
    if scale is not None:
        print(f"\ninteraction embedding scale: {float(scale.detach()):.3f}")
    lines = iga_summary(model)
    print("IGA coefficients:" if lines else "IGA: off (no coefficients)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
