"""Real benchmark data from ../shared/datasets (skipped with a reason when absent)."""
import numpy as np

from isegm.data.datasets import CocoMValDataset, GrabCutDataset
from isegm.data.io import read_mask


def test_grabcut_50_samples_with_ignore_band(grabcut_root):
    dataset = GrabCutDataset(grabcut_root)
    assert len(dataset) == 50 and dataset.name == 'GrabCut'
    suffixes = {p.suffix for p in dataset.dataset_samples}
    assert suffixes == {'.jpg', '.JPG', '.bmp'}
    names = [p.name for p in dataset.dataset_samples]
    assert names == sorted(names)
    with_ignore = 0
    for i in range(len(dataset)):
        sample = dataset.get_sample(i)
        gt = sample.gt_mask
        assert gt.shape == sample.image.shape[:2] and sample.image.dtype == np.uint8
        assert set(np.unique(gt)) <= {-1, 0, 1} and (gt == 1).sum() > 100
        raw = read_mask(grabcut_root / 'boundary_GT' / f'{sample.sample_id}.bmp')
        np.testing.assert_array_equal(gt == -1, raw == 128)
        np.testing.assert_array_equal(gt == 1, raw > 128)
        with_ignore += int((gt == -1).any())
    assert with_ignore == 42


def test_coco_mval_400_samples_including_names_with_spaces(coco_mval_root):
    dataset = CocoMValDataset(coco_mval_root)
    assert len(dataset) == 400 and dataset.name == 'COCO_MVal'
    spaced = [i for i, p in enumerate(dataset.dataset_samples) if ' ' in p.name]
    assert len(spaced) == 75
    for i in spaced + [0, 399]:
        sample = dataset.get_sample(i)
        gt = sample.gt_mask
        assert gt.shape == sample.image.shape[:2]
        assert set(np.unique(gt)) == {0, 1}
        assert sample.sample_id == dataset.dataset_samples[i].stem
    assert dataset.get_sample(spaced[0]).sample_id.startswith('baseball bat')


def test_coco_mval_fixed_350_50_split(coco_mval_root):
    full = CocoMValDataset(coco_mval_root)
    train = CocoMValDataset(coco_mval_root, split='train')
    val = CocoMValDataset(coco_mval_root, split='val')
    assert (len(train), len(val)) == (350, 50)
    names = sorted(p.name for p in full.dataset_samples)
    assert [p.name for p in val.dataset_samples] == names[7::8]
    assert not {p.name for p in train.dataset_samples} & {p.name for p in val.dataset_samples}
    assert val.name == 'COCO_MVal_val' and val.get_sample(0).sample_id == names[7].rsplit('.', 1)[0]
    categories = {n.split('_')[0] for n in names[7::8]}
    assert len(categories) > 10  # spread over the categories, not one block of them
