"""COCO+LVIS in RITM's packed format (protocol rule 47), for training.

    <root>/<split>/images/<image_id>.jpg
    <root>/<split>/masks/<image_id>.pickle      = (encoded_layers, objs_mapping)
    <root>/<split>/hannotation.pickle           = {image_id: {'num_instance_masks': n,
                                                   'hierarchy': {obj_id: None | {parent,
                                                                 children, node_level}}}}

Layers are PNG bytes (decoded with IMREAD_UNCHANGED, stacked HxWxL); objs_mapping[obj_id] =
(layer, value). obj_id < n are instances, >= n stuff: stuff is zeroed unless, with probability
`stuff_prob`, it joins as root objects.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from isegm.data.base import ISDataset
from isegm.data.io import DatasetError, check_same_size, read_image
from isegm.data.sample import DSample


class CocoLvisDataset(ISDataset):
    name = "COCO_LVIS"

    def __init__(self, dataset_path: str | os.PathLike, split: str = 'train',
                 stuff_prob: float = 0.0, allow_list_name: Optional[str] = None,
                 anno_file: str = 'hannotation.pickle', **kwargs: Any):
        super().__init__(**kwargs)
        self.dataset_path = Path(dataset_path)
        self._split_path = self.dataset_path / split
        self.split = split
        self._images_path = self._split_path / 'images'
        self._masks_path = self._split_path / 'masks'
        self.stuff_prob = stuff_prob
        anno_path = self._split_path / anno_file
        if not anno_path.is_file():
            raise DatasetError(f"COCO+LVIS annotation file '{anno_path}' does not exist")
        with open(anno_path, 'rb') as f:  # a pickle by RITM's design: the dataset is trusted
            annotation = pickle.load(f)
        if allow_list_name is not None:
            allow_path = self._split_path / allow_list_name
            if not allow_path.is_file():
                raise DatasetError(f"COCO+LVIS allow list '{allow_path}' does not exist")
            allowed = set(line.strip() for line in allow_path.read_text().splitlines())
            annotation = {k: v for k, v in annotation.items() if str(k) in allowed}
        self.dataset_samples = sorted(annotation.items())
        self.check_not_empty(self.dataset_samples, self._split_path, "annotated images")

    def get_sample(self, index: int) -> DSample:
        image_id, info = self.dataset_samples[index]
        image_path = self._images_path / f'{image_id}.jpg'
        masks_path = self._masks_path / f'{image_id}.pickle'
        image = read_image(image_path)
        if not masks_path.is_file():
            raise DatasetError(f"COCO+LVIS mask file '{masks_path}' does not exist")
        with open(masks_path, 'rb') as f:  # RITM's format (trusted dataset folder)
            encoded_layers, objs_mapping = pickle.load(f)
        layers = []
        for k, data in enumerate(encoded_layers):
            layer = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            if layer is None:
                raise DatasetError(f"layer {k} of '{masks_path}' is not a decodable PNG")
            layers.append(layer)
        masks = np.stack(layers, axis=2)
        check_same_size(image, masks, image_path, masks_path)

        num_instances = info['num_instance_masks']
        objects: dict[int, dict[str, Any]] = {}
        for obj_id, node in info['hierarchy'].items():
            if obj_id >= len(objs_mapping):
                raise DatasetError(f"object {obj_id} of image {image_id} in the hierarchy has no "
                                   f"mapping in '{masks_path}' ({len(objs_mapping)} objects)")
            node = node or {'parent': None, 'children': [], 'node_level': 0}
            objects[obj_id] = {'mapping': tuple(objs_mapping[obj_id]), 'parent': node['parent'],
                               'children': list(node['children'])}
        stuff = range(num_instances, len(objs_mapping))
        if self.stuff_prob > 0 and self.rng.random() < self.stuff_prob:
            for obj_id in stuff:
                objects[obj_id] = {'mapping': tuple(objs_mapping[obj_id]), 'parent': None,
                                   'children': []}
        elif len(stuff):
            masks = masks.copy()
            for obj_id in stuff:
                layer, value = objs_mapping[obj_id]
                plane = masks[:, :, layer]
                plane[plane == value] = 0
        return DSample(image, masks, objects=objects, sample_id=str(image_id))
