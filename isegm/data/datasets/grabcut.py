"""GrabCut and Berkeley (protocol rules 41-42): `<images>/<name>.*` with `<masks>/<name>.*`.

Mask channel 0 v: 128 -> ignore (-1), > 128 -> object, otherwise background. One sample per image,
sorted by file name; the mask is found by the image name up to its first '.'.
"""
from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any

import numpy as np

from isegm.data.base import ISDataset
from isegm.data.io import (IMAGE_EXTENSIONS, DatasetError, check_same_size, list_files,
                           read_image, read_mask)
from isegm.data.sample import DSample


def stem_to_first_dot(path: Path) -> str:
    return path.name.split('.')[0]


def match_masks(images: list[Path], masks_dir: Path) -> dict[str, Path]:
    """Map each image's stem (up to the first '.') to its mask; raise naming any image without one."""
    masks = {stem_to_first_dot(p): p for p in list_files(masks_dir, IMAGE_EXTENSIONS, "masks")}
    missing = [p for p in images if stem_to_first_dot(p) not in masks]
    if missing:
        raise DatasetError(f"image '{missing[0]}' has no mask '{masks_dir / stem_to_first_dot(missing[0])}.*'"
                           f" ({len(missing)} image(s) without a mask)")
    return masks


class ImageMaskPairsDataset(ISDataset):
    """One object per image: `<images_dir>/<name>.*` with `<masks_dir>/<name up to first '.'>.*`.

    Subclasses set `name`, the default folder names and `decode_mask(raw)`, which turns the mask
    read with `mask_mode` ('channel0' or 'max') into 1 object / 0 background / -1 ignore.
    """

    name = "ImageMaskPairs"
    mask_mode = 'channel0'
    has_ignore = False

    def __init__(self, dataset_path: str | os.PathLike, images_dir_name: str,
                 masks_dir_name: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.dataset_path = Path(dataset_path)
        self._images_path = self.dataset_path / images_dir_name
        self._masks_path = self.dataset_path / masks_dir_name
        images = list_files(self._images_path, IMAGE_EXTENSIONS, "images")
        self._masks = match_masks(images, self._masks_path)
        self.dataset_samples = images

    @abc.abstractmethod
    def decode_mask(self, raw: np.ndarray) -> np.ndarray:
        """HxW int32 ground truth (1 object, 0 background, -1 ignore) from the raw mask."""

    def sample_files(self, index: int) -> tuple[Path, list[Path]]:
        image_path = self.dataset_samples[index]
        return image_path, [self._masks[stem_to_first_dot(image_path)]]

    def get_sample(self, index: int) -> DSample:
        image_path = self.dataset_samples[index]
        mask_path = self._masks[stem_to_first_dot(image_path)]
        image = read_image(image_path)
        raw = read_mask(mask_path, mode=self.mask_mode)
        check_same_size(image, raw, image_path, mask_path)
        return DSample(image, self.decode_mask(raw), objects_ids=[1],
                       ignore_ids=[-1] if self.has_ignore else None,
                       sample_id=stem_to_first_dot(image_path))


class GrabCutDataset(ImageMaskPairsDataset):
    """GrabCut: `data_GT/*.{jpg,JPG,bmp}` images, `boundary_GT/<name>.bmp` masks (50 samples)."""

    name = "GrabCut"
    has_ignore = True

    def __init__(self, dataset_path: str | os.PathLike, images_dir_name: str = 'data_GT',
                 masks_dir_name: str = 'boundary_GT', **kwargs: Any):
        super().__init__(dataset_path, images_dir_name, masks_dir_name, **kwargs)

    def decode_mask(self, raw: np.ndarray) -> np.ndarray:
        """Channel 0 v: 128 -> -1 (ignore), > 128 -> 1, otherwise v (only 0 occurs)."""
        mask = raw.astype(np.int32)
        mask[raw == 128] = -1
        mask[raw > 128] = 1
        return mask


class BerkeleyDataset(GrabCutDataset):
    """Berkeley: the GrabCut loader on `images/` and `masks/` (100 instances)."""

    name = "Berkeley"

    def __init__(self, dataset_path: str | os.PathLike, images_dir_name: str = 'images',
                 masks_dir_name: str = 'masks', **kwargs: Any):
        super().__init__(dataset_path, images_dir_name=images_dir_name,
                         masks_dir_name=masks_dir_name, **kwargs)
