"""A procedurally generated dataset: the built-in default for tests and the main job.

    train = SyntheticDataset(num_samples=2000, split='train')   # several objects per sample
    val = SyntheticDataset(num_samples=100, split='val')        # one object per sample (gt_mask)

Sample i depends only on (seed, split, i): its generator is seeded with that triple, so the
order of access does not matter. Backgrounds mix smoothed colour noise, a colour gradient,
stripes and fine grain. Objects (ellipses, convex polygons, concave stars, thin bars and crosses,
rings, shapes with holes) each get their own colour and texture and are painted in order, so a
later object occludes earlier ones; an object's mask is its visible part, exactly.
"""
from __future__ import annotations

from typing import Any, Optional

import cv2
import numpy as np

from isegm.data.base import ISDataset
from isegm.data.sample import DSample

SHAPES = ('ellipse', 'polygon', 'star', 'bar', 'cross', 'ring', 'holed')
_SPLIT_CODES = {'train': 0, 'val': 1}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
    """(h, w, channels) float32 in about [0, 1]: bicubic upsampling of a coarse random grid."""
    grid = rng.random((cells, cells, channels), dtype=np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels)


def _stripes(h: int, w: int, period: float, angle: float, phase: float) -> np.ndarray:
    """(h, w) float32 in [-1, 1]: sin(2 pi (x cos a + y sin a) / period + phase).

    Separable form sin(u + v) = sin u cos v + cos u sin v: two outer products of 1D waves.
    """
    k = 2 * np.pi / period
    u = (k * np.cos(angle) * np.arange(w) + phase).astype(np.float32)
    v = (k * np.sin(angle) * np.arange(h)).astype(np.float32)
    return np.cos(v)[:, None] * np.sin(u)[None, :] + np.sin(v)[:, None] * np.cos(u)[None, :]


def make_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 in about [0, 255]: gradient + smoothed colour noise + stripes + grain.

    The smooth parts are built on a coarse grid and upsampled once, so this costs ~1 ms at 320^2.
    """
    cells = int(rng.integers(3, 9))
    c0, c1 = rng.uniform(30, 225, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    g = np.linspace(-1, 1, cells, dtype=np.float32)
    t = (g[None, :] * np.cos(angle) + g[:, None] * np.sin(angle)) * 0.5 + 0.5
    coarse = c0 + (c1 - c0) * t[:, :, None]
    coarse += (rng.random((cells, cells, 3), dtype=np.float32) - 0.5) * rng.uniform(40, 110)
    image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.6:
        stripes = _stripes(h, w, rng.uniform(6, 40), rng.uniform(0, np.pi), rng.uniform(0, 6.3))
        amp = rng.uniform(5, 25, size=3).astype(np.float32)
        image += stripes[:, :, None] * amp
    grain = rng.standard_normal((h // 2 + 1, w // 2 + 1), dtype=np.float32) * rng.uniform(2, 8)
    grain = cv2.resize(grain, ((w // 2 + 1) * 2, (h // 2 + 1) * 2), interpolation=cv2.INTER_NEAREST)
    image += grain[:h, :w, None]
    return image


def draw_shape(rng: np.random.Generator, kind: str, h: int, w: int, cy: float, cx: float,
               r: float) -> np.ndarray:
    """(h, w) uint8 0/1 mask of one shape of size about r around (cy, cx)."""
    mask = np.zeros((h, w), dtype=np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    center = (int(round(cx)), int(round(cy)))

    def polygon(radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
        pts = np.stack([cx + radii * np.cos(angles + angle), cy + radii * np.sin(angles + angle)], 1)
        return np.round(pts).astype(np.int32)

    def bar(length: float, thick: float, theta: float, ox: float = 0.0, oy: float = 0.0) -> None:
        d = np.array([np.cos(theta), np.sin(theta)])
        n = np.array([-d[1], d[0]])
        c = np.array([cx + ox, cy + oy])
        corners = [c + d * length / 2 + n * thick / 2, c - d * length / 2 + n * thick / 2,
                   c - d * length / 2 - n * thick / 2, c + d * length / 2 - n * thick / 2]
        cv2.fillPoly(mask, [np.round(np.array(corners)).astype(np.int32)], 1)

    if kind == 'ellipse':
        axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.4, 1.0))))
        cv2.ellipse(mask, center, axes, float(np.degrees(angle)), 0, 360, 1, -1)
    elif kind == 'polygon':
        k = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        pts = polygon(r * rng.uniform(0.75, 1.0, k), angles)
        cv2.fillPoly(mask, [cv2.convexHull(pts)], 1)
    elif kind == 'star':
        k = int(rng.integers(4, 8))
        angles = np.arange(2 * k) * np.pi / k
        radii = np.where(np.arange(2 * k) % 2 == 0, r, r * rng.uniform(0.3, 0.55))
        cv2.fillPoly(mask, [polygon(radii, angles)], 1)
    elif kind == 'bar':
        bar(2 * r * rng.uniform(0.9, 1.4), rng.uniform(4, 10), angle)
    elif kind == 'cross':
        thick = rng.uniform(4, 12)
        bar(2 * r, thick, angle)
        bar(2 * r * rng.uniform(0.5, 1.0), thick, angle + rng.uniform(np.pi / 4, np.pi / 2))
    elif kind == 'ring':
        axes = (max(4, int(r)), max(4, int(r * rng.uniform(0.6, 1.0))))
        thickness = int(max(3, min(axes) * rng.uniform(0.15, 0.4)))
        cv2.ellipse(mask, center, axes, float(np.degrees(angle)), 0, 360, 1, thickness)
    elif kind == 'holed':
        k = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        cv2.fillPoly(mask, [cv2.convexHull(polygon(r * rng.uniform(0.85, 1.0, k), angles))], 1)
        for _ in range(int(rng.integers(1, 3))):
            hr = r * rng.uniform(0.15, 0.3)
            off = rng.uniform(-0.35, 0.35, 2) * r
            cv2.circle(mask, (int(round(cx + off[0])), int(round(cy + off[1]))), max(2, int(hr)), 0, -1)
    else:
        raise ValueError(f"unknown shape '{kind}'; known: {', '.join(SHAPES)}")
    return mask


def object_texture(rng: np.random.Generator, h: int, w: int, background_mean: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 texture of one object: its own colour, shading and pattern."""
    for _ in range(8):
        color = rng.uniform(0, 255, size=3).astype(np.float32)
        if np.abs(color - background_mean).sum() > 120:
            break
    tex = np.broadcast_to(color, (h, w, 3)).astype(np.float32)
    shade = _stripes(h, w, period=4 * max(h, w), angle=rng.uniform(0, 2 * np.pi), phase=0)
    tex = tex + shade[:, :, None] * rng.uniform(5, 25)
    pattern = rng.integers(4)
    amp = rng.uniform(10, 35, size=3).astype(np.float32)
    if pattern == 1:
        tex += _stripes(h, w, rng.uniform(4, 14), rng.uniform(0, np.pi), 0)[:, :, None] * amp
    elif pattern == 2:
        cell = int(rng.integers(4, 12))
        ys, xs = np.indices((h, w))
        tex += (((ys // cell + xs // cell) % 2) * 2 - 1).astype(np.float32)[:, :, None] * amp
    elif pattern == 3:
        tex += (_smooth_noise(rng, h, w, int(rng.integers(4, 10)), 3) - 0.5) * 2 * amp
    return tex


class SyntheticDataset(ISDataset):
    """Deterministic procedural scenes with exact instance masks.

    Args:
        num_samples: dataset length (default 2000 for 'train', 100 for 'val').
        image_size: (h, w) of every image.
        seed: base seed; sample i of a split uses the generator seeded with (seed, split, i).
        split: 'train' (all visible objects) or 'val' (one target object, other seed stream).
        min_objects / max_objects: objects painted per image.
        min_visible_area: visible pixels an object needs to be listed (default 0.2% of the image);
            smaller remnants stay painted but count as background.
    """

    name = "Synthetic"

    def __init__(self, num_samples: Optional[int] = None, image_size: tuple[int, int] = (320, 320),
                 seed: int = 0, split: str = 'train', min_objects: int = 2, max_objects: int = 6,
                 min_visible_area: Optional[int] = None, **kwargs: Any):
        super().__init__(**kwargs)
        if split not in _SPLIT_CODES:
            raise ValueError(f"SyntheticDataset: unknown split '{split}'; known: train, val")
        if not 1 <= min_objects <= max_objects:
            raise ValueError(f"SyntheticDataset: need 1 <= min_objects <= max_objects, got "
                             f"{min_objects}, {max_objects}")
        self.split = split
        self.seed = seed
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.min_objects, self.max_objects = min_objects, max_objects
        h, w = self.image_size
        self.min_visible_area = (min_visible_area if min_visible_area is not None
                                 else max(16, int(0.002 * h * w)))
        if num_samples is None:
            num_samples = 2000 if split == 'train' else 100
        self.dataset_samples = list(range(num_samples))

    def generate(self, index: int, attempt: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(image HxWx3 uint8, instance map HxW int32 with labels 1..K, listed labels)."""
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index, attempt])
        h, w = self.image_size
        canvas = make_background(rng, h, w)
        background_mean = canvas[::16, ::16].reshape(-1, 3).mean(0)
        inst = np.zeros((h, w), dtype=np.int32)
        num = int(rng.integers(self.min_objects, self.max_objects + 1))
        side = min(h, w)
        for label in range(1, num + 1):
            kind = SHAPES[int(rng.integers(len(SHAPES)))]
            r = side * rng.uniform(0.08, 0.28)
            cy, cx = rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w)
            shape = draw_shape(rng, kind, h, w, cy, cx, r)
            x0, y0, bw, bh = cv2.boundingRect(shape)
            if bw == 0 or bh == 0:
                continue
            y1, x1 = y0 + bh, x0 + bw
            tex = object_texture(rng, y1 - y0, x1 - x0, background_mean)
            region = shape[y0:y1, x0:x1].astype(bool)
            np.copyto(canvas[y0:y1, x0:x1], tex, where=region[:, :, None])
            np.copyto(inst[y0:y1, x0:x1], label, where=region)
        image = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
        image = cv2.GaussianBlur(image, (3, 3), 0.6)
        areas = np.bincount(inst.ravel(), minlength=num + 1)
        labels = [k for k in range(1, num + 1) if areas[k] >= self.min_visible_area]
        return image, inst, labels

    def get_sample(self, index: int) -> DSample:
        if not 0 <= index < len(self.dataset_samples):
            raise IndexError(f"SyntheticDataset ({self.split}): index {index} out of range "
                             f"[0, {len(self.dataset_samples)})")
        sample_id = f'synthetic_{self.split}_{index:05d}'
        for attempt in range(10):
            image, inst, labels = self.generate(index, attempt)
            if labels:
                break
        if self.split == 'train':
            return DSample(image, inst, objects_ids=labels, sample_id=sample_id)
        # Evaluation: one target, drawn among objects of at least 1% of the image when possible.
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index, 1000])
        areas = np.bincount(inst.ravel())
        big = [k for k in labels if areas[k] >= 0.01 * inst.size] or labels
        target = big[int(rng.integers(len(big)))]
        return DSample(image, (inst == target).astype(np.int32), objects_ids=[1], sample_id=sample_id)
