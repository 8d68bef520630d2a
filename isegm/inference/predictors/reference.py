"""Model-free reference predictors for tests and sanity rows: the oracle and the empty mask."""
from __future__ import annotations

from typing import List

import numpy as np

from ..clicker import Click, Clicker
from .base import BasePredictor


class OraclePredictor(BasePredictor):
    """Returns the ground truth of the clicker (1 where gt == 1): NoC is 1 on every sample."""

    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        if clicker.gt_mask is None:
            raise ValueError("the oracle predictor needs a Clicker built with gt_mask")
        return (clicker.gt_mask == 1).astype(np.float32)


class EmptyPredictor(BasePredictor):
    """Always returns an empty mask: every sample fails (NoC = N)."""

    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        assert self.image is not None
        return np.zeros(self.image.shape[:2], dtype=np.float32)
