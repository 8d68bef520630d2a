"""Dataset loaders, the `DATASETS` registry and `get_dataset(name, cfg)`.

    from isegm.data.datasets import get_dataset
    dataset = get_dataset('GrabCut', cfg)                       # evaluation
    trainset = get_dataset('Synthetic', cfg, for_training=True, augmentator=aug,
                           points_sampler=sampler, num_samples=4000)

Evaluation names: GrabCut, Berkeley, DAVIS, DAVIS585 (mask correction: each sample carries an
initial mask, `init_mask_mode='stm'|'sp'`), SBD (val, per instance), SBD_Train (train list, per
instance), PascalVOC (val, per instance), COCO_MVal, Synthetic (val split, one object each),
ImagesDir (your own data, one sample per mask).
Training names (`for_training=True`): SBD_Train (multi-object SBDDataset), COCO_LVIS, Synthetic
(train split), ImagesDir, COCO_MVal. COCO_MVal_train / COCO_MVal_val: the fixed 350 / 50 split of
COCO_MVal (`CocoMValDataset(split=...)`) for CPU-scale training with held-out real images.
Keyword arguments go to the dataset constructor.
"""
from __future__ import annotations

from typing import Any, Callable

from isegm.data.base import ISDataset
from isegm.data.compose import ComposeDataset, ProportionalComposeDataset
from isegm.data.datasets.coco_lvis import CocoLvisDataset
from isegm.data.datasets.davis import CocoMValDataset, DavisDataset
from isegm.data.datasets.davis585 import Davis585Dataset, FolderInitMasks
from isegm.data.datasets.grabcut import BerkeleyDataset, GrabCutDataset
from isegm.data.datasets.images_dir import ImagesDirDataset
from isegm.data.datasets.pascalvoc import PascalVocDataset
from isegm.data.datasets.sbd import SBDDataset, SBDEvaluationDataset
from isegm.data.datasets.synthetic import SyntheticDataset
from isegm.utils.registry import Registry

__all__ = ['GrabCutDataset', 'BerkeleyDataset', 'DavisDataset', 'SBDDataset',
           'SBDEvaluationDataset', 'PascalVocDataset', 'CocoLvisDataset', 'ImagesDirDataset',
           'CocoMValDataset', 'Davis585Dataset', 'FolderInitMasks', 'SyntheticDataset', 'ComposeDataset', 'ProportionalComposeDataset',
           'DATASETS', 'get_dataset']

# name -> builder(cfg, for_training, **kwargs)
DATASETS: Registry[Callable[..., ISDataset]] = Registry("dataset")


def _rooted(cls: type, key: str, **defaults: Any) -> Callable[..., ISDataset]:
    def build(cfg: Any, for_training: bool = False, **kwargs: Any) -> ISDataset:
        return cls(cfg.get_path(key), **{**defaults, **kwargs})
    build.__doc__ = f"{cls.__name__}(cfg.get_path('{key}'), ...)"
    return build


def _sbd_train(cfg: Any, for_training: bool = False, **kwargs: Any) -> ISDataset:
    root = cfg.get_path('SBD_PATH')
    if for_training:
        return SBDDataset(root, **{'split': 'train', **kwargs})
    dataset = SBDEvaluationDataset(root, **{'split': 'train', **kwargs})
    dataset.name = 'SBD_Train'
    return dataset


def _images_dir(cfg: Any, for_training: bool = False, **kwargs: Any) -> ISDataset:
    """Training: one multi-object sample per image; evaluation: one sample per mask."""
    return ImagesDirDataset(cfg.get_path('IMAGES_DIR_PATH'),
                            **{'per_instance': not for_training, **kwargs})


def _synthetic(cfg: Any, for_training: bool = False, **kwargs: Any) -> ISDataset:
    return SyntheticDataset(**{'split': 'train' if for_training else 'val', **kwargs})


DATASETS.add('GrabCut', _rooted(GrabCutDataset, 'GRABCUT_PATH'))
DATASETS.add('Berkeley', _rooted(BerkeleyDataset, 'BERKELEY_PATH'))
DATASETS.add('DAVIS', _rooted(DavisDataset, 'DAVIS_PATH'))
DATASETS.add('COCO_MVal', _rooted(CocoMValDataset, 'COCO_MVAL_PATH'))
DATASETS.add('COCO_MVal_train', _rooted(CocoMValDataset, 'COCO_MVAL_PATH', split='train'))
DATASETS.add('COCO_MVal_val', _rooted(CocoMValDataset, 'COCO_MVAL_PATH', split='val'))
DATASETS.add('DAVIS585', _rooted(Davis585Dataset, 'DAVIS585_PATH'))
DATASETS.add('SBD', _rooted(SBDEvaluationDataset, 'SBD_PATH', split='val'))
DATASETS.add('SBD_Train', _sbd_train)
DATASETS.add('PascalVOC', _rooted(PascalVocDataset, 'PASCALVOC_PATH', split='val'))
DATASETS.add('COCO_LVIS', _rooted(CocoLvisDataset, 'LVIS_v1_PATH', split='train'))
DATASETS.add('ImagesDir', _images_dir)
DATASETS.add('Synthetic', _synthetic)


def get_dataset(name: str, cfg: Any, for_training: bool = False, **kwargs: Any) -> ISDataset:
    """Build the dataset registered as `name`, its root from `cfg.get_path('<KEY>')`.

    Raises KeyError listing the known names for an unknown `name`, and
    `isegm.utils.config.ConfigPathError` naming key, path and layout for a missing root.
    """
    return DATASETS.get(name)(cfg, for_training=for_training, **kwargs)
