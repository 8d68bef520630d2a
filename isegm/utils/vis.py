"""Drawing: clicks, predictions and training dumps (RGB uint8 images), and the mIoU plot.

- `draw_prediction(image, probs, clicks, thresh, gt_mask)`: the evaluator's and the jobs'
  picture of one prediction (mask blended in, ground-truth contour, clicks).
- `training_visualization(batch, outputs)`: the trainer's row image with clicks | ground truth
  | coarse | refined | boundary.
- `plot_miou_curves(rows, output)`: mIoU against the number of clicks, one subplot per dataset.

Clicks are drawn by `draw_click` alone: green positive, red negative, a white rim.
"""
from __future__ import annotations

import textwrap
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np
import torch

POSITIVE_COLOR = (0, 220, 0)
NEGATIVE_COLOR = (230, 0, 0)
MASK_COLOR = (0, 120, 255)
GT_CONTOUR_COLOR = (255, 220, 0)


def draw_click(image: np.ndarray, y: float, x: float, is_positive: bool, radius: int) -> None:
    """Draw one click in place on an HxWx3 uint8 RGB image."""
    center = (int(round(x)), int(round(y)))
    cv2.circle(image, center, radius, POSITIVE_COLOR if is_positive else NEGATIVE_COLOR, -1)
    cv2.circle(image, center, radius, (255, 255, 255), 1)


def draw_points(image: np.ndarray, points: np.ndarray, radius: int = 3) -> np.ndarray:
    """Draw network clicks (2M, 3) (rows [0, M) positive; padding rows negative) on a copy of
    an HxWx3 uint8 RGB image."""
    out = image.copy()
    m = len(points) // 2
    for i, (y, x, _) in enumerate(points):
        if y >= 0:
            draw_click(out, y, x, i < m, radius)
    return out


def draw_prediction(image: np.ndarray, probs: np.ndarray, clicks: Sequence[Any], thresh: float,
                    gt_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """RGB uint8 image with the predicted mask (probs HxW > thresh) blended in and the clicks
    (`Click`s) drawn, optionally the ground-truth contour (gt_mask == 1) in yellow."""
    out = image.astype(np.float32).copy()
    mask = probs > thresh
    out[mask] = 0.55 * out[mask] + 0.45 * np.array(MASK_COLOR, np.float32)
    out = out.clip(0, 255).astype(np.uint8)
    if gt_mask is not None:
        contours, _ = cv2.findContours((gt_mask == 1).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, GT_CONTOUR_COLOR, 1)
    radius = max(3, int(round(0.008 * max(image.shape[:2]))))
    for click in clicks:
        draw_click(out, click.coords[0], click.coords[1], click.is_positive, radius)
    return out


def _to_rgb(prob: np.ndarray, height: int) -> np.ndarray:
    """HxW in [0, 1] (or 1/0/-1 targets, -1 shown grey) -> uint8 RGB resized to `height`."""
    prob = np.asarray(prob, dtype=np.float32)
    img = np.where(prob < 0, 0.5, prob)
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    if img.shape[0] != height:
        width = max(1, int(round(img.shape[1] * height / img.shape[0])))
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.repeat(img[:, :, None], 3, axis=2)


def training_visualization(batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor],
                           index: int = 0, focus_box: Optional[torch.Tensor] = None) -> np.ndarray:
    """One row HxW'x3 uint8 for sample `index`: image+clicks (focus box in yellow), gt, coarse
    prob, and, when the refiner ran, refined prob and boundary prob on the focus crop."""
    image = (batch["images"][index].detach().float().cpu().permute(1, 2, 0).numpy() * 255)
    image = np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))
    h = image.shape[0]
    image = draw_points(image, batch["points"][index].detach().cpu().numpy())
    if focus_box is not None:
        x1, y1, x2, y2 = [int(round(float(v))) for v in focus_box]
        cv2.rectangle(image, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), GT_CONTOUR_COLOR, 1)
    tiles = [image, _to_rgb(batch["instances"][index, 0].detach().cpu().numpy(), h)]
    coarse = outputs["instances"][index, 0].detach().float()
    tiles.append(_to_rgb(torch.sigmoid(coarse).cpu().numpy(), h))
    for key in ("refined", "boundary"):
        if key in outputs:
            tiles.append(_to_rgb(torch.sigmoid(outputs[key][index, 0].detach().float()).cpu().numpy(), h))
    sep = np.full((h, 2, 3), 255, dtype=np.uint8)
    row = []
    for tile in tiles:
        row += [tile, sep]
    return np.concatenate(row[:-1], axis=1)


def plot_miou_curves(rows: Sequence[dict[str, Any]], output: Path,
                     title: str = "mIoU vs. number of clicks") -> Path:
    """One subplot per dataset, one curve per model (mean over seeds, ± std band when several).
    The PNG is (500 x n_datasets) x 400 pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    datasets = list(OrderedDict.fromkeys(r["dataset"] for r in rows))
    if not datasets:
        raise ValueError("no results to plot")
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), dpi=100,
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in rows if r["dataset"] == dataset):
            mean = np.asarray(r["mIoU_curve"], dtype=np.float64)
            x = np.arange(1, len(mean) + 1)
            label = r["model"] + (f" ({r['seeds']} seeds)" if r.get("seeds", 1) > 1 else "")
            line, = ax.plot(x, mean, marker="o", markersize=3, label=label)
            std = np.asarray(r.get("mIoU_curve_std") or [], dtype=np.float64)
            if r.get("seeds", 1) > 1 and len(std) == len(mean):
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        samples = next(r["num_samples"] for r in rows if r["dataset"] == dataset)
        ax.set_title(f"{dataset} ({samples} samples)")
        ax.set_xlabel("number of clicks")
        ax.set_ylabel("mIoU")
        ax.set_ylim(0, 1)
        ax.set_xlim(1, max(len(r["mIoU_curve"]) for r in rows))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(textwrap.fill(title, width=60 * len(datasets)), fontsize=10)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
