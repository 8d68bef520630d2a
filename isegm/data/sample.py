"""`DSample`: one image with its encoded instance masks, ignore regions and object hierarchy.

Masks are stored encoded, as in RITM: an HxWxL integer array of L layers, and each object maps
to a (layer, value) pair, its mask being `layer == value`. Ignore regions are (layer, value) pairs
too. A sample of a one-object benchmark is simply `DSample(image, mask, objects_ids=[1],
ignore_ids=[-1])`, and `sample.gt_mask` is then its 1/0/-1 ground truth.

    sample = DSample(image, inst_map, objects_ids=[3, 5], sample_id="2008_000123")
    sample.augment(augmentator)           # image and masks transformed together
    sample.remove_small_objects(80)       # returns how many were dropped
    mask = sample.get_object_mask(sample.objects_ids[0])   # HxW int32, 1/0/-1
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any, Callable, Optional, Sequence

import numpy as np

from isegm.data.io import DatasetError

Mapping = tuple[int, int]


def label_areas(layer: np.ndarray) -> dict[int, int]:
    """value -> pixel count of one HxW integer layer (bincount when the values allow it)."""
    lo, hi = int(layer.min()), int(layer.max())
    if hi - lo < 1 << 16:
        counts = np.bincount((layer.ravel().astype(np.int64) - lo), minlength=hi - lo + 1)
        nz = np.nonzero(counts)[0]
        return {int(v) + lo: int(counts[v]) for v in nz}
    values, counts = np.unique(layer, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


class DSample:
    """One training/evaluation image with its objects.

    Args:
        image: HxWx3 uint8 RGB.
        encoded_masks: HxW or HxWxL integer array.
        objects_ids: values (layer 0) or (layer, value) pairs, one per object, all roots.
        objects: instead of `objects_ids`, a dict obj_id -> {'mapping': (layer, value),
            'parent': obj_id | None, 'children': [obj_id, ...]} (COCO+LVIS hierarchy).
        ignore_ids: values (layer 0) or (layer, value) pairs marking ignored pixels (-1 in
            every object mask).
        sample_id: a name for messages and evaluation logs (file stem or index).
    """

    def __init__(self, image: np.ndarray, encoded_masks: np.ndarray,
                 objects_ids: Optional[Sequence[Any]] = None,
                 objects: Optional[dict[int, dict[str, Any]]] = None,
                 ignore_ids: Optional[Sequence[Any]] = None,
                 sample_id: Any = None):
        if image.ndim != 3 or image.shape[2] != 3:
            raise DatasetError(f"sample '{sample_id}': image must be HxWx3, got shape {image.shape}")
        if encoded_masks.ndim == 2:
            encoded_masks = encoded_masks[:, :, None]
        if encoded_masks.shape[:2] != image.shape[:2]:
            raise DatasetError(f"sample '{sample_id}': masks {encoded_masks.shape[:2]} and image "
                               f"{image.shape[:2]} differ in size")
        self.image = image
        self.sample_id = sample_id
        self._encoded_masks = encoded_masks
        num_layers = encoded_masks.shape[2]

        def as_mapping(x: Any) -> Mapping:
            if isinstance(x, (tuple, list)):
                layer, value = int(x[0]), int(x[1])
            else:
                layer, value = 0, int(x)
            if not 0 <= layer < num_layers:
                raise DatasetError(f"sample '{sample_id}': object mapping {x} refers to layer "
                                   f"{layer}, but the masks have {num_layers} layer(s)")
            return layer, value

        if objects is not None and objects_ids is not None:
            raise ValueError("DSample: give either objects_ids or objects, not both")
        self._objects: dict[int, dict[str, Any]] = {}
        if objects is not None:
            for obj_id, info in objects.items():
                self._objects[obj_id] = {'mapping': as_mapping(info['mapping']),
                                         'parent': info.get('parent'),
                                         'children': list(info.get('children') or [])}
        elif objects_ids is not None:
            for indx, x in enumerate(objects_ids):
                self._objects[indx] = {'mapping': as_mapping(x), 'parent': None, 'children': []}
        self._ignored = [as_mapping(x) for x in (ignore_ids or [])]
        present: dict[int, set] = {}
        for obj_id, info in self._objects.items():
            layer, value = info['mapping']
            if layer not in present:
                present[layer] = set(label_areas(encoded_masks[:, :, layer]))
            if value not in present[layer]:
                raise DatasetError(f"sample '{sample_id}': object {obj_id} (layer {layer}, value "
                                   f"{value}) does not occur in its mask")
        self._augmented = False
        self._original = (self.image, self._encoded_masks, deepcopy(self._objects))

    # --- augmentation --------------------------------------------------------------------------
    def augment(self, augmentator: Optional[Callable[..., dict]]) -> None:
        """Apply `augmentator(image=, mask=)` (albumentations-style) to the image and all layers.

        Objects that disappear entirely (area 0) are removed, keeping the hierarchy consistent.
        """
        self.reset_augmentation()
        if augmentator is None:
            self._augmented = True
            return
        out = augmentator(image=self.image, mask=self._encoded_masks)
        self.image = out['image']
        masks = out['mask']
        self._encoded_masks = masks[:, :, None] if masks.ndim == 2 else masks
        self.remove_small_objects(1)
        self._augmented = True

    def reset_augmentation(self) -> None:
        if not self._augmented:
            return
        image, masks, objects = self._original
        self.image, self._encoded_masks, self._objects = image, masks, deepcopy(objects)
        self._augmented = False

    def remove_small_objects(self, min_area: int) -> int:
        """Drop objects with fewer than `min_area` pixels; return how many were dropped."""
        if min_area <= 0 or not self._objects:
            return 0
        areas = self._areas()
        small = [obj_id for obj_id, area in areas.items() if area < min_area]
        for obj_id in small:
            self._remove_object(obj_id)
        return len(small)

    def _areas(self) -> dict[int, int]:
        """obj_id -> pixel count, one histogram per layer."""
        per_layer: dict[int, dict[int, int]] = {}
        out = {}
        for obj_id, info in self._objects.items():
            layer, value = info['mapping']
            if layer not in per_layer:
                per_layer[layer] = label_areas(self._encoded_masks[:, :, layer])
            out[obj_id] = per_layer[layer].get(value, 0)
        return out

    def _area(self, obj_id: int) -> int:
        layer, value = self._objects[obj_id]['mapping']
        return int(np.count_nonzero(self._encoded_masks[:, :, layer] == value))

    def _remove_object(self, obj_id: int) -> None:
        info = self._objects.pop(obj_id)
        parent = info['parent']
        for child in info['children']:
            if child in self._objects:
                self._objects[child]['parent'] = parent
        if parent is not None and parent in self._objects:
            siblings = [c for c in self._objects[parent]['children'] if c != obj_id]
            self._objects[parent]['children'] = siblings + info['children']

    # --- masks ---------------------------------------------------------------------------------
    def _check_id(self, obj_id: int) -> dict[str, Any]:
        if obj_id not in self._objects:
            raise DatasetError(f"sample '{self.sample_id}': no object with id {obj_id}; "
                               f"known ids: {self.objects_ids}")
        return self._objects[obj_id]

    def get_object_mask(self, obj_id: int) -> np.ndarray:
        """HxW int32: 1 object, 0 background, -1 ignore."""
        layer, value = self._check_id(obj_id)['mapping']
        mask = (self._encoded_masks[:, :, layer] == value).astype(np.int32)
        for ign_layer, ign_value in self._ignored:
            mask[self._encoded_masks[:, :, ign_layer] == ign_value] = -1
        return mask

    def get_soft_object_mask(self, obj_id: int) -> np.ndarray:
        """HxW float32 target in [0, 1] (ignore counts as 0).

        Masks are transformed with nearest-neighbour interpolation on the encoded labels, so
        this is the binary object mask as float; it exists so that samplers with
        `soft_targets=True` get float targets.
        """
        return (self.get_object_mask(obj_id) > 0).astype(np.float32)

    def get_background_mask(self) -> np.ndarray:
        """HxW bool: pixels that belong to no object."""
        mask = np.ones(self.image.shape[:2], dtype=bool)
        for info in self._objects.values():
            layer, value = info['mapping']
            mask &= self._encoded_masks[:, :, layer] != value
        return mask

    @property
    def ignore_mask(self) -> np.ndarray:
        """HxW bool: ignored pixels."""
        mask = np.zeros(self.image.shape[:2], dtype=bool)
        for layer, value in self._ignored:
            mask |= self._encoded_masks[:, :, layer] == value
        return mask

    @property
    def gt_mask(self) -> np.ndarray:
        """HxW int32 1/0/-1 of the sample's single object (evaluation samples)."""
        if len(self._objects) != 1:
            raise DatasetError(f"sample '{self.sample_id}': gt_mask needs exactly one object, "
                               f"it has {len(self._objects)}")
        return self.get_object_mask(self.objects_ids[0])

    @property
    def objects_ids(self) -> list[int]:
        return list(self._objects)

    @property
    def root_objects(self) -> list[int]:
        return [k for k, v in self._objects.items() if v['parent'] is None]

    @property
    def objects(self) -> dict[int, dict[str, Any]]:
        """obj_id -> {'mapping', 'parent', 'children'} (a copy)."""
        return deepcopy(self._objects)

    def get_area(self, obj_id: int) -> int:
        self._check_id(obj_id)
        return self._area(obj_id)

    @property
    def encoded_masks(self) -> np.ndarray:
        return self._encoded_masks

    def __len__(self) -> int:
        return len(self._objects)
