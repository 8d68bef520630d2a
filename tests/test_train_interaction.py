"""Training-time interaction: iterative clicks (rule 53), focus boxes, refiner targets."""
import numpy as np
import pytest
import torch

from isegm.engine.interaction import (FocusBoxSampler, add_training_clicks, crop_refine_targets,
                                      crop_to_rois, last_click, target_crop_rois)


def _padded_points(m, clicks):
    pts = -torch.ones(1, 2 * m, 3)
    for row, (y, x, order) in clicks.items():
        pts[0, row] = torch.tensor([y, x, order], dtype=torch.float32)
    return pts


def test_iterative_click_lands_in_the_missed_region():
    # gt: a 40x40 image with a 20x20 object; prediction covers only its left half.
    gt = torch.zeros(1, 1, 40, 40)
    gt[0, 0, 10:30, 10:30] = 1
    prob = torch.zeros_like(gt)
    prob[0, 0, 10:30, 10:20] = 0.9
    m = 4
    points = _padded_points(m, {0: (20, 15, 0)})
    rng = np.random.default_rng(0)
    out = add_training_clicks(points, gt, prob, t=1, rng=rng)
    y, x, order = out[0, m - 1].tolist()       # row M - t: a positive click of round 1
    assert order == 1
    assert 10 <= y < 30 and 20 <= x < 30       # inside the false-negative half
    assert 13 <= y <= 26 and 23 <= x <= 27     # deep inside it: d > max/2 around its centre
    assert torch.equal(out[0, :m - 1], points[0, :m - 1])  # other rows untouched
    assert torch.equal(out[0, m:], points[0, m:])

    # A false positive blob outside the object gives a negative click in row 2M - t.
    prob2 = gt.clone() * 0.9
    prob2[0, 0, 0:12, 30:40] = 0.9            # 12x10 FP region, larger than any FN
    out2 = add_training_clicks(out, gt, prob2, t=2, rng=rng)
    y, x, order = out2[0, 2 * m - 2].tolist()
    assert order == 2 and 0 <= y < 12 and 30 <= x < 40 and gt[0, 0, int(y), int(x)] == 0

    # A perfect prediction adds no click; t beyond M is an error.
    out3 = add_training_clicks(out2, gt, gt.clone(), t=3, rng=rng)
    assert torch.equal(out3, out2)
    with pytest.raises(ValueError, match="1 <= t <= M"):
        add_training_clicks(out2, gt, prob, t=m + 1, rng=rng)


def test_last_click_prefers_latest_iterative_round():
    rng = np.random.default_rng(0)
    pts = _padded_points(3, {0: (5, 5, 0), 1: (7, 7, 100), 2: (9, 9, 2), 4: (11, 11, 1)})[0].numpy()
    assert last_click(pts, rng) == (9.0, 9.0)
    pts = _padded_points(3, {0: (5, 5, 100), 1: (7, 7, 0)})[0].numpy()
    assert last_click(pts, rng) == (7.0, 7.0)
    assert last_click(-np.ones((6, 3)), rng) is None


def test_focus_box_is_around_the_boundary_near_the_click():
    gt = torch.zeros(1, 1, 64, 64)
    gt[0, 0, 16:48, 16:48] = 1                 # object extent 32
    points = _padded_points(2, {0: (32, 20, 0)})  # click near the left edge (x=16)
    sampler = FocusBoxSampler(size_range=(0.5, 0.5), object_prob=0.0, center_jitter=0.0,
                              near_px=0.0, min_size=4)
    box = sampler(gt, points, np.random.default_rng(0))[0].tolist()
    x1, y1, x2, y2 = box
    assert x2 - x1 == pytest.approx(16) and y2 - y1 == pytest.approx(16)
    assert x1 < 16 < x2 and y1 < 32 < y2       # contains the boundary point (32, 16)
    # Random sizes stay inside the image and inside the size range.
    sampler = FocusBoxSampler(size_range=(0.3, 0.8), object_prob=0.0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x1, y1, x2, y2 = sampler(gt, points, rng)[0].tolist()
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
        assert 0.3 * 32 - 1e-4 <= x2 - x1 <= 0.8 * 32 + 1e-4
    # Empty ground truth: a box around the click.
    x1, y1, x2, y2 = sampler(torch.zeros_like(gt), points, rng)[0].tolist()
    assert x1 <= 20 <= x2 and y1 <= 32 <= y2


def test_refine_targets_crop_and_band():
    gt = torch.zeros(1, 1, 64, 64)
    gt[0, 0, :, 32:] = 1                       # right half is object
    gt[0, 0, :4, :] = -1                       # top rows ignored
    boxes = torch.tensor([[16.0, 0.0, 48.0, 32.0]])  # 32x32 box, object edge at its middle
    crop, band = crop_refine_targets(gt, boxes, size=16, band_ratio=0.125)  # half-width 2
    assert crop.shape == band.shape == (1, 1, 16, 16)
    row = crop[0, 0, 10].tolist()
    assert row == [0.0] * 8 + [1.0] * 8
    assert band[0, 0, 10].tolist() == [0.0] * 6 + [1.0] * 4 + [0.0] * 6
    assert (crop[0, 0, :2] == -1).all() and (band[0, 0, :2] == -1).all()


def test_whole_object_focus_boxes_in_the_given_share():
    gt = torch.zeros(1, 1, 96, 96)
    gt[0, 0, 20:60, 30:50] = 1                 # object 40 high, 20 wide
    points = _padded_points(2, {0: (40, 40, 0)})
    sampler = FocusBoxSampler()                # defaults: 60% whole-object boxes x 1.1-1.6
    rng = np.random.default_rng(0)
    boxes = torch.cat([sampler(gt, points, rng) for _ in range(400)]).numpy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    whole = (h >= 1.1 * 40 - 1e-3) & (h <= 1.6 * 40 + 1e-3) & (w >= 1.1 * 20 - 1e-3)
    assert 0.53 <= whole.mean() <= 0.67
    # whole-object boxes are centred on the object, with the object's aspect
    cx, cy = (boxes[whole, 0] + boxes[whole, 2]) / 2, (boxes[whole, 1] + boxes[whole, 3]) / 2
    np.testing.assert_allclose(cx, 40.0, atol=1e-3)
    np.testing.assert_allclose(cy, 40.0, atol=1e-3)
    np.testing.assert_allclose(h[whole] / w[whole], 2.0, rtol=1e-4)
    # the others are boundary squares of 0.3-0.8 x the extent (40)
    assert np.all((h[~whole] >= 12 - 1e-3) & (h[~whole] <= 32 + 1e-3))
    with pytest.raises(ValueError, match="object_prob"):
        FocusBoxSampler(object_prob=1.5)


def test_training_focus_boxes_match_the_predictors_on_grabcut(grabcut_root):
    """The refiner must train on the box sizes it meets. For every GrabCut object, the
    simulated user's first click (the evaluation clicker) and a first prediction equal to the
    object give the predictor's focus box (its `focus_crop` rule, 'diff' strategy): the object's
    box x 1.4. The training sampler, on the same mask and click, must draw boxes of that size
    (within 1.1-1.6x of the object, per axis) in about 60% of samples; the previous sampler
    (0.3-0.8x squares) never did."""
    from isegm.data.datasets import GrabCutDataset
    from isegm.inference.clicker import Clicker
    from isegm.inference.focus import focus_crop

    dataset = GrabCutDataset(grabcut_root)
    rng = np.random.default_rng(0)
    new, old = FocusBoxSampler(), FocusBoxSampler(size_range=(0.3, 0.8), object_prob=0.0)
    pred_ratios, near_new, near_old = [], [], []
    for i in range(len(dataset)):
        gt = dataset.get_sample(i).gt_mask
        obj = gt == 1
        h, w = gt.shape
        click = Clicker(gt_mask=gt).make_next_click(np.zeros_like(obj))
        assert click.is_positive
        y1, y2, x1, x2 = focus_crop(obj, np.zeros_like(obj), (0, h, 0, w), click.coords)
        ys, xs = np.nonzero(obj)
        ext_h, ext_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        pred = np.array([(y2 - y1) / ext_h, (x2 - x1) / ext_w])
        pred_ratios.append(pred)
        points = _padded_points(2, {0: (click.coords[0], click.coords[1], 0)})
        gt_t = torch.from_numpy(obj.astype(np.float32))[None, None]
        for sampler, near in ((new, near_new), (old, near_old)):
            for _ in range(6):
                bx1, by1, bx2, by2 = sampler(gt_t, points, rng)[0].tolist()
                ratio = np.array([(by2 - by1) / ext_h, (bx2 - bx1) / ext_w])
                near.append(bool(np.all(np.abs(ratio - pred) <= 0.3)))
    pred_ratios = np.array(pred_ratios)
    # the predictor's first focus box is about the object's size (x 1.4, less where the image
    # clips it)
    assert 1.1 <= float(np.median(pred_ratios)) <= 1.45
    assert 0.45 <= np.mean(near_new) <= 0.75
    assert np.mean(near_old) < 0.05


@pytest.mark.parametrize("mode", ["eval", "batch"])
def test_click_round_mode_batchnorm(mode):
    """The no-grad click rounds: dropout off either way; BatchNorm on its running statistics
    ('eval') or on the batch's ('batch'), the running statistics untouched in both."""
    from torch import nn
    from isegm.engine.interaction import click_round_mode
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    net[1].running_mean.fill_(5.0)
    x = torch.randn(8, 3, 6, 6) * 3 + 1
    with torch.no_grad(), click_round_mode(net, mode):
        y = net(x)
        assert not net.training and not net[2].training
    assert net.training and net[1].training and net[1].momentum == 0.1
    assert torch.equal(net[1].running_mean, torch.full((4,), 5.0))
    mean = y.mean(dim=(0, 2, 3))
    if mode == "batch":
        torch.testing.assert_close(mean, torch.zeros(4), atol=1e-5, rtol=0)
    else:
        assert (mean.abs() > 1.0).all()  # normalised by the (wrong) running mean 5
    with pytest.raises(ValueError, match="BN mode"):
        with click_round_mode(net, "train"):
            pass


def test_target_crop_rois_are_the_predictors_target_crops():
    """Training's target crop of a round's mask is the predictor's (rule 31): the box of the
    mask (> 0.49) united with the positive clicks, x expand about its centre, clamped; None
    (no crop) for an empty mask."""
    from isegm.inference.clicker import Click
    from isegm.inference.crops import target_crop_roi
    prev = torch.zeros(3, 1, 64, 64)
    prev[0, 0, 20:30, 10:40] = 0.9   # inclusive box rows 20-29, cols 10-39
    prev[0, 0, 60, 60] = 0.49        # not above the threshold
    prev[2, 0, 2:12, 50:62] = 0.8    # expands past the frame: clamped
    points = -torch.ones(3, 4, 3)
    points[0, 0] = torch.tensor([40.0, 12.0, 0.0])   # positive click below the mask
    points[0, 2] = torch.tensor([25.0, 63.0, 1.0])   # negative: not part of the box
    points[1, 0] = torch.tensor([5.0, 5.0, 0.0])     # empty mask
    points[2, 0] = torch.tensor([6.0, 55.0, 0.0])
    rois = target_crop_rois(prev, points, expand=1.4)
    # rows 20..40 (centre 30, height 1.4 * 21 = 29.4), cols 10..39 (centre 24.5, width 42)
    assert rois[0] == (15, 45, 4, 46)
    assert rois[1] is None
    assert rois[2] == (0, 14, 47, 63)
    clicks = [Click(True, (40.0, 12.0)), Click(False, (25.0, 63.0))]
    assert rois[0] == target_crop_roi((20, 29, 10, 39), clicks, (64, 64), 1.4, 10)


def test_crop_to_rois_moves_image_clicks_mask_and_gt_together():
    """The crop is resized as the predictor resizes its target crop, and a click lands on the
    pixel its image pixel moved to (one convention for image and clicks)."""
    from isegm.inference.resize import resize_bilinear
    from isegm.model.ops import resize_coord
    images = torch.rand(2, 3, 48, 64)
    images[0, 0, 30, 22] = 50.0                      # a marker under the positive click
    gt = torch.zeros(2, 1, 48, 64)
    gt[:, :, 24:36, 16:28] = 1
    gt[:, :, 20:22, :] = -1                          # ignore rows
    prev = torch.rand(2, 1, 48, 64)
    points = -torch.ones(2, 4, 3)
    points[:, 0] = torch.tensor([30.0, 22.0, 0.0])
    points[:, 2] = torch.tensor([2.0, 60.0, 1.0])    # negative click outside the crop
    roi = (20, 39, 12, 31)                           # 20 x 20 pixels -> 48 x 64
    out_images, out_gt, out_prev, out_points = crop_to_rois(images, gt, prev, points,
                                                            [roi, None])
    window = (slice(0, 1), slice(None), slice(20, 40), slice(12, 32))
    torch.testing.assert_close(out_images[:1], resize_bilinear(images[window], (48, 64)))
    torch.testing.assert_close(out_prev[:1], resize_bilinear(prev[window], (48, 64)))
    y, x = resize_coord(30, 20, 20, 48), resize_coord(22, 12, 20, 64)
    assert out_points[0, 0].tolist() == pytest.approx([y, x, 0.0])
    peak = int(out_images[0, 0].argmax())
    assert divmod(peak, 64) == (round(y), round(x))
    assert out_points[0, 2].tolist() == pytest.approx(
        [resize_coord(2, 20, 20, 48), resize_coord(60, 12, 20, 64), 1.0])
    assert out_points[0, 2, 0] < 0 and out_points[0, 2, 1] > 63
    assert torch.equal(out_points[0, [1, 3]], points[0, [1, 3]])   # padding stays padding
    # gt: the object's edges (source rows 23.5 and 35.5) move to rows 8.66 and 38.34; the
    # ignore rows to the top rows
    assert set(out_gt.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert out_gt[0, 0, 24, 32] == 1 and out_gt[0, 0, 45, 5] == 0
    assert (out_gt[0, 0, :3] == -1).all() and (out_gt[0, 0, 6:] != -1).all()
    assert out_gt[0, 0, 8:40, 32].tolist() == [0.0] + [1.0] * 30 + [0.0]
    # the sample without a roi is untouched, and the inputs are not modified
    for new, old in ((out_images, images), (out_gt, gt), (out_prev, prev), (out_points, points)):
        assert torch.equal(new[1], old[1])
    assert images[0, 0, 30, 22] == 50.0 and not torch.equal(out_images[0], images[0])
