"""A weight-free reference predictor: OpenCV GrabCut seeded by the clicks.

Per click, the GrabCut label map starts from the previous prediction (probable foreground /
probable background), or, while there is none, from a probable-foreground disk around each
positive click (`init_radius_ratio` of the shorter image side). Every click then stamps a
certain-foreground or certain-background disk of `click_radius` pixels. GrabCut runs
`iterations` rounds on an image scaled so that its longer side is at most `max_side` pixels,
and the binary result is scaled back to native resolution. Deterministic (OpenCV RNG seeded).
"""
from __future__ import annotations

from typing import List

import cv2
import numpy as np

from ...utils.log import logger
from ..clicker import Click, Clicker
from .base import BasePredictor


class GrabCutPredictor(BasePredictor):
    def __init__(self, model=None, device="cpu", clicks_limit=None, iterations: int = 3,
                 click_radius: int = 5, init_radius_ratio: float = 0.15, max_side: int = 400,
                 seed: int = 0):
        super().__init__(None, "cpu", clicks_limit)
        self.iterations = iterations
        self.click_radius = click_radius
        self.init_radius_ratio = init_radius_ratio
        self.max_side = max_side
        self.seed = seed

    def set_image(self, image: np.ndarray) -> None:
        super().set_image(image)
        h, w = self.image.shape[:2]
        self.scale = min(1.0, self.max_side / max(h, w))
        size = (max(1, int(round(w * self.scale))), max(1, int(round(h * self.scale))))
        bgr = cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR)
        self.work_image = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA) if self.scale < 1 else bgr

    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        h, w = self.image.shape[:2]
        wh, ww = self.work_image.shape[:2]
        prev = self.prev_prediction > 0.5
        if prev.any():
            prev_small = cv2.resize(prev.astype(np.uint8), (ww, wh), interpolation=cv2.INTER_NEAREST)
            labels = np.where(prev_small > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        else:
            labels = np.full((wh, ww), cv2.GC_PR_BGD, np.uint8)
            init_r = max(2, int(round(self.init_radius_ratio * min(wh, ww))))
            for c in clicks:
                if c.is_positive:
                    cv2.circle(labels, self._work_xy(c), init_r, int(cv2.GC_PR_FGD), -1)
        for c in clicks:
            value = cv2.GC_FGD if c.is_positive else cv2.GC_BGD
            cv2.circle(labels, self._work_xy(c), self.click_radius, int(value), -1)
        is_fg = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        if not is_fg.any():
            return np.zeros((h, w), np.float32)
        if is_fg.all():
            return np.ones((h, w), np.float32)
        cv2.setRNGSeed(self.seed)
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        try:
            with self.timed_model():
                cv2.grabCut(self.work_image, labels, None, bgd, fgd, self.iterations,
                            cv2.GC_INIT_WITH_MASK)
        except cv2.error as e:  # too few samples for a colour model: keep the seeded labels
            logger.debug("GrabCut predictor: OpenCV grabCut failed (%s); using the seeds", e)
        fg = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)
        if fg.shape != (h, w):
            fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST)
        return fg.astype(np.float32)

    def _work_xy(self, click: Click) -> tuple:
        y, x = click.coords
        return (int(round(x * self.scale)), int(round(y * self.scale)))
