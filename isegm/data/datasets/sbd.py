"""SBD (protocol rule 45): `img/<id>.jpg`, `inst/<id>.mat` (GTinst), `train.txt`, `val.txt`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from isegm.data.base import ISDataset
from isegm.data.io import DatasetError, check_same_size, read_image
from isegm.data.sample import DSample
from isegm.utils.log import logger
from isegm.utils.serialization import atomic_write


def load_sbd_instances(path: Path) -> np.ndarray:
    """HxW int32 instance map `loadmat(path)['GTinst'][0][0][0]` (0 = background)."""
    if not path.is_file():
        raise DatasetError(f"SBD instance file '{path}' does not exist")
    try:
        return np.asarray(loadmat(str(path))['GTinst'][0][0][0]).astype(np.int32)
    except (ValueError, KeyError, IndexError, TypeError, OSError) as e:
        raise DatasetError(f"cannot read the GTinst instance map of '{path}': {e}") from e


def sbd_files(dataset_path: Path, image_id: str) -> tuple[Path, list[Path]]:
    """The image and the instance file of SBD image `image_id`."""
    return dataset_path / 'img' / f'{image_id}.jpg', [dataset_path / 'inst' / f'{image_id}.mat']


def read_split(dataset_path: Path, split: str) -> list[str]:
    path = dataset_path / f'{split}.txt'
    if not path.is_file():
        raise DatasetError(f"SBD split file '{path}' does not exist (expected one image id per line)")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"SBD split file '{path}' lists no image")
    return ids


class SBDDataset(ISDataset):
    """SBD for training: one multi-object sample per image of `<split>.txt`.

    Instances whose area / bbox area < `buggy_mask_thresh` are zeroed (rule 45); how many were
    dropped is counted in `self.stats['buggy_instances_dropped']` and logged.
    """

    name = "SBD_Train"

    def __init__(self, dataset_path: str | os.PathLike, split: str = 'train',
                 buggy_mask_thresh: float = 0.08, **kwargs: Any):
        super().__init__(**kwargs)
        self.dataset_path = Path(dataset_path)
        self.split = split
        self._buggy_mask_thresh = buggy_mask_thresh
        self._buggy_objects: dict[int, list[int]] = {}
        self.stats['buggy_instances_dropped'] = 0
        self.dataset_samples = read_split(self.dataset_path, split)

    def sample_files(self, index: int) -> tuple[Path, list[Path]]:
        return sbd_files(self.dataset_path, self.dataset_samples[index])

    def get_sample(self, index: int) -> DSample:
        image_id = self.dataset_samples[index]
        image_path, (inst_path,) = sbd_files(self.dataset_path, image_id)
        image = read_image(image_path)
        inst = load_sbd_instances(inst_path)
        check_same_size(image, inst, image_path, inst_path)
        inst = self._remove_buggy_masks(index, inst, inst_path)
        ids = [int(v) for v in np.unique(inst) if v > 0]
        return DSample(image, inst, objects_ids=ids, sample_id=image_id)

    def _remove_buggy_masks(self, index: int, inst: np.ndarray, inst_path: Path) -> np.ndarray:
        if self._buggy_mask_thresh <= 0:
            return inst
        buggy = self._buggy_objects.get(index)
        if buggy is None:
            buggy = []
            for obj_id in np.unique(inst):
                if obj_id <= 0:
                    continue
                ys, xs = np.nonzero(inst == obj_id)
                bbox_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
                if len(ys) / bbox_area < self._buggy_mask_thresh:
                    buggy.append(int(obj_id))
            self._buggy_objects[index] = buggy
            if buggy:
                first = self.stats['buggy_instances_dropped'] == 0
                self.stats['buggy_instances_dropped'] += len(buggy)
                log = logger.info if first else logger.debug
                log(f"SBD: dropped instance(s) {buggy} of '{inst_path}' (area / bbox area < "
                    f"{self._buggy_mask_thresh}); {self.stats['buggy_instances_dropped']} dropped "
                    f"so far, counted in dataset.stats['buggy_instances_dropped']")
        for obj_id in buggy:
            inst[inst == obj_id] = 0
        return inst


def _read_samples_cache(path: Path) -> list[tuple[str, int]]:
    """The [[image id, instance id], ...] JSON list written by `SBDEvaluationDataset`."""
    try:
        items = json.loads(path.read_text(encoding='utf-8'))
        return [(str(a), int(b)) for a, b in items]
    except (OSError, ValueError, TypeError) as e:
        raise DatasetError(f"SBD sample list cache '{path}' is unreadable ({e}): expected a JSON "
                           f"list of [image id, instance id] pairs; delete it to rebuild it") from e


class SBDEvaluationDataset(ISDataset):
    """SBD for evaluation: one sample per (image id in `<split>.txt` order, label ascending).

    The list is cached as JSON, `<split>_images_and_ids_list.json` in the dataset folder when
    writable (RITM's pickled `.pkl` cache of the same name is not read: a cache is never
    unpickled).
    """

    name = "SBD"

    def __init__(self, dataset_path: str | os.PathLike, split: str = 'val', **kwargs: Any):
        super().__init__(**kwargs)
        self.dataset_path = Path(dataset_path)
        self.split = split
        self.dataset_samples = self._load_list()

    def _load_list(self) -> list[tuple[str, int]]:
        cache = self.dataset_path / f'{self.split}_images_and_ids_list.json'
        if cache.is_file():
            return _read_samples_cache(cache)
        samples = []
        for image_id in read_split(self.dataset_path, self.split):
            inst = load_sbd_instances(self.dataset_path / 'inst' / f'{image_id}.mat')
            samples.extend((image_id, int(v)) for v in np.unique(inst) if v > 0)
        try:
            atomic_write(cache, lambda f: f.write(json.dumps(samples).encode('utf-8')))
        except OSError as e:
            logger.warning(f"SBD: could not write the sample list cache '{cache}': {e}")
        return samples

    def sample_files(self, index: int) -> tuple[Path, list[Path]]:
        return sbd_files(self.dataset_path, self.dataset_samples[index][0])

    def get_sample(self, index: int) -> DSample:
        image_id, inst_id = self.dataset_samples[index]
        image_path, (inst_path,) = sbd_files(self.dataset_path, image_id)
        image = read_image(image_path)
        inst = load_sbd_instances(inst_path)
        check_same_size(image, inst, image_path, inst_path)
        mask = (inst == inst_id).astype(np.int32)
        if not mask.any():
            present = [int(v) for v in np.unique(inst) if v > 0]
            raise DatasetError(f"instance id {inst_id} does not exist in '{inst_path}' "
                               f"(present: {present})")
        return DSample(image, mask, objects_ids=[1], sample_id=f'{image_id}_{inst_id}')
