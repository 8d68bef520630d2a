"""Loaders on fixtures written at test time in each benchmark's true on-disk format."""
import json
import pickle

import cv2
import numpy as np
from PIL import Image
from scipy.io import loadmat, savemat

from isegm.data.datasets import (BerkeleyDataset, CocoLvisDataset, DavisDataset,
                                 ImagesDirDataset, PascalVocDataset, SBDDataset,
                                 SBDEvaluationDataset, get_dataset)
from isegm.utils.config import load_config


def _rand_image(rng, h, w):
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _write_rgb(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


# --- SBD -----------------------------------------------------------------------------------------
def _sbd(root):
    rng = np.random.default_rng(0)
    (root / 'img').mkdir(parents=True)
    (root / 'inst').mkdir()
    maps = {}
    for name in ('2008_000002', '2008_000003', '2008_000007'):
        inst = np.zeros((30, 40), np.uint8)
        maps[name] = inst
        _write_rgb(root / 'img' / f'{name}.jpg', _rand_image(rng, 30, 40))
    maps['2008_000002'][2:10, 2:12] = 3
    maps['2008_000002'][15:25, 5:30] = 1
    maps['2008_000003'][5:20, 5:20] = 2
    # a thin diagonal: area / bbox area = 20 / 400 < 0.08, dropped by the training loader
    maps['2008_000003'][np.arange(20) + 8, np.arange(20) + 20] = 4
    maps['2008_000007'][1:5, 1:5] = 1
    for name, inst in maps.items():
        gtinst = {'Segmentation': inst, 'Boundaries': np.zeros((1, 1), object),
                  'Categories': np.array([[15]], np.uint8)}
        savemat(root / 'inst' / f'{name}.mat', {'GTinst': gtinst})
    (root / 'train.txt').write_text('2008_000002\n2008_000003\n')
    (root / 'val.txt').write_text('2008_000003\n2008_000002\n2008_000007\n')
    return maps


def test_sbd_mat_layout_and_instance_order(tmp_path):
    root = tmp_path / 'SBD' / 'dataset'
    maps = _sbd(root)
    raw = loadmat(root / 'inst' / '2008_000002.mat')['GTinst'][0][0][0]
    np.testing.assert_array_equal(raw, maps['2008_000002'])

    val = SBDEvaluationDataset(root, split='val')
    assert val.dataset_samples == [('2008_000003', 2), ('2008_000003', 4), ('2008_000002', 1),
                                   ('2008_000002', 3), ('2008_000007', 1)]
    cache = root / 'val_images_and_ids_list.json'   # a JSON cache, never a pickle
    assert json.loads(cache.read_text()) == [[a, b] for a, b in val.dataset_samples]
    assert not (root / 'val_images_and_ids_list.pkl').exists()
    for i, (name, label) in enumerate(val.dataset_samples):
        gt = val.get_sample(i).gt_mask
        np.testing.assert_array_equal(gt, (maps[name] == label).astype(np.int32))
        assert not (gt == -1).any()
    # the cached list is read back as is
    assert SBDEvaluationDataset(root, split='val').dataset_samples == val.dataset_samples

    train = SBDDataset(root, split='train')
    assert len(train) == 2
    assert sorted(train.get_sample(0).objects_ids) == [0, 1]       # labels 1 and 3
    sample = train.get_sample(1)
    assert len(sample) == 1 and sample.get_area(sample.objects_ids[0]) == 225
    assert train.stats['buggy_instances_dropped'] == 1


# --- PascalVOC ------------------------------------------------------------------------------------
def _voc_palette():
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def test_pascalvoc_colour_pngs_gray_ids_and_void(tmp_path):
    root = tmp_path / 'voc'
    for d in ('JPEGImages', 'SegmentationObject', 'ImageSets/Segmentation'):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(1)
    palette = _voc_palette()
    index = np.zeros((30, 40), np.uint8)
    index[2:12, 2:12] = 1
    index[14:24, 2:20] = 3
    index[2:12, 25:38] = 2
    index[12, :] = 255                 # void line
    img = Image.fromarray(index, mode='P')
    img.putpalette(palette.ravel().tolist())
    img.save(root / 'SegmentationObject' / 'a.png')
    second = np.zeros((30, 40), np.uint8)
    second[5:15, 5:15] = 1
    img = Image.fromarray(second, mode='P')
    img.putpalette(palette.ravel().tolist())
    img.save(root / 'SegmentationObject' / 'b.png')
    for name in ('a', 'b'):
        _write_rgb(root / 'JPEGImages' / f'{name}.jpg', _rand_image(rng, 30, 40))
    (root / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('a\nb\n')

    gray = cv2.cvtColor(cv2.imread(str(root / 'SegmentationObject' / 'a.png')), cv2.COLOR_BGR2GRAY)
    assert gray[12, 0] == 220 and gray[5, 5] == 38 and gray[5, 30] == 75 and gray[20, 5] == 113

    dataset = PascalVocDataset(root, split='val')
    assert dataset.dataset_samples == [('a', 38), ('a', 75), ('a', 113), ('b', 38)]
    gt = dataset.get_sample(0).gt_mask
    assert (gt == 1).sum() == 100 and (gt == -1).sum() == 40
    assert gt[5, 5] == 1 and gt[12, 0] == -1 and gt[20, 5] == 0
    assert (dataset.get_sample(2).gt_mask == 1).sum() == 10 * 18
    # palette entries 1 and 16 share a gray level, so such instances merge (rule 46)
    to_gray = lambda rgb: cv2.cvtColor(np.array([[rgb[::-1]]], np.uint8), cv2.COLOR_BGR2GRAY)[0, 0]
    assert to_gray(palette[1]) == to_gray(palette[16])
    multi = PascalVocDataset(root, split='val', per_instance=False)
    assert len(multi) == 2 and len(multi.get_sample(0)) == 3


# --- COCO+LVIS ------------------------------------------------------------------------------------
def test_cocolvis_packed_layers_hierarchy_and_stuff(tmp_path):
    root = tmp_path / 'cocolvis'
    split = root / 'train'
    (split / 'images').mkdir(parents=True)
    (split / 'masks').mkdir()
    rng = np.random.default_rng(2)
    layer0 = np.zeros((30, 40), np.uint8)
    layer0[2:20, 2:20] = 1                 # obj 0: a person
    layer0[22:28, 2:38] = 2                # obj 3: stuff (road)
    layer1 = np.zeros((30, 40), np.uint8)
    layer1[4:10, 4:10] = 1                 # obj 1: head, child of obj 0
    layer1[2:12, 25:35] = 3                # obj 2: another root
    encoded = [cv2.imencode('.png', layer)[1] for layer in (layer0, layer1)]
    mapping = [(0, 1), (1, 1), (1, 3), (0, 2)]
    annotation = {}
    for image_id in ('000000000139', '000000000009'):
        _write_rgb(split / 'images' / f'{image_id}.jpg', _rand_image(rng, 30, 40))
        with open(split / 'masks' / f'{image_id}.pickle', 'wb') as f:
            pickle.dump((encoded, mapping), f)
        annotation[image_id] = {'num_instance_masks': 3, 'hierarchy': {
            0: {'parent': None, 'children': [1], 'node_level': 0},
            1: {'parent': 0, 'children': [], 'node_level': 1},
            2: None}}
    with open(split / 'hannotation.pickle', 'wb') as f:
        pickle.dump(annotation, f)

    dataset = CocoLvisDataset(root, split='train', stuff_prob=0.0)
    assert [k for k, _ in dataset.dataset_samples] == ['000000000009', '000000000139']
    sample = dataset.get_sample(0)
    assert sample.sample_id == '000000000009'
    assert sample.objects_ids == [0, 1, 2] and sample.root_objects == [0, 2]
    assert sample.objects[1]['parent'] == 0 and sample.objects[0]['children'] == [1]
    assert sample.get_area(0) == 18 * 18 and sample.get_area(1) == 36 and sample.get_area(2) == 100
    assert sample.get_background_mask()[25, 10]            # stuff zeroed -> background
    assert not (sample.encoded_masks[:, :, 0] == 2).any()

    with_stuff = CocoLvisDataset(root, split='train', stuff_prob=1.0).get_sample(1)
    assert with_stuff.objects_ids == [0, 1, 2, 3] and 3 in with_stuff.root_objects
    assert with_stuff.get_area(3) == 6 * 36


# --- Berkeley / DAVIS ------------------------------------------------------------------------------
def test_berkeley_ignore_and_davis_max_channel(tmp_path):
    rng = np.random.default_rng(3)
    berkeley = tmp_path / 'Berkeley'
    (berkeley / 'images').mkdir(parents=True)
    (berkeley / 'masks').mkdir()
    for name in ('42049', '100007', '3063'):
        _write_rgb(berkeley / 'images' / f'{name}.jpg', _rand_image(rng, 24, 32))
        mask = np.zeros((24, 32), np.uint8)
        mask[4:14, 4:14] = 255
        mask[14, 4:14] = 128
        cv2.imwrite(str(berkeley / 'masks' / f'{name}.png'), mask)
    dataset = BerkeleyDataset(berkeley)
    assert [dataset.get_sample(i).sample_id for i in range(3)] == ['100007', '3063', '42049']
    gt = dataset.get_sample(0).gt_mask
    assert (gt == 1).sum() == 100 and (gt == -1).sum() == 10

    davis = tmp_path / 'DAVIS'
    (davis / 'img').mkdir(parents=True)
    (davis / 'gt').mkdir()
    for name in ('bear', 'blackswan'):
        _write_rgb(davis / 'img' / f'{name}.jpg', _rand_image(rng, 24, 32))
        mask = np.zeros((24, 32, 3), np.uint8)
        mask[2:6, 2:6, 2] = 200            # red object in BGR: only channel 2 is non-zero
        mask[10:12, 10:20, 0] = 1          # any non-zero value counts
        cv2.imwrite(str(davis / 'gt' / f'{name}.png'), mask)
    dataset = DavisDataset(davis)
    assert len(dataset) == 2 and dataset.name == 'DAVIS'
    gt = dataset.get_sample(1).gt_mask
    assert gt.sum() == 16 + 20 and set(np.unique(gt)) == {0, 1}


# --- ImagesDir ------------------------------------------------------------------------------------
def test_images_dir_multi_mask_order_and_ignore(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / 'mine'
    (root / 'images').mkdir(parents=True)
    (root / 'masks').mkdir()
    _write_rgb(root / 'images' / 'cat.jpg', _rand_image(rng, 20, 20))
    _write_rgb(root / 'images' / 'dog_house.png', _rand_image(rng, 20, 20))
    masks = {}
    for k, name in enumerate(('dog_house_10', 'dog_house', 'dog_house_2', 'cat')):
        mask = np.zeros((20, 20), np.uint8)
        mask[k:k + 3 + k, 0:5] = 255
        mask[19, k] = 128
        masks[name] = mask
        cv2.imwrite(str(root / 'masks' / f'{name}.png'), mask)
    dataset = ImagesDirDataset(root)
    assert len(dataset) == 2
    cat = dataset.get_sample(0)
    assert cat.sample_id == 'cat' and len(cat) == 1
    dog = dataset.get_sample(1)
    assert dog.sample_id == 'dog_house' and dog.objects_ids == [0, 1, 2]
    for obj_id, name in zip(dog.objects_ids, ('dog_house', 'dog_house_2', 'dog_house_10')):
        gt = dog.get_object_mask(obj_id)
        np.testing.assert_array_equal(gt == 1, masks[name] > 128)
        # ignore from every mask of the image applies to each object
        assert (gt == -1).sum() == 3


def test_get_dataset_resolves_roots_from_config(tmp_path, monkeypatch):
    root = tmp_path / 'SBD' / 'dataset'
    _sbd(root)
    monkeypatch.setenv('SBD_PATH', str(root))
    cfg = load_config()
    val = get_dataset('SBD', cfg)
    assert isinstance(val, SBDEvaluationDataset) and len(val) == 5 and val.name == 'SBD'
    per_instance_train = get_dataset('SBD_Train', cfg)
    assert len(per_instance_train) == 4 and per_instance_train.name == 'SBD_Train'
    assert isinstance(get_dataset('SBD_Train', cfg, for_training=True), SBDDataset)
    synth = get_dataset('Synthetic', cfg, num_samples=3)
    assert synth.split == 'val' and len(synth) == 3
    assert get_dataset('Synthetic', cfg, for_training=True, num_samples=5).split == 'train'
