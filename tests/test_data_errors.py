"""Bad input: each error names its culprit."""
import json
import os

import cv2
import numpy as np
import pytest

from isegm.data.datasets import (GrabCutDataset, ImagesDirDataset, PascalVocDataset,
                                 SBDEvaluationDataset, get_dataset)
from isegm.data.io import DatasetError, read_image
from isegm.data.sample import DSample
from isegm.utils.config import ConfigPathError, load_config


def _grabcut(root, n=2, size=(40, 50)):
    (root / 'data_GT').mkdir(parents=True)
    (root / 'boundary_GT').mkdir()
    for i in range(n):
        cv2.imwrite(str(root / 'data_GT' / f'im{i}.jpg'), np.full(size + (3,), 90, np.uint8))
        mask = np.zeros(size, np.uint8)
        mask[10:20, 10:30] = 255
        cv2.imwrite(str(root / 'boundary_GT' / f'im{i}.bmp'), mask)
    return root


def test_corrupt_image_names_file(tmp_path):
    root = _grabcut(tmp_path / 'gc')
    bad = root / 'data_GT' / 'im1.jpg'
    bad.write_bytes(b'this is not a jpeg')
    dataset = GrabCutDataset(root)
    dataset.get_sample(0)
    with pytest.raises(DatasetError, match='im1.jpg'):
        dataset.get_sample(1)
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    with pytest.raises(DatasetError, match='empty.png'):
        read_image(empty)
    with pytest.raises(DatasetError, match='missing.png'):
        read_image(tmp_path / 'missing.png')


def test_mask_size_mismatch_names_both_files(tmp_path):
    root = _grabcut(tmp_path / 'gc')
    cv2.imwrite(str(root / 'boundary_GT' / 'im0.bmp'), np.zeros((41, 50), np.uint8))
    with pytest.raises(DatasetError) as err:
        GrabCutDataset(root).get_sample(0)
    assert 'im0.bmp' in str(err.value) and 'im0.jpg' in str(err.value)


def test_empty_folder_names_folder(tmp_path):
    (tmp_path / 'gc' / 'data_GT').mkdir(parents=True)
    (tmp_path / 'gc' / 'boundary_GT').mkdir()
    with pytest.raises(DatasetError, match='data_GT'):
        GrabCutDataset(tmp_path / 'gc')
    with pytest.raises(DatasetError, match='does not exist'):
        ImagesDirDataset(tmp_path / 'nowhere')


def test_image_without_mask_names_image(tmp_path):
    root = _grabcut(tmp_path / 'gc')
    os.remove(root / 'boundary_GT' / 'im1.bmp')
    with pytest.raises(DatasetError, match='im1.jpg'):
        GrabCutDataset(root)


def test_unknown_instance_id_names_file(tmp_path):
    from scipy.io import savemat
    import pickle
    root = tmp_path / 'sbd'
    (root / 'img').mkdir(parents=True)
    (root / 'inst').mkdir()
    cv2.imwrite(str(root / 'img' / 'a.jpg'), np.zeros((20, 30, 3), np.uint8))
    inst = np.zeros((20, 30), np.uint8)
    inst[2:8, 2:9] = 1
    savemat(root / 'inst' / 'a.mat', {'GTinst': {'Segmentation': inst}})
    (root / 'val.txt').write_text('a\n')
    # a stale cache listing instance 7
    (root / 'val_images_and_ids_list.json').write_text(json.dumps([['a', 1], ['a', 7]]))
    dataset = SBDEvaluationDataset(root)
    assert dataset.get_sample(0).gt_mask.sum() == 42
    with pytest.raises(DatasetError) as err:
        dataset.get_sample(1)
    assert 'a.mat' in str(err.value) and '7' in str(err.value)

    voc = tmp_path / 'voc'
    for d in ('JPEGImages', 'SegmentationObject', 'ImageSets/Segmentation'):
        (voc / d).mkdir(parents=True)
    cv2.imwrite(str(voc / 'JPEGImages' / 'x.jpg'), np.zeros((20, 30, 3), np.uint8))
    obj = np.zeros((20, 30, 3), np.uint8)
    obj[3:9, 3:9] = (0, 0, 128)  # BGR of palette 1 -> gray 38
    cv2.imwrite(str(voc / 'SegmentationObject' / 'x.png'), obj)
    with open(voc / 'ImageSets' / 'Segmentation' / 'test.pickle', 'wb') as f:
        pickle.dump((['x', 'x'], [38, 75]), f)
    voc_dataset = PascalVocDataset(voc, split='test')
    assert voc_dataset.get_sample(0).gt_mask.sum() == 36
    with pytest.raises(DatasetError) as err:
        voc_dataset.get_sample(1)
    assert 'x.png' in str(err.value) and '75' in str(err.value)

    sample = DSample(np.zeros((5, 5, 3), np.uint8), np.eye(5, dtype=np.int32), objects_ids=[1],
                     sample_id='eye')
    with pytest.raises(DatasetError, match="'eye'.*id 3"):
        sample.get_object_mask(3)
    with pytest.raises(DatasetError, match="'eye'.*value 2"):
        DSample(np.zeros((5, 5, 3), np.uint8), np.eye(5, dtype=np.int32), objects_ids=[2],
                sample_id='eye')


def test_unknown_dataset_name_lists_known(tmp_path):
    cfg = load_config()
    with pytest.raises(KeyError) as err:
        get_dataset('GrabCutt', cfg)
    message = str(err.value)
    assert 'GrabCutt' in message
    for name in ('GrabCut', 'Berkeley', 'DAVIS', 'SBD', 'SBD_Train', 'PascalVOC', 'COCO_MVal',
                 'COCO_LVIS', 'ImagesDir', 'Synthetic'):
        assert name in message


def test_missing_root_names_key(tmp_path, monkeypatch):
    monkeypatch.setenv('DAVIS_PATH', str(tmp_path / 'no_davis'))
    with pytest.raises(ConfigPathError) as err:
        get_dataset('DAVIS', load_config())
    assert 'DAVIS_PATH' in str(err.value) and 'no_davis' in str(err.value)


def test_truncated_jpeg_is_refused_and_header_sizes_need_no_decoding(tmp_path):
    from isegm.data.io import check_file_sizes, image_size
    root = _grabcut(tmp_path / 'gc')
    image = root / 'data_GT' / 'im0.jpg'
    assert image_size(image) == (40, 50) and image_size(root / 'boundary_GT' / 'im0.bmp') == (40, 50)
    data = image.read_bytes()
    image.write_bytes(data[:data.index(b'\xff\xda') + 30])  # cut inside the compressed data
    assert image_size(image) == (40, 50)  # the header is intact
    with pytest.raises(DatasetError, match=r"cannot decode '.*im0.jpg': the JPEG data is "
                                           r"truncated"):
        read_image(image)
    check_file_sizes(image, [root / 'boundary_GT' / 'im0.bmp'])
    cv2.imwrite(str(root / 'boundary_GT' / 'im1.bmp'), np.zeros((41, 50), np.uint8))
    with pytest.raises(DatasetError, match=r"mask '.*im1.bmp' is 50x41 \(WxH\) but its image "
                                           r"'.*im1.jpg' is 50x40"):
        GrabCutDataset(root).check_files()
    assert GrabCutDataset(root).check_files([0]) == 1
