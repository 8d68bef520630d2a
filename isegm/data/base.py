"""`ISDataset`: the base of every dataset; `get_sample` for evaluation, `__getitem__` for training.

    dataset = GrabCutDataset(root)                       # evaluation: dataset.get_sample(i)
    trainset = SyntheticDataset(augmentator=build_train_augmentator((256, 256)),
                                points_sampler=MultiPointSampler(24, prob_gamma=0.8))
    item = trainset[0]   # {'images': (3,H,W) float32 in [0,1], 'points': (2M,3), 'instances': (1,H,W)}

Randomness of a training item (augmentation, object choice, clicks) comes from a NumPy generator
seeded from torch's generator, so `torch.manual_seed` makes a run reproducible and DataLoader
workers (which torch seeds differently) draw different streams.
"""
from __future__ import annotations

import abc
import multiprocessing
import pickle
import random
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from isegm.data.io import IMAGE_EXTENSIONS, DatasetError, check_file_sizes
from isegm.data.points_sampler import MultiPointSampler
from isegm.data.sample import DSample
from isegm.utils.log import logger


class SharedOnceFlag:
    """A flag shared by a process and the DataLoader workers it starts (forked or spawned), so
    that a message is logged once per training process, not once per worker and epoch.

    Pickled other than for starting a process (a copy of the dataset), it becomes a fresh flag.
    """

    def __init__(self) -> None:
        self._value = multiprocessing.Value("b", 0)

    def claim(self) -> bool:
        """True for the first caller only (in any process sharing the flag)."""
        with self._value.get_lock():
            first = not self._value.value
            self._value.value = 1
        return first

    def __getstate__(self) -> dict[str, Any]:
        from multiprocessing.context import get_spawning_popen
        return {"_value": self._value if get_spawning_popen() is not None else None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._value = state["_value"] if state["_value"] is not None else multiprocessing.Value("b", 0)


def image_to_chw_float(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> (3, H, W) float32 in [0, 1]."""
    out = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


class ISDataset(torch.utils.data.Dataset, abc.ABC):
    """Base interactive-segmentation dataset (RITM constructor arguments).

    Subclasses fill `self.dataset_samples` (one entry per sample) and implement `get_sample`.

    Args:
        augmentator: callable(image=, mask=) -> dict (albumentations Compose) or None.
        points_sampler: draws the target object and its clicks.
        min_object_area: objects with fewer pixels after augmentation are dropped (counted in
            `self.stats['small_objects_dropped']` and logged).
        keep_background_prob: probability of keeping an augmentation that left no object;
            otherwise augmentation is retried (at most `max_augment_retries` times).
        with_image_info: add 'image_info' (the sample index) to each item.
        samples_scores_path / samples_scores_gamma: RITM's pickled [(index, _, score), ...];
            samples are drawn with probability proportional to (1 - score) ** gamma.
        epoch_len: if > 0, `len(self)` is epoch_len and each item is a random sample.
        fixed_seed: if given, item i is drawn from a generator seeded by (fixed_seed, i) instead
            of torch's generator: the same crop, object and clicks for an index every time
            (validation sets, so that a checkpoint always gets the same score).
    """

    name = "ISDataset"
    max_augment_retries = 50

    def __init__(self, augmentator: Any = None,
                 points_sampler: Optional[MultiPointSampler] = None,
                 min_object_area: int = 0, keep_background_prob: float = 0.0,
                 with_image_info: bool = False, samples_scores_path: Optional[str] = None,
                 samples_scores_gamma: float = 1.0, epoch_len: int = -1,
                 fixed_seed: Optional[int] = None):
        self.augmentator = augmentator
        self.points_sampler = points_sampler if points_sampler is not None \
            else MultiPointSampler(max_num_points=12)
        self.min_object_area = min_object_area
        self.keep_background_prob = keep_background_prob
        self.with_image_info = with_image_info
        self.epoch_len = epoch_len
        self.fixed_seed = fixed_seed
        self.samples_scores = (self._load_samples_scores(samples_scores_path, samples_scores_gamma)
                               if samples_scores_path else None)
        self.dataset_samples: list[Any] = []
        self.stats = {'small_objects_dropped': 0, 'background_only_items': 0}
        self._drop_logged = SharedOnceFlag()
        self._rng: Optional[np.random.Generator] = None

    # --- to implement --------------------------------------------------------------------------
    @abc.abstractmethod
    def get_sample(self, index: int) -> DSample:
        """The index-th sample (image, object masks, ignore ids) before augmentation."""

    def sample_files(self, index: int) -> Optional[tuple[Path, Sequence[Path]]]:
        """(image file, mask files) that `get_sample(index)` reads, for `check_files`; None
        for a dataset whose samples are not files (the default)."""
        return None

    def check_files(self, indices: Optional[Iterable[int]] = None) -> int:
        """Check the files of the samples `indices` (default: all) without decoding them: each
        image and mask exists, its header is an image's (masks in another format, e.g. SBD's
        `.mat`, need only exist), and every mask has its image's size. Raises DatasetError
        naming the first bad file and what was expected; returns the number of images checked
        (each once, also when several samples share it)."""
        indices = range(self.get_samples_number()) if indices is None else indices
        seen: set[Path] = set()
        for index in indices:
            files = self.sample_files(index)
            if files is None or files[0] in seen:
                continue
            image, masks = files
            seen.add(image)
            for mask in masks:
                if not Path(mask).is_file():
                    raise DatasetError(f"file '{mask}' does not exist (a mask of image "
                                       f"'{image}')")
            check_file_sizes(image, [m for m in masks
                                     if Path(m).suffix.lower() in IMAGE_EXTENSIONS])
        return len(seen)

    # --- training items ------------------------------------------------------------------------
    @property
    def rng(self) -> np.random.Generator:
        """The generator of the item being built (or a fresh one outside `__getitem__`)."""
        if self._rng is None:
            self._rng = np.random.default_rng()
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.fixed_seed is not None:
            seed = int(np.random.SeedSequence([int(self.fixed_seed), int(index)])
                       .generate_state(2, np.uint64)[0] >> 2)
        else:
            seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        self._rng = rng = np.random.default_rng(seed)
        if self.samples_scores is not None:
            index = int(rng.choice(self.samples_scores['indices'], p=self.samples_scores['probs']))
        elif self.epoch_len > 0:
            index = int(rng.integers(self.get_samples_number()))
        sample = self.get_sample(index)
        self.augment_sample(sample, seed)
        dropped = sample.remove_small_objects(self.min_object_area)
        if dropped:
            self._log_dropped(sample, dropped)
        self.points_sampler.sample_object(sample, rng)
        points = self.points_sampler.sample_points(rng)
        mask = self.points_sampler.selected_mask
        output = {
            'images': torch.from_numpy(image_to_chw_float(sample.image)),
            'points': torch.from_numpy(points.astype(np.float32)),
            'instances': torch.from_numpy(mask[None].astype(np.float32)),
        }
        if self.with_image_info:
            output['image_info'] = index
        return output

    def augment_sample(self, sample: DSample, seed: Optional[int] = None) -> DSample:
        """Augment in place; retry while no object survives (rule 50)."""
        if self.augmentator is None:
            return sample
        if seed is not None and hasattr(self.augmentator, 'set_random_state'):
            self.augmentator.set_random_state(np.random.default_rng(seed), random.Random(seed))
        had_objects = len(sample) > 0
        for _ in range(self.max_augment_retries):
            sample.augment(self.augmentator)
            if len(sample) > 0 or not had_objects or self.rng.random() < self.keep_background_prob:
                break
        if len(sample) == 0:
            self.stats['background_only_items'] += 1
            if had_objects:
                logger.debug(f"{self.name}: sample '{sample.sample_id}' kept without objects after "
                             f"augmentation ({self.stats['background_only_items']} such items)")
        return sample

    def _log_dropped(self, sample: DSample, dropped: int) -> None:
        first = self._drop_logged.claim()
        self.stats['small_objects_dropped'] += dropped
        message = (f"{self.name}: dropped {dropped} object(s) under min_object_area="
                   f"{self.min_object_area} px in sample '{sample.sample_id}' "
                   f"(total so far in this process: {self.stats['small_objects_dropped']})")
        if first:
            logger.info(message + "; further drops are logged at DEBUG level")
        else:
            logger.debug(message)

    def __len__(self) -> int:
        return self.epoch_len if self.epoch_len > 0 else self.get_samples_number()

    def get_samples_number(self) -> int:
        return len(self.dataset_samples)

    @staticmethod
    def _load_samples_scores(path: str, gamma: float) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"samples_scores_path '{path}' does not exist")
        with open(path, 'rb') as f:  # RITM's pickled scores: trusted input, as a dataset is
            scores = pickle.load(f)
        probs = np.array([(1.0 - x[2]) ** gamma for x in scores], dtype=np.float64)
        return {'indices': [x[0] for x in scores], 'probs': probs / probs.sum()}

    @staticmethod
    def check_not_empty(samples: list, root: Path, what: str) -> None:
        """Raise DatasetError naming `root` if a loader found no sample."""
        if len(samples) == 0:
            raise DatasetError(f"dataset folder '{root}' holds no {what}")
