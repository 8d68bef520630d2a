"""DAVIS-585 (FocalClick's mask-correction benchmark) and initial masks from a folder.

Layout of DAVIS-585: one folder per sequence, each holding for every annotated frame `<name>`
the image `<name>.jpg`, its ground truth `<name>.png` and two initial masks to correct:
`init_stm_<name>.png` (from a video object segmentation model) and `init_sp_<name>.png` (from
superpixels). Masks are object where their maximum over channels is > 0 (as DAVIS, rule 43).
Samples are sorted by sequence, then frame; `sample.init_mask` (HxW bool) is the chosen initial
mask and `sample.sample_id` is `<sequence>/<name>`.

`FolderInitMasks(folder)` gives any dataset initial masks named after its samples
(`<folder>/<sample_id>.<ext>`, e.g. `init_masks/berkeley_12.png`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from isegm.data.base import ISDataset
from isegm.data.io import (IMAGE_EXTENSIONS, DatasetError, check_same_size, find_with_stem,
                           read_image, read_mask)
from isegm.data.sample import DSample

INIT_MASK_MODES = ('stm', 'sp')


def read_binary_mask(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """HxW bool (max over channels > 0) of the mask at `path`, checked against `shape`."""
    mask = read_mask(path, mode='max') > 0
    if mask.shape != tuple(shape):
        raise DatasetError(f"{what} '{path}' is {mask.shape[1]}x{mask.shape[0]}, expected "
                           f"{shape[1]}x{shape[0]} (the size of its image)")
    return mask


class Davis585Dataset(ISDataset):
    """DAVIS-585: `<seq>/<name>.jpg`, `<seq>/<name>.png`, `<seq>/init_{stm,sp}_<name>.png`."""

    name = "DAVIS585"

    def __init__(self, dataset_path: str | os.PathLike, init_mask_mode: str = 'stm',
                 **kwargs: Any):
        super().__init__(**kwargs)
        if init_mask_mode not in INIT_MASK_MODES:
            raise ValueError(f"init_mask_mode must be one of {', '.join(INIT_MASK_MODES)}, "
                             f"got {init_mask_mode!r}")
        self.dataset_path = Path(dataset_path)
        self.init_mask_mode = init_mask_mode
        if not self.dataset_path.is_dir():
            raise DatasetError(f"folder '{self.dataset_path}' does not exist (expected DAVIS-585's "
                               f"sequence folders there)")
        samples = []
        for seq in sorted(p for p in self.dataset_path.iterdir() if p.is_dir()):
            for image in sorted(p for p in seq.iterdir()
                                if p.is_file() and p.suffix.lower() == '.jpg'):
                samples.append(image)
        if not samples:
            raise DatasetError(f"folder '{self.dataset_path}' holds no sequence folder with .jpg "
                               f"frames (expected <sequence>/<name>.jpg, <name>.png, "
                               f"init_stm_<name>.png, init_sp_<name>.png)")
        for image in samples:
            for needed in (image.with_suffix('.png'), self._init_path(image)):
                if not needed.is_file():
                    raise DatasetError(f"frame '{image}' has no '{needed.name}' beside it")
        self.dataset_samples = samples

    def _init_path(self, image: Path) -> Path:
        return image.with_name(f"init_{self.init_mask_mode}_{image.stem}.png")

    def sample_files(self, index: int) -> tuple[Path, list[Path]]:
        image_path = self.dataset_samples[index]
        return image_path, [image_path.with_suffix('.png'), self._init_path(image_path)]

    def get_sample(self, index: int) -> DSample:
        image_path = self.dataset_samples[index]
        gt_path = image_path.with_suffix('.png')
        image = read_image(image_path)
        raw = read_mask(gt_path, mode='max')
        check_same_size(image, raw, image_path, gt_path)
        sample = DSample(image, (raw > 0).astype(np.int32), objects_ids=[1],
                         sample_id=f"{image_path.parent.name}/{image_path.stem}")
        sample.init_mask = read_binary_mask(self._init_path(image_path), image.shape[:2],
                                            "initial mask")
        return sample


class FolderInitMasks:
    """Initial masks for any dataset: `<folder>/<sample_id>.<ext>` per sample (nonzero = object)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"initial-mask folder '{self.folder}' does not exist")

    def __call__(self, sample: DSample) -> np.ndarray:
        path = find_with_stem(self.folder, str(sample.sample_id), IMAGE_EXTENSIONS)
        return read_binary_mask(path, sample.image.shape[:2], "initial mask")


def sample_init_mask(sample: DSample, provider: Optional[FolderInitMasks] = None
                     ) -> Optional[np.ndarray]:
    """The initial mask of `sample`: from `provider` if given, else the sample's own (DAVIS-585),
    else None."""
    if provider is not None:
        return provider(sample)
    return getattr(sample, 'init_mask', None)
