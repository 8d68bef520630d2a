"""PascalVOC (protocol rule 46): `JPEGImages/<id>.jpg`, `SegmentationObject/<id>.png`.

The PNG is read in colour and converted BGR->GRAY, so instance ids are palette gray levels and
void (224, 224, 192) becomes 220 (ignored). Split 'test' reads RITM's
`ImageSets/Segmentation/test.pickle` = (ids, gray ids); other splits read `<split>.txt` and, with
`per_instance=True` (evaluation), give one sample per gray level not in {0, 220}, ascending.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from isegm.data.base import ISDataset
from isegm.data.io import DatasetError, check_same_size, read_image, read_mask
from isegm.data.sample import DSample

VOID_GRAY = 220


class PascalVocDataset(ISDataset):
    name = "PascalVOC"

    def __init__(self, dataset_path: str | os.PathLike, split: str = 'val',
                 per_instance: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.dataset_path = Path(dataset_path)
        self.split = split
        self.per_instance = per_instance
        sets = self.dataset_path / 'ImageSets' / 'Segmentation'
        if split == 'test':
            path = sets / 'test.pickle'
            if not path.is_file():
                raise DatasetError(f"PascalVOC split file '{path}' does not exist")
            with open(path, 'rb') as f:  # RITM's split file (trusted dataset folder)
                ids, gray_ids = pickle.load(f)
            self.dataset_samples = [(str(a), int(b)) for a, b in zip(ids, gray_ids)]
        else:
            path = sets / f'{split}.txt'
            if not path.is_file():
                raise DatasetError(f"PascalVOC split file '{path}' does not exist")
            ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if per_instance:
                self.dataset_samples = [(image_id, g) for image_id in ids
                                        for g in self._instance_grays(image_id)]
            else:
                self.dataset_samples = [(image_id, None) for image_id in ids]
        self.check_not_empty(self.dataset_samples, self.dataset_path, f"samples for split '{split}'")

    def _mask_path(self, image_id: str) -> Path:
        return self.dataset_path / 'SegmentationObject' / f'{image_id}.png'

    def _instance_grays(self, image_id: str) -> list[int]:
        gray = read_mask(self._mask_path(image_id), mode='gray_from_color')
        return [int(v) for v in np.unique(gray) if v not in (0, VOID_GRAY)]

    def _image_path(self, image_id: str) -> Path:
        return self.dataset_path / 'JPEGImages' / f'{image_id}.jpg'

    def sample_files(self, index: int) -> tuple[Path, list[Path]]:
        image_id = self.dataset_samples[index][0]
        return self._image_path(image_id), [self._mask_path(image_id)]

    def get_sample(self, index: int) -> DSample:
        image_id, gray_id = self.dataset_samples[index]
        image_path = self._image_path(image_id)
        mask_path = self._mask_path(image_id)
        image = read_image(image_path)
        gray = read_mask(mask_path, mode='gray_from_color').astype(np.int32)
        check_same_size(image, gray, image_path, mask_path)
        if gray_id is None:
            ids = [int(v) for v in np.unique(gray) if v not in (0, VOID_GRAY)]
            return DSample(image, gray, objects_ids=ids, ignore_ids=[VOID_GRAY], sample_id=image_id)
        if not np.any(gray == gray_id):
            present = [int(v) for v in np.unique(gray) if v not in (0, VOID_GRAY)]
            raise DatasetError(f"instance gray id {gray_id} does not exist in '{mask_path}' "
                               f"(present: {present})")
        return DSample(image, gray, objects_ids=[gray_id], ignore_ids=[VOID_GRAY],
                       sample_id=f'{image_id}_{gray_id}')
