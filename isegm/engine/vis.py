"""Training image dumps: image with clicks | ground truth | coarse | refined | boundary."""
from __future__ import annotations

from typing import Mapping, Optional

import cv2
import numpy as np
import torch

POSITIVE_COLOR = (0, 220, 0)
NEGATIVE_COLOR = (230, 0, 0)


def draw_points(image: np.ndarray, points: np.ndarray, radius: int = 3) -> np.ndarray:
    """Draw clicks (2M, 3) on an HxWx3 uint8 RGB image: positive green, negative red."""
    out = image.copy()
    m = len(points) // 2
    for i, (y, x, _) in enumerate(points):
        if y < 0:
            continue
        color = POSITIVE_COLOR if i < m else NEGATIVE_COLOR
        cv2.circle(out, (int(round(x)), int(round(y))), radius, color, -1)
        cv2.circle(out, (int(round(x)), int(round(y))), radius, (255, 255, 255), 1)
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
        cv2.rectangle(image, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), (255, 220, 0), 1)
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
