"""Datasets made of other datasets.

    ComposeDataset([sbd, cocolvis], augmentator=..., points_sampler=...)   # concatenation
    ProportionalComposeDataset([sbd, synth], ratios=[0.7, 0.3], epoch_len=30000)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from isegm.data.base import ISDataset
from isegm.data.sample import DSample


class ComposeDataset(ISDataset):
    """All samples of `datasets` one after the other; augmentation and clicks come from here."""

    name = "Compose"

    def __init__(self, datasets: Sequence[ISDataset], **kwargs: Any):
        super().__init__(**kwargs)
        if not datasets:
            raise ValueError("ComposeDataset: `datasets` is empty")
        self._datasets = list(datasets)
        self.dataset_samples = [(d, i) for d, ds in enumerate(self._datasets)
                                for i in range(ds.get_samples_number())]

    def get_sample(self, index: int) -> DSample:
        dataset_indx, sample_indx = self.dataset_samples[index]
        return self._datasets[dataset_indx].get_sample(sample_indx)


class ProportionalComposeDataset(ISDataset):
    """Each item picks a dataset with probability `ratios[d]`, then a uniform sample of it."""

    name = "ProportionalCompose"

    def __init__(self, datasets: Sequence[ISDataset], ratios: Sequence[float], **kwargs: Any):
        super().__init__(**kwargs)
        if len(ratios) != len(datasets) or not datasets:
            raise ValueError(f"ProportionalComposeDataset: {len(datasets)} datasets but "
                             f"{len(ratios)} ratios")
        ratios = np.asarray(ratios, dtype=np.float64)
        if np.any(ratios < 0) or ratios.sum() <= 0:
            raise ValueError(f"ProportionalComposeDataset: ratios must be >= 0 with a positive "
                             f"sum, got {ratios.tolist()}")
        self.ratios = ratios / ratios.sum()
        self._datasets = list(datasets)
        self.dataset_samples = list(range(sum(ds.get_samples_number() for ds in self._datasets)))

    def get_sample(self, index: int) -> DSample:
        rng = self.rng
        d = int(rng.choice(len(self._datasets), p=self.ratios))
        return self._datasets[d].get_sample(int(rng.integers(self._datasets[d].get_samples_number())))
