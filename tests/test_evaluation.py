"""Crops, predictors and the evaluation loop (evaluation-protocol.md §2, §4-5)."""
import numpy as np
import pytest
import torch

from isegm.inference.clicker import Click, Clicker
from isegm.inference.evaluation import evaluate_dataset, evaluate_sample
from isegm.inference.predictors import (PREDICTORS, clicks_to_points, get_predictor,
                                        predictor_name_for_mode)
from isegm.inference.crops import (ZoomIn, expand_bbox, get_bbox_iou, get_object_roi,
                                   target_crop_roi)
from isegm.inference.focus import focus_crop
from isegm.inference.utils import compute_noc_metric, get_bbox_from_mask, get_iou_thresholds


# --- crops -----------------------------------------------------------------------------------
def test_expand_bbox_rounds_half_to_even_and_min_crop():
    assert expand_bbox((0, 9, 0, 9), 1.0, 200) == (-96, 104, -96, 104)  # round(-95.5) = -96
    assert expand_bbox((10, 19, 0, 3), 1.4) == (8, 22, -1, 4)  # h = 14 -> 14.5 -/+ 7
    assert get_bbox_iou((0, 9, 0, 9), (0, 9, 5, 14)) == pytest.approx(5 / 15)


def test_object_roi_includes_positive_clicks_and_clamps():
    mask = np.zeros((50, 60), bool)
    mask[20:25, 20:25] = True
    clicks = [Click(True, (40, 50)), Click(False, (2, 2))]
    assert get_object_roi(mask, clicks, 1.0, 10) == (20, 40, 20, 50)
    assert get_object_roi(mask, clicks, 1.4, 200) == (0, 49, 0, 59)


def test_zoom_in_cvpr_rules():
    zoom = ZoomIn(target_size=40, skip_clicks=1, min_crop_size=10)
    image = torch.rand(1, 4, 60, 80)
    clicks = [Click(True, (30, 40), 0)]
    out, tclicks = zoom.transform(image, clicks)
    assert out is image and tclicks[0].coords == (30, 40)  # click 1: native full image
    probs = torch.zeros(1, 1, 60, 80)
    probs[0, 0, 25:35, 30:50] = 0.9
    assert zoom.inv_transform(probs, (60, 80)) is probs
    clicks.append(Click(False, (10, 10), 1))
    out, tclicks = zoom.transform(image, clicks)
    # rows 25..34: centre 29.5, h = 14 -> round(22.5) = 22, round(36.5) = 36 (half to even);
    # cols 30..49: centre 39.5, w = 28 -> round(25.5) = 26, round(53.5) = 54
    assert zoom._object_roi == (22, 36, 26, 54)
    assert tuple(out.shape[-2:]) == (round(15 * 40 / 29), 40)  # longest side = target
    assert tclicks[0].coords == pytest.approx((out.shape[2] * (30 - 22) / 15, 40 * (40 - 26) / 29))
    back = zoom.inv_transform(torch.ones(1, 1, *out.shape[-2:]), (60, 80))
    assert back.shape == (1, 1, 60, 80) and back.sum() == 15 * 29  # zero outside the ROI
    # rule 28f: an empty mask processes the full image but pastes into the stored ROI
    zoom._prev_probs = np.zeros((60, 80), np.float32)
    out, _ = zoom.transform(image, clicks + [Click(True, (30, 40), 2)])
    assert out is image
    back = zoom.inv_transform(torch.ones(1, 1, 60, 80), (60, 80))
    assert back.sum() == 15 * 29


def test_zoom_in_fixed_mode_uses_whole_image_first():
    zoom = ZoomIn(target_size=(32, 32), skip_clicks=-1)
    out, tclicks = zoom.transform(torch.rand(1, 3, 60, 80), [Click(True, (30, 40), 0)])
    assert tuple(out.shape[-2:]) == (32, 32) and zoom._object_roi == (0, 59, 0, 79)
    assert tclicks[0].coords == pytest.approx((32 * 30 / 60, 32 * 40 / 80))


def test_target_crop_roi():
    prev = np.zeros((100, 120), np.float32)
    clicks = [Click(True, (50, 60), 0)]
    prev[40:44, 50:54] = 0.495  # above 0.49
    bbox = get_bbox_from_mask(prev > 0.49)
    assert target_crop_roi(bbox, clicks, (100, 120)) == (0, 99, 0, 119)  # click 1
    clicks.append(Click(False, (5, 5), 1))
    assert target_crop_roi(None, clicks, (100, 120)) == (0, 99, 0, 119)  # empty prev
    # with the positive click: rows 40..50, cols 50..60 -> 1.4 * 11 = 15.4 about 45 / 55
    assert target_crop_roi(bbox, clicks, (100, 120), 1.4, 10) == (37, 53, 47, 63)
    # the negative click does not count; a mask alone (no positive click) is enough
    assert target_crop_roi(bbox, [Click(False, (5, 5), 0)] * 2, (100, 120), 1.0, 1) == \
        (40, 44, 50, 54)  # centre 41.5 -/+ 2, half to even


def test_focus_crop_strategies():
    h, w = 100, 100
    logits = np.full((h, w), -5.0, np.float32)
    logits[20:60, 20:60] = 5.0  # coarse object 40 x 40 (extent 39)
    prev = np.zeros((h, w), np.float32)
    target = (0, h, 0, w)
    # no previous mask: the coarse object's box, 1.4 * (39 + 1) = 56 about centre 39.5
    assert focus_crop(logits, prev, target, (40, 40)) == (11, 67, 11, 67)
    # a large diff component at the click (rows 20..59, cols 40..59): its box, scaled
    prev[20:60, 20:40] = 0.9
    assert focus_crop(logits, prev, target, (40, 50)) == (11, 67, 35, 63)
    # a thin diff (2 columns < 39 / 3): a square of half-side 0.2 * 39 = 7.8 around the click,
    # scaled to 1.4 * (15.6 + 1) = 23.24 about (40, 58) and truncated
    prev[20:60, 20:58] = 0.9
    assert focus_crop(logits, prev, target, (40, 58)) == (28, 51, 46, 69)
    assert focus_crop(logits, prev, target, (40, 58), strategy="click_square") == (28, 51, 46, 69)
    assert focus_crop(logits, prev, target, (40, 58), strategy="whole_object") == (11, 67, 11, 67)
    # clamped to the target crop
    assert focus_crop(logits, prev, (30, 50, 30, 50), (40, 58), "whole_object") == (30, 50, 30, 50)
    # under 10 px predicted: the whole image box
    tiny = np.full((h, w), -5.0, np.float32)
    tiny[5:7, 5:7] = 5.0
    assert focus_crop(tiny, np.zeros((h, w)), target, (5, 5)) == (0, 100, 0, 100)
    with pytest.raises(KeyError, match="diff, click_square, whole_object"):
        focus_crop(logits, prev, target, (40, 40), strategy="nope")


def test_clicks_to_points_layout():
    clicks = [Click(True, (1, 2), 0), Click(False, (3, 4), 1), Click(True, (5, 6), 2)]
    points = clicks_to_points([clicks])
    assert points.shape == (1, 4, 3)
    assert points[0].tolist() == [[1, 2, 0], [5, 6, 2], [3, 4, 1], [-1, -1, -1]]
    assert clicks_to_points([[]]).tolist() == [[[-1, -1, -1], [-1, -1, -1]]]


# --- predictors --------------------------------------------------------------------------------
def test_registry_lists_known_names():
    assert set(PREDICTORS.names()) == {"iglr", "coarse", "cv_grabcut", "oracle", "empty"}
    with pytest.raises(KeyError, match="known predictors: coarse, cv_grabcut, empty, iglr, oracle"):
        get_predictor("nobrs")
    with pytest.raises(ValueError, match="needs a model"):
        get_predictor("iglr", None)


@pytest.fixture(scope="module")
def tiny_models():
    from isegm.model import IGLRModel
    torch.manual_seed(0)
    full = IGLRModel("mit_b0", infer_size=64, refine_size=64).eval()
    coarse = IGLRModel("mit_b0", infer_size=64, use_refiner=False).eval()
    return full, coarse


def _toy_sample(h=72, w=96):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    gt = np.zeros((h, w), np.int32)
    gt[20:50, 30:70] = 1
    return image, gt


def test_network_predictors_on_toy_image(tiny_models):
    full, coarse = tiny_models
    image, gt = _toy_sample()
    assert predictor_name_for_mode("NoBRS", full) == "iglr"
    assert predictor_name_for_mode("NoBRS", coarse) == "coarse"
    with pytest.raises(ValueError, match="use_refiner"):
        get_predictor("iglr", coarse)
    for name, model, options in (("iglr", full, {}), ("coarse", coarse, {}),
                                 ("coarse", coarse, {"crop_mode": "zoom_in",
                                                     "zoom_in": ZoomIn(48, min_crop_size=20)})):
        predictor = get_predictor(name, model, "cpu", **options)
        clicks, ious, probs = evaluate_sample(image, gt, predictor, max_iou_thr=1.01, max_clicks=2)
        assert len(clicks) == 2 and ious.dtype == np.float32 and ious.shape == (2,)
        assert probs.shape == gt.shape and probs.dtype == np.float32
        assert np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
        assert predictor.model_time > 0


def test_coarse_probability_is_zero_outside_target_crop(tiny_models):
    _, coarse = tiny_models
    image, gt = _toy_sample()
    predictor = get_predictor("coarse", coarse, "cpu", with_flip=False)
    predictor.set_image(image)
    prev = np.zeros(gt.shape, np.float32)
    prev[30:40, 40:50] = 0.9
    clicker = Clicker(init_clicks=[Click(True, (35, 45)), Click(False, (60, 5))])
    probs = predictor.get_prediction(clicker, prev_mask=prev)
    # target crop: rows 30..39 -> h = 14 -> 28..42 ; cols 40..49 -> 38..52
    outside = np.ones(gt.shape, bool)
    outside[28:43, 38:53] = False
    assert (probs[outside] == 0).all() and (probs[~outside] > 0).all()


def test_flip_option_changes_prediction(tiny_models):
    full, _ = tiny_models
    image, gt = _toy_sample()
    results = []
    for flip in (True, False):
        predictor = get_predictor("iglr", full, "cpu", with_flip=flip)
        predictor.set_image(image)
        results.append(predictor.get_prediction(Clicker(init_clicks=[Click(True, (35, 50))])))
    assert not np.allclose(results[0], results[1])


def test_iglr_after_ten_clicks_keeps_previous_outside_focus(tiny_models):
    full, _ = tiny_models
    image, gt = _toy_sample()
    predictor = get_predictor("iglr", full, "cpu", with_flip=False, focus_strategy="click_square")
    predictor.set_image(image)
    prev = np.full(gt.shape, 0.25, np.float32)
    prev[20:50, 30:70] = 0.75
    clicks = [Click(i % 2 == 0, (25 + i, 35 + 2 * i)) for i in range(11)]
    probs = predictor.get_prediction(Clicker(init_clicks=clicks), prev_mask=prev)
    changed = ~np.isclose(probs, prev, atol=1e-5)
    assert changed.any() and changed.sum() < probs.size // 2  # only the focus box is replaced


# --- evaluation loop ---------------------------------------------------------------------------
class _ListDataset:
    name = "toy"

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def get_sample(self, index):
        class S:
            pass
        s = S()
        s.image, s.gt_mask = self.samples[index]
        s.sample_id = f"s{index}"
        return s


def test_evaluate_sample_stops_and_respects_min_clicks():
    image, gt = _toy_sample()
    oracle = get_predictor("oracle")
    _, ious, _ = evaluate_sample(image, gt, oracle, max_iou_thr=0.9)
    assert ious.tolist() == [1.0]
    _, ious, _ = evaluate_sample(image, gt, oracle, max_iou_thr=0.9, min_clicks=3)
    assert len(ious) == 3  # min_clicks delays the break only
    clicks, ious, _ = evaluate_sample(image, gt, oracle, max_iou_thr=1.01, max_clicks=4)
    assert len(ious) == 4 and [c.coords for c in clicks[1:]] == [(0, 0)] * 3  # rule 11


def test_grabcut_oracle_and_empty_predictors(grabcut_root):
    from isegm.data.datasets import GrabCutDataset
    dataset = GrabCutDataset(grabcut_root)
    assert len(dataset) == 50
    indices = [0, 7, 21, 49]
    stats = {}
    all_ious, _ = evaluate_dataset(dataset, get_predictor("oracle"), indices=indices,
                                   show_progress=False, stats=stats, max_iou_thr=0.9)
    noc, nof = compute_noc_metric(all_ious, get_iou_thresholds(0.9))
    assert noc == [1.0, 1.0, 1.0] and nof == [0, 0, 0] and stats["clicks"] == 4
    assert len(stats["sample_ids"]) == 4
    all_ious, _ = evaluate_dataset(dataset, get_predictor("empty"), indices=indices[:2],
                                   show_progress=False, max_iou_thr=0.9)
    noc, nof = compute_noc_metric(all_ious, get_iou_thresholds(0.9))
    assert noc == [20.0, 20.0, 20.0] and nof == [2, 2, 2]
    assert all(len(x) == 20 for x in all_ious)


def test_classical_grabcut_predictor_on_five_images(grabcut_root):
    from isegm.data.datasets import GrabCutDataset
    dataset = GrabCutDataset(grabcut_root)
    predictor = get_predictor("cv_grabcut")
    all_ious, _ = evaluate_dataset(dataset, predictor, indices=range(5), show_progress=False,
                                   max_iou_thr=0.9, max_clicks=3)
    first = np.array([ious[0] for ious in all_ious])
    best = np.array([ious.max() for ious in all_ious])
    assert len(all_ious) == 5 and (first > 0.05).all()
    assert np.median(best) > 0.6  # a real segmentation, not noise
    # deterministic
    again, _ = evaluate_dataset(dataset, predictor, indices=range(1), show_progress=False,
                                max_iou_thr=0.9, max_clicks=3)
    assert np.array_equal(again[0], all_ious[0])


def test_focus_component_box_equals_labelling_every_component():
    """The focus rule's component at the click (a flood fill) equals the box of that pixel's
    8-connected label from a full labelling, on random masks and windows."""
    from scipy import ndimage
    from isegm.inference.focus import _component_bbox
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(80):
        dh, dw = rng.integers(5, 60, 2)
        diff = (ndimage.uniform_filter(rng.random((dh, dw)), 3) > rng.uniform(0.4, 0.6))
        ys, xs = np.nonzero(diff)
        if len(ys) == 0:
            continue
        k = rng.integers(len(ys))
        oy, ox = rng.integers(0, 20, 2)
        labels, _ = ndimage.label(diff, structure=np.ones((3, 3)))
        comp = labels == labels[ys[k], xs[k]]
        image_size = (dh + oy + 5, dw + ox + 7)
        if comp.sum() < 10:
            expected = (0, image_size[0], 0, image_size[1])
        else:
            cy, cx = np.nonzero(comp)
            expected = (cy.min() + oy, cy.max() + oy, cx.min() + ox, cx.max() + ox)
        got = _component_bbox(diff.astype(np.uint8), int(ys[k] + oy), int(xs[k] + ox),
                              (int(oy), int(ox)), image_size)
        assert tuple(int(v) for v in got) == tuple(int(v) for v in expected)
        checked += 1
    assert checked > 60
