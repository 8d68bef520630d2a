"""DAVIS and COCO-MVal (protocol rules 43-44): `img/<name>.jpg` with `gt/<name>.png`."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from isegm.data.datasets.grabcut import ImageMaskPairsDataset


class DavisDataset(ImageMaskPairsDataset):
    """DAVIS: object where the max over the mask's channels is > 0; no ignore."""

    name = "DAVIS"
    mask_mode = 'max'
    threshold = 0

    def __init__(self, dataset_path: str | os.PathLike, images_dir_name: str = 'img',
                 masks_dir_name: str = 'gt', **kwargs: Any):
        super().__init__(dataset_path, images_dir_name, masks_dir_name, **kwargs)

    def decode_mask(self, raw: np.ndarray) -> np.ndarray:
        return (raw > self.threshold).astype(np.int32)


class CocoMValDataset(DavisDataset):
    """COCO-MVal, as IGLR reads it: object where mask channel 0 is > 128; no ignore.

    On the 0/255 masks of the benchmark this equals the DAVIS rule (rule 44).
    """

    name = "COCO_MVal"
    mask_mode = 'channel0'
    threshold = 128
