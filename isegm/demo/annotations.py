"""Masks for people: COCO-style RLE, the coloured overlay, and the files saved per image.

Saved per image (`save_annotation`), beside each other in the output folder:
  <key>.png   the label map: 0 background, k = object k (uint8, uint16 past 255 objects)
  <key>.json  {"image", "width", "height", "model", "objects": [{"id", "clicks": [{"x", "y",
              "positive"}], "area", "bbox": [x, y, w, h], "segmentation": RLE}]}
RLE is COCO's *uncompressed* form: {"size": [h, w], "counts": [n0, n1, ...]}, run lengths over
the mask in column-major (Fortran) order, starting with a run of background (possibly 0);
pycocotools reads it with `frPyObjects`.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from .images import encode_png, write_atomic

# The overlay is an index map into OVERLAY_RGBA: 0 transparent, 1 contour (opaque white), 2 the
# current object (blue), 3.. finished object k at 3 + (k - 1) % len(PALETTE).
PALETTE = [(255, 160, 0), (0, 200, 255), (200, 90, 255), (120, 230, 60), (255, 90, 150),
           (250, 230, 60), (0, 150, 140), (160, 110, 60)]
FILL_ALPHA = 150
OVERLAY_RGBA = np.array([(0, 0, 0, 0), (255, 255, 255, 255), (30, 140, 255, FILL_ALPHA)]
                        + [c + (FILL_ALPHA,) for c in PALETTE], np.uint8)


def mask_to_rle(mask: np.ndarray) -> Dict[str, Any]:
    """COCO uncompressed RLE of an HxW bool mask: {'size': [h, w], 'counts': [...]}."""
    mask = np.asarray(mask, dtype=bool)
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """HxW bool mask from `mask_to_rle`'s form."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h}x{w} = {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def contour_of(mask: np.ndarray) -> np.ndarray:
    """HxW bool: the mask's pixels with a pixel outside it among their 8 neighbours (the image
    border counts as outside)."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    eroded = cv2.erode(mask.view(np.uint8), np.ones((3, 3), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & ~eroded.view(bool)


def objects_layer(objects: Sequence[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """HxW uint8 indices into `OVERLAY_RGBA` for finished object masks (HxW bool each),
    painted in order: fill, then the object's contour."""
    index = np.zeros(shape, np.uint8)
    for k, mask in enumerate(objects):
        index[mask] = 3 + k % len(PALETTE)
        index[contour_of(mask)] = 1
    return index


def overlay_indices(objects: Sequence[np.ndarray], current: Optional[np.ndarray],
                    shape: Tuple[int, int], layer: Optional[np.ndarray] = None) -> np.ndarray:
    """HxW uint8 indices into `OVERLAY_RGBA`: the finished objects (`objects_layer`, or the
    given `layer` of them, which is not modified) and the current object's mask over them."""
    index = objects_layer(objects, shape) if layer is None else layer.copy()
    if current is not None:
        index[current] = 2
        index[contour_of(current)] = 1
    return index


def overlay_png(index: np.ndarray) -> bytes:
    """A paletted PNG (with transparency) of an `overlay_indices` map: the browser decodes it
    straight to RGBA; 4x fewer bytes to compress than RGBA."""
    pil = Image.frombuffer("P", (index.shape[1], index.shape[0]),
                           np.ascontiguousarray(index, dtype=np.uint8).tobytes(), "raw", "P", 0, 1)
    pil.putpalette(OVERLAY_RGBA[:, :3].ravel().tolist())
    out = io.BytesIO()
    pil.save(out, "PNG", compress_level=1, transparency=OVERLAY_RGBA[:, 3].tobytes())
    return out.getvalue()


def render_overlay(objects: Sequence[np.ndarray], current: Optional[np.ndarray]) -> np.ndarray:
    """HxWx4 uint8 RGBA overlay (see `overlay_indices`). Needs at least one mask."""
    masks = list(objects) + ([current] if current is not None else [])
    if not masks:
        raise ValueError("render_overlay needs at least one mask (objects or current)")
    return OVERLAY_RGBA[overlay_indices(objects, current, masks[0].shape)]


def blend_overlay(image: np.ndarray, overlay: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    """HxWx3 uint8: `overlay` (HxWx4 RGBA) composited over `image` (HxWx3 RGB)."""
    alpha = overlay[..., 3:4].astype(np.float32) / 255.0 * opacity
    out = image.astype(np.float32) * (1 - alpha) + overlay[..., :3].astype(np.float32) * alpha
    return out.round().clip(0, 255).astype(np.uint8)


def draw_clicks(image: np.ndarray, clicks: Sequence[Dict[str, Any]]) -> np.ndarray:
    """A copy of `image` (HxWx3 RGB) with clicks ({'x', 'y', 'positive'}) drawn as disks,
    green positive, red negative, white rim."""
    out = image.copy()
    radius = max(3, int(round(0.008 * max(image.shape[:2]))))
    for click in clicks:
        center = (int(click["x"]), int(click["y"]))
        color = (40, 220, 40) if click["positive"] else (235, 30, 30)
        cv2.circle(out, center, radius, color, -1, cv2.LINE_AA)
        cv2.circle(out, center, radius, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def object_record(k: int, mask: np.ndarray, clicks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON record of object k (1-based): clicks, area, bbox [x, y, w, h], RLE."""
    ys, xs = np.nonzero(mask)
    bbox = ([int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
             int(ys.max() - ys.min() + 1)] if len(xs) else [0, 0, 0, 0])
    return {"id": k, "clicks": clicks, "area": int(len(xs)), "bbox": bbox,
            "segmentation": mask_to_rle(mask)}


def save_annotation(output_dir: Path, key: str, image_name: str, labels: np.ndarray,
                    objects: Sequence[Dict[str, Any]], model: str) -> List[Path]:
    """Write <key>.png (the label map) and <key>.json (records from `object_record`),
    atomically; returns the two paths."""
    output_dir = Path(output_dir)
    png = output_dir / f"{key}.png"
    meta = output_dir / f"{key}.json"
    record = {"image": image_name, "width": int(labels.shape[1]), "height": int(labels.shape[0]),
              "model": model, "label_map": png.name, "rle": "coco-uncompressed-column-major",
              "objects": list(objects)}
    write_atomic(png, encode_png(labels, compression=3))
    write_atomic(meta, json.dumps(record, indent=1).encode("utf-8"))
    return [png, meta]
