"""DAVIS and COCO-MVal (protocol rules 43-44): `img/<name>.jpg` with `gt/<name>.png`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from isegm.data.base import ISDataset
from isegm.data.datasets.grabcut import match_masks, stem_to_first_dot
from isegm.data.io import IMAGE_EXTENSIONS, check_same_size, list_files, read_image, read_mask
from isegm.data.sample import DSample


class DavisDataset(ISDataset):
    """DAVIS: object where the max over the mask's channels is > 0; no ignore."""

    name = "DAVIS"
    mask_mode = 'max'
    threshold = 0

    def __init__(self, dataset_path: str | os.PathLike, images_dir_name: str = 'img',
                 masks_dir_name: str = 'gt', **kwargs: Any):
        super().__init__(**kwargs)
        self.dataset_path = Path(dataset_path)
        self._images_path = self.dataset_path / images_dir_name
        self._masks_path = self.dataset_path / masks_dir_name
        images = list_files(self._images_path, IMAGE_EXTENSIONS, "images")
        self._masks = match_masks(images, self._masks_path)
        self.dataset_samples = images

    def get_sample(self, index: int) -> DSample:
        image_path = self.dataset_samples[index]
        mask_path = self._masks[stem_to_first_dot(image_path)]
        image = read_image(image_path)
        raw = read_mask(mask_path, mode=self.mask_mode)
        check_same_size(image, raw, image_path, mask_path)
        mask = (raw > self.threshold).astype(np.int32)
        return DSample(image, mask, objects_ids=[1], sample_id=stem_to_first_dot(image_path))


class CocoMValDataset(DavisDataset):
    """COCO-MVal, as IGLR reads it: object where mask channel 0 is > 128; no ignore.

    On the 0/255 masks of the benchmark this equals the DAVIS rule (rule 44).
    """

    name = "COCO_MVal"
    mask_mode = 'channel0'
    threshold = 128
