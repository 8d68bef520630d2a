"""Data: reading benchmarks, samples, augmentation and training-time click sampling."""
from isegm.data.base import ISDataset
from isegm.data.io import DatasetError, read_image, read_mask
from isegm.data.points_sampler import MultiPointSampler
from isegm.data.sample import DSample

__all__ = ['ISDataset', 'DSample', 'DatasetError', 'MultiPointSampler', 'read_image', 'read_mask']
