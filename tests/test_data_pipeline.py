"""Augmentation alignment, training items, synthetic data, composition, DataLoader workers."""
import logging

import cv2
import numpy as np
import torch

from isegm.data.compose import ComposeDataset, ProportionalComposeDataset
from isegm.data.datasets import SyntheticDataset
from isegm.data.points_sampler import MultiPointSampler
from isegm.data.transforms import (ObjectCentricCrop, UniformRandomResize, build_train_augmentator,
                                   build_val_augmentator)
from isegm.utils.log import logger


def _shapes_image(seed):
    """A dark image with bright shapes; the mask is derived from the image itself."""
    rng = np.random.default_rng(seed)
    image = np.full((150, 210, 3), 20, np.uint8)
    for _ in range(4):
        cv2.circle(image, (int(rng.integers(20, 190)), int(rng.integers(20, 130))),
                   int(rng.integers(8, 30)), (235, 235, 235), -1)
    cv2.rectangle(image, (5, 100), (60, 106), (235, 235, 235), -1)    # asymmetric thin bar
    return image, (image[:, :, 0] > 128).astype(np.int32)


def test_augmentation_keeps_image_and_mask_aligned():
    aug = build_train_augmentator(crop_size=(96, 128))
    for seed in range(20):
        image, mask = _shapes_image(seed)
        aug.set_random_seed(seed)
        layers = np.stack([mask, 1 - mask, np.ones_like(mask)], axis=2)
        out = aug(image=image, mask=layers)
        assert out['image'].shape == (96, 128, 3) and out['mask'].shape == (96, 128, 3)
        assert out['mask'].dtype == np.int32
        from_image = cv2.cvtColor(out['image'], cv2.COLOR_RGB2GRAY) > 128
        obj = out['mask'][:, :, 0] == 1
        # away from edges (bilinear image vs nearest mask) the two agree exactly
        edge = cv2.dilate(obj.astype(np.uint8), np.ones((3, 3), np.uint8)) != \
            cv2.erode(obj.astype(np.uint8), np.ones((3, 3), np.uint8))
        assert np.array_equal(from_image[~edge], obj[~edge])
        # every layer went through the same geometry (padding is 0 in every layer)
        assert np.array_equal(out['mask'][:, :, 0] + out['mask'][:, :, 1], out['mask'][:, :, 2])


def test_object_centric_crop_centres_the_object():
    image = np.zeros((300, 400, 3), np.uint8)
    mask = np.zeros((300, 400), np.int32)
    mask[200:240, 300:360] = 5
    crop = ObjectCentricCrop(size=(64, 64), object_prob=1.0, scale_mean=2.0, scale_std=0.0,
                             jitter=0.0)
    out = crop(image=image, mask=mask)
    ys, xs = np.nonzero(out['mask'] == 5)
    assert abs(ys.mean() - 31.5) < 1.5 and abs(xs.mean() - 31.5) < 1.5
    # side = 2 * max(40, 60) = 120 px -> 60 px of object become 32 px
    assert abs((xs.max() - xs.min() + 1) - 32) <= 1
    resize = UniformRandomResize(scale_range=(0.5, 0.5))
    out = resize(image=image, mask=mask)
    assert out['image'].shape == (150, 200, 3) and (out['mask'] == 5).sum() == 20 * 30
    val = build_val_augmentator((64, 64))(image=image, mask=mask)
    assert val['image'].shape == (64, 64, 3) and (val['mask'] == 5).any()


def test_training_item_layout_and_reproducibility():
    dataset = SyntheticDataset(num_samples=6, image_size=(160, 200),
                               augmentator=build_train_augmentator((96, 96)),
                               points_sampler=MultiPointSampler(8, first_click_center=True))
    torch.manual_seed(7)
    item = dataset[2]
    assert item['images'].shape == (3, 96, 96) and item['images'].dtype == torch.float32
    assert 0.0 <= item['images'].min() and item['images'].max() <= 1.0
    assert item['points'].shape == (16, 3) and item['instances'].shape == (1, 96, 96)
    gt = item['instances'][0]
    assert set(torch.unique(gt).tolist()) <= {0.0, 1.0} and gt.sum() > 0
    pos = item['points'][:8]
    pos = pos[pos[:, 0] >= 0].long()
    assert pos[0, 2] == 0 and torch.all(gt[pos[:, 0], pos[:, 1]] == 1)
    torch.manual_seed(7)
    again = dataset[2]
    for key in ('images', 'points', 'instances'):
        assert torch.equal(item[key], again[key])


def test_synthetic_is_deterministic_and_varied():
    train = SyntheticDataset(num_samples=12, seed=3)
    order_a = [train.get_sample(i) for i in range(12)]
    order_b = {i: SyntheticDataset(num_samples=12, seed=3).get_sample(i) for i in (11, 4, 0)}
    for i, sample in order_b.items():
        assert np.array_equal(sample.image, order_a[i].image)
        assert np.array_equal(sample.encoded_masks, order_a[i].encoded_masks)
    assert order_a[0].image.shape == (320, 320, 3)
    counts = [len(s) for s in order_a]
    assert min(counts) >= 1 and max(counts) >= 3
    # objects occlude: masks are disjoint, each object's mask is its visible part
    inst = order_a[0].encoded_masks[:, :, 0]
    total = sum(order_a[0].get_area(k) for k in order_a[0].objects_ids)
    assert total <= (inst > 0).sum()
    assert not np.array_equal(order_a[0].image, SyntheticDataset(num_samples=12, seed=4).get_sample(0).image)
    val = SyntheticDataset(num_samples=5, seed=3, split='val')
    for i in range(5):
        sample = val.get_sample(i)
        assert len(sample) == 1 and sample.gt_mask.sum() >= 0.01 * 320 * 320
        assert not np.array_equal(sample.image, order_a[i].image)
    # a textured background: not a flat colour
    assert order_a[1].image.reshape(-1, 3).std(axis=0).min() > 5


def test_min_object_area_drops_are_counted_and_logged():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        dataset = SyntheticDataset(num_samples=4, image_size=(96, 96), min_object_area=10 ** 6,
                                   keep_background_prob=1.0)
        item = dataset[0]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert dataset.stats['small_objects_dropped'] >= 1
    assert item['instances'].sum() == 0 and torch.all(item['points'][:12] == -1)
    assert any('min_object_area' in r.getMessage() and 'synthetic_train_00000' in r.getMessage()
               for r in records)


def test_compose_datasets():
    a = SyntheticDataset(num_samples=3, image_size=(64, 64), seed=1)
    b = SyntheticDataset(num_samples=2, image_size=(64, 64), seed=2)
    composed = ComposeDataset([a, b])
    assert len(composed) == 5
    assert np.array_equal(composed.get_sample(4).image, b.get_sample(1).image)
    prop = ProportionalComposeDataset([a, b], ratios=[0.0, 1.0], epoch_len=7)
    assert len(prop) == 7
    torch.manual_seed(0)
    item = prop[0]
    assert item['images'].shape == (3, 64, 64)
    images_b = [b.get_sample(i).image for i in range(2)]
    sample = prop.get_sample(0)
    assert any(np.array_equal(sample.image, im) for im in images_b)


def test_dataloader_workers_draw_different_augmentations():
    dataset = SyntheticDataset(num_samples=1, image_size=(96, 96), epoch_len=4,
                               augmentator=build_train_augmentator((64, 64)))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    images = [batch['images'][0] for batch in loader]
    assert len(images) == 4
    # worker 0 serves items 0 and 2, worker 1 items 1 and 3: all four crops differ
    assert len({tuple(im.flatten()[::97].tolist()) for im in images}) == 4


def test_fixed_seed_items_do_not_depend_on_torch_state():
    """Validation items (fixed_seed): the same crop, object and clicks per index, whatever
    torch's generator did before; without it, items follow torch's generator."""
    def make(**kw):
        return SyntheticDataset(num_samples=6, image_size=(96, 96), split='val',
                                augmentator=build_val_augmentator((64, 64)),
                                points_sampler=MultiPointSampler(6), **kw)
    fixed = make(fixed_seed=0)
    torch.manual_seed(1)
    first = [fixed[i] for i in range(6)]
    torch.manual_seed(2)
    torch.rand(100)
    again = [make(fixed_seed=0)[i] for i in reversed(range(6))][::-1]
    for a, b in zip(first, again):
        for key in ('images', 'points', 'instances'):
            assert torch.equal(a[key], b[key])
    other = make(fixed_seed=1)
    assert any(not torch.equal(a['points'], other[i]['points']) for i, a in enumerate(first))


def test_zoom_crops_reach_the_target_crops_zoom():
    """zoom_prob: object crops built as the target crop around a poor first prediction (a blob
    of 0.1-0.8 of the object, x 1.4, at least 10 px) zoom beyond max_zoom (4x), as the target
    crop does at inference."""
    import random
    mask = np.zeros((400, 400, 1), np.int32)
    mask[180:220, 180:220] = 1                 # a small 40 x 40 object
    image = np.zeros((400, 400, 3), np.uint8)
    zooms = {}
    for name, prob in (('plain', 0.0), ('zoom', 1.0)):
        crop = ObjectCentricCrop(size=(96, 96), object_prob=1.0, zoom_prob=prob)
        crop.set_random_state(np.random.default_rng(0), random.Random(0))
        zooms[name] = np.array([crop.get_params_dependent_on_data(
            {'shape': mask.shape}, {'mask': mask})['matrix'][0, 0] for _ in range(200)])
    assert zooms['plain'].max() <= 4.0 + 1e-6
    # blob 4-32 px -> crop max(1.4 x blob, 10) px -> zoom 2.1x to 9.6x
    assert zooms['zoom'].max() > 7.0 and (zooms['zoom'] > 4.0).mean() > 0.2
    assert zooms['zoom'].max() <= 9.6 + 1e-6
    crop = ObjectCentricCrop(size=(96, 96), object_prob=1.0, zoom_prob=1.0)
    out = crop(image=image, mask=mask)
    assert out['mask'].shape == (96, 96, 1) and out['mask'].mean() > 0.3  # inside the object
