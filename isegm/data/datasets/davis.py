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

    `split` (for CPU-scale training on real images with a held-out part; the benchmark is the
    whole set, `split=None`): the images sorted by file name, index i (0-based) goes to 'val'
    when i % 8 == 7 and to 'train' otherwise: 350 / 50 of the 400 images, every category
    prefix spread over both (file names start with the category).
    """

    name = "COCO_MVal"
    mask_mode = 'channel0'
    threshold = 128
    SPLITS = (None, 'train', 'val')
    VAL_EVERY = 8

    def __init__(self, dataset_path: str | os.PathLike, split: str | None = None,
                 **kwargs: Any):
        super().__init__(dataset_path, **kwargs)
        if split not in self.SPLITS:
            raise ValueError(f"COCO_MVal: split must be one of {self.SPLITS}, got {split!r}")
        self.split = split
        if split is not None:
            ordered = sorted(self.dataset_samples, key=lambda p: p.name)
            is_val = [i % self.VAL_EVERY == self.VAL_EVERY - 1 for i in range(len(ordered))]
            self.dataset_samples = [p for p, v in zip(ordered, is_val) if v == (split == 'val')]
            self.name = f"COCO_MVal_{split}"
