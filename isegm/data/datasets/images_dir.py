"""Custom data (protocol rule 42): `images/<stem>.*` with `masks/<stem>.*` or `masks/<stem>_<k>.*`.

Each mask: 128 -> ignore, > 128 -> object. All masks of one image form one multi-object sample
(training); the mask named `<stem>.*` comes first, then `<stem>_<k>.*` by increasing k. With
`per_instance=True` (evaluation, `get_dataset('ImagesDir', cfg)`) each mask is a sample of its
own, one object, its id the mask's stem, in the same order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from isegm.data.base import ISDataset
from isegm.data.io import (IMAGE_EXTENSIONS, DatasetError, check_same_size, list_files,
                           read_image, read_mask)
from isegm.data.sample import DSample


class ImagesDirDataset(ISDataset):
    name = "ImagesDir"

    def __init__(self, dataset_path: str | os.PathLike, images_dir_name: str = 'images',
                 masks_dir_name: str = 'masks', per_instance: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.per_instance = per_instance
        self.dataset_path = Path(dataset_path)
        images = list_files(self.dataset_path / images_dir_name, IMAGE_EXTENSIONS, "images")
        masks = list_files(self.dataset_path / masks_dir_name, IMAGE_EXTENSIONS, "masks")
        by_stem: dict[str, dict[str, Any]] = {}
        for path in images:
            if path.stem in by_stem:
                raise DatasetError(f"images '{by_stem[path.stem]['image']}' and '{path}' share "
                                   f"the stem '{path.stem}'")
            by_stem[path.stem] = {'image': path, 'masks': []}
        for path in masks:
            if path.stem in by_stem:
                by_stem[path.stem]['masks'].append((-1, path))
                continue
            base, _, k = path.stem.rpartition('_')
            if k.isdigit() and base in by_stem:
                by_stem[base]['masks'].append((int(k), path))
            else:
                raise DatasetError(f"mask '{path}' matches no image in "
                                   f"'{self.dataset_path / images_dir_name}' (expected "
                                   f"<stem>.* or <stem>_<k>.*)")
        for entry in by_stem.values():
            if not entry['masks']:
                raise DatasetError(f"image '{entry['image']}' has no mask in "
                                   f"'{self.dataset_path / masks_dir_name}'")
            entry['masks'] = [p for _, p in sorted(entry['masks'])]
            entry['id'] = entry['image'].stem
        self.dataset_samples = [by_stem[k] for k in sorted(by_stem)]
        if per_instance:
            self.dataset_samples = [{'image': e['image'], 'masks': [mask], 'id': mask.stem}
                                    for e in self.dataset_samples for mask in e['masks']]

    def sample_files(self, index: int) -> tuple[Path, list[Path]]:
        entry = self.dataset_samples[index]
        return entry['image'], list(entry['masks'])

    def get_sample(self, index: int) -> DSample:
        entry = self.dataset_samples[index]
        image = read_image(entry['image'])
        layers, objects, ignored = [], [], []
        for k, mask_path in enumerate(entry['masks']):
            raw = read_mask(mask_path, mode='channel0')
            check_same_size(image, raw, entry['image'], mask_path)
            layer = np.zeros(raw.shape, dtype=np.int32)
            layer[raw == 128] = 2
            layer[raw > 128] = 1
            if not np.any(layer == 1):
                raise DatasetError(f"mask '{mask_path}' has no object pixel (> 128)")
            layers.append(layer)
            objects.append((k, 1))
            ignored.append((k, 2))
        return DSample(image, np.stack(layers, axis=2), objects_ids=objects, ignore_ids=ignored,
                       sample_id=entry['id'])
