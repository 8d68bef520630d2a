"""Mask correction (rule 38): DAVIS-585 layout, initial masks, progressive merge, boundary
metrics recorded per click."""
import cv2
import numpy as np
import pytest

from isegm.data.datasets import Davis585Dataset, FolderInitMasks, GrabCutDataset
from isegm.data.io import DatasetError
from isegm.inference.clicker import Click
from isegm.inference.evaluation import evaluate_dataset, evaluate_sample, progressive_merge
from isegm.inference.predictors import get_predictor
from isegm.inference.utils import compute_noc_metric
from isegm.model import IGLRModel


def disk(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def write_davis585(root, frames=(("bear", 2), ("car", 1)), shape=(60, 80)):
    """DAVIS-585 layout: <seq>/<name>.jpg, <name>.png, init_stm_<name>.png, init_sp_<name>.png."""
    rng = np.random.default_rng(0)
    truths = {}
    for seq, count in frames:
        (root / seq).mkdir(parents=True)
        for k in range(count):
            name = f"{k:05d}"
            gt = disk(shape, (30, 35 + 5 * k), 15)
            image = rng.integers(0, 60, size=shape + (3,), dtype=np.uint8)
            image[gt] += 150
            cv2.imwrite(str(root / seq / f"{name}.jpg"), image)
            cv2.imwrite(str(root / seq / f"{name}.png"), gt.astype(np.uint8) * 255)
            cv2.imwrite(str(root / seq / f"init_stm_{name}.png"), gt.astype(np.uint8) * 255)
            sp = gt.copy()
            sp[:, :35] = False                      # half of the object missing
            cv2.imwrite(str(root / seq / f"init_sp_{name}.png"), sp.astype(np.uint8) * 255)
            truths[f"{seq}/{name}"] = gt
    return truths


def test_davis585_loader_reads_the_layout(tmp_path):
    truths = write_davis585(tmp_path)
    stm = Davis585Dataset(tmp_path)
    sp = Davis585Dataset(tmp_path, init_mask_mode='sp')
    assert len(stm) == 3
    ids = [stm.get_sample(i).sample_id for i in range(3)]
    assert ids == ["bear/00000", "bear/00001", "car/00000"]
    sample = stm.get_sample(1)
    assert np.array_equal(sample.gt_mask == 1, truths["bear/00001"])
    assert np.array_equal(sample.init_mask, truths["bear/00001"])
    assert sp.get_sample(1).init_mask.sum() < truths["bear/00001"].sum()


def test_davis585_errors_name_the_file(tmp_path):
    write_davis585(tmp_path)
    (tmp_path / "car" / "init_sp_00000.png").unlink()
    with pytest.raises(DatasetError, match="init_sp_00000.png"):
        Davis585Dataset(tmp_path, init_mask_mode='sp')
    with pytest.raises(ValueError, match="stm, sp"):
        Davis585Dataset(tmp_path, init_mask_mode='vos')
    cv2.imwrite(str(tmp_path / "bear" / "init_stm_00000.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="init_stm_00000.png.*expected 80x60"):
        Davis585Dataset(tmp_path).get_sample(0)
    with pytest.raises(DatasetError, match="does not exist"):
        Davis585Dataset(tmp_path / "nope")


def test_progressive_merge_changes_only_the_clicked_component():
    prev = np.zeros((20, 20), bool)
    prev[2:8, 2:8] = True
    pred = np.zeros((20, 20), bool)
    pred[12:16, 12:16] = True      # a new component
    pred[0:2, 15:20] = True        # another new component
    # pred drops prev's square entirely
    merged = progressive_merge(prev, pred, Click(True, (13, 13)))
    want = prev.copy()
    want[12:16, 12:16] = True
    assert np.array_equal(merged, want)
    # a negative click on the dropped square removes it and nothing else
    merged = progressive_merge(prev, pred, Click(False, (4, 4)))
    assert not merged.any()
    # a click where prediction and previous mask agree changes nothing
    assert np.array_equal(progressive_merge(prev, pred, Click(True, (10, 0))), prev)
    assert merged is not prev


def test_perfect_initial_mask_needs_one_click_and_records_click_zero(tmp_path):
    write_davis585(tmp_path)
    dataset = Davis585Dataset(tmp_path)                 # stm masks are perfect here
    stats = {}
    ious, _ = evaluate_dataset(dataset, get_predictor("empty"), show_progress=False,
                               max_iou_thr=0.9, stats=stats, boundary_metrics=True)
    # the first click is negative at (0, 0) (no error anywhere); merge keeps the perfect mask
    # although the predictor returns an empty mask
    assert [len(x) for x in ious] == [1, 1, 1]
    assert all(x[0] == 1.0 for x in ious)
    assert stats["init_iou"] == [1.0, 1.0, 1.0]
    assert [b.tolist() for b in stats["biou"]] == [[1.0]] * 3
    assert [a.tolist() for a in stats["assd"]] == [[0.0]] * 3
    noc, nof = compute_noc_metric(ious, [0.85, 0.9], max_clicks=20)
    assert list(noc) == [1.0, 1.0] and list(nof) == [0, 0]
    # without merge the empty prediction replaces the perfect mask
    ious, _ = evaluate_dataset(dataset, get_predictor("empty"), show_progress=False,
                               max_iou_thr=0.9, merge=False)
    assert all(len(x) == 20 and x.max() == 0.0 for x in ious)


def test_initial_sp_masks_improve_with_clicks_under_merge(tmp_path):
    write_davis585(tmp_path)
    stats = {}
    ious, _ = evaluate_dataset(Davis585Dataset(tmp_path, init_mask_mode='sp'),
                               get_predictor("oracle"), show_progress=False, max_iou_thr=0.9,
                               stats=stats)
    # the first click lands in the missing half (a positive click); the oracle predicts the
    # whole object, whose XOR component at the click is exactly the missing half
    assert all(x.tolist() == [1.0] for x in ious)
    assert all(0.3 < v < 0.8 for v in stats["init_iou"])


@pytest.fixture(scope="module")
def tiny_iglr():
    import torch
    torch.manual_seed(0)
    return IGLRModel("mit_b0", infer_size=64, refine_size=64).eval()


def test_empty_initial_mask_without_merge_is_the_standard_protocol(grabcut_root, tiny_iglr):
    dataset = GrabCutDataset(grabcut_root)
    sample = dataset.get_sample(0)
    image, gt = sample.image[:160, :200], sample.gt_mask[:160, :200]
    predictor = get_predictor("iglr", tiny_iglr)
    clicks, ious, probs = evaluate_sample(image, gt, predictor, max_iou_thr=1.01, max_clicks=6)
    empty = np.zeros(gt.shape, bool)
    clicks2, ious2, probs2 = evaluate_sample(image, gt, predictor, max_iou_thr=1.01, max_clicks=6,
                                             init_mask=empty, merge=False)
    assert [c.coords for c in clicks] == [c.coords for c in clicks2]
    assert np.array_equal(ious, ious2) and np.array_equal(probs, probs2)


def test_folder_init_masks_for_any_dataset(tmp_path, grabcut_root):
    dataset = GrabCutDataset(grabcut_root)
    indices = [0, 1]
    folder = tmp_path / "init"
    folder.mkdir()
    for i in indices:
        sample = dataset.get_sample(i)
        cv2.imwrite(str(folder / f"{sample.sample_id}.png"),
                    (sample.gt_mask == 1).astype(np.uint8) * 255)
    stats = {}
    ious, _ = evaluate_dataset(dataset, get_predictor("oracle"), indices=indices,
                               show_progress=False, max_iou_thr=0.9, stats=stats,
                               init_masks=FolderInitMasks(folder))
    assert stats["init_iou"] == [1.0, 1.0] and all(x.tolist() == [1.0] for x in ious)
    with pytest.raises(DatasetError, match="no file"):
        evaluate_dataset(dataset, get_predictor("oracle"), indices=[2], show_progress=False,
                         max_iou_thr=0.9, init_masks=FolderInitMasks(folder))


def test_initial_mask_of_wrong_size_is_refused():
    gt = np.zeros((20, 20), np.int32)
    gt[5:10, 5:10] = 1
    with pytest.raises(ValueError, match="initial mask of shape"):
        evaluate_sample(np.zeros((20, 20, 3), np.uint8), gt, get_predictor("oracle"),
                        max_iou_thr=0.9, init_mask=np.zeros((10, 10), bool))
