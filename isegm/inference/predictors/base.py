"""Predictor interface: `set_image` once per sample, then one `get_prediction` per click.

    predictor.set_image(image)                       # HxWx3 uint8 RGB
    prob = predictor.get_prediction(clicker)         # HxW float32 probabilities, native size

`model_time` accumulates the seconds spent inside the network and `sampling_time` those spent
ROI-sampling the refiner's inputs (for the benchmark split).
"""
from __future__ import annotations

import abc
import time
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch

from ..clicker import Click, Clicker


class BasePredictor(abc.ABC):
    """Common state: the current image and the previous returned probability map."""

    requires_model = False

    def __init__(self, model: Optional[torch.nn.Module] = None, device: torch.device | str = "cpu",
                 clicks_limit: Optional[int] = None):
        self.model = model
        self.device = torch.device(device)
        self.clicks_limit = None if clicks_limit is None or clicks_limit < 0 else int(clicks_limit)
        self.model_time = 0.0
        self.sampling_time = 0.0
        self.image: Optional[np.ndarray] = None
        self.prev_prediction: Optional[np.ndarray] = None

    def set_image(self, image: np.ndarray) -> None:
        """Prepare a new sample. image: HxWx3 uint8 RGB."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"set_image expects an HxWx3 RGB image, got shape {image.shape}")
        self.image = image
        self.prev_prediction = np.zeros(image.shape[:2], dtype=np.float32)

    # RITM name
    def set_input_image(self, image: np.ndarray) -> None:
        self.set_image(image)

    def get_prediction(self, clicker: Clicker, prev_mask: Optional[np.ndarray] = None) -> np.ndarray:
        """HxW float32 probabilities for the clicks of `clicker` (prev_mask: HxW probabilities
        overriding the stored previous prediction)."""
        if self.image is None:
            raise RuntimeError(f"{type(self).__name__}.get_prediction called before set_image")
        clicks = clicker.get_clicks(self.clicks_limit)
        if prev_mask is not None:
            self.prev_prediction = np.ascontiguousarray(prev_mask, dtype=np.float32)
        prob = np.asarray(self._predict(clicks, clicker), dtype=np.float32)
        self.prev_prediction = prob
        return prob

    @abc.abstractmethod
    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        """HxW float probabilities for `clicks` (the predictor's own work)."""

    @contextmanager
    def timed_model(self, counter: str = "model_time") -> Iterator[None]:
        """Adds the enclosed wall time (device-synchronised) to `counter` (an attribute)."""
        sync = self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                torch.cuda.synchronize(self.device)
            setattr(self, counter, getattr(self, counter) + time.perf_counter() - start)


def clicks_to_points(clicks_lists: Sequence[Sequence[Click]], order: Optional[int] = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Network clicks (B, 2M, 3): positives first, then negatives, each padded with (-1, -1, -1)
    to M = max(#pos, #neg, 1) over the batch (rule 25). Rows are (y, x, index); `order` replaces
    the index (e.g. 0 for refiner crops)."""
    num_max = 1
    for clicks in clicks_lists:
        pos = sum(c.is_positive for c in clicks)
        num_max = max(num_max, pos, len(clicks) - pos)
    rows = []
    for clicks in clicks_lists:
        pos = [c for c in clicks if c.is_positive]
        neg = [c for c in clicks if not c.is_positive]

        def encode(cs: Sequence[Click]) -> list:
            out = [[float(c.coords[0]), float(c.coords[1]),
                    float(order if order is not None else (c.indx if c.indx is not None else 0))]
                   for c in cs]
            return out + [[-1.0, -1.0, -1.0]] * (num_max - len(cs))

        rows.append(encode(pos) + encode(neg))
    return torch.tensor(rows, dtype=torch.float32, device=device)


def flip_clicks(clicks: Sequence[Click], width: int) -> List[Click]:
    """Horizontally flipped clicks: x' = width - 1 - x (rule 27)."""
    return [c.copy(coords=(c.coords[0], width - 1 - c.coords[1])) for c in clicks]
