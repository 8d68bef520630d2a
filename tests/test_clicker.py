"""Click simulator rules (evaluation-protocol.md §1 and rule 53) on hand-made masks."""
import numpy as np
import pytest

from isegm.inference.clicker import (Click, Clicker, chamfer_dt_padded, next_click_evaluation,
                                     next_click_training, squared_edt_padded)


def test_squared_edt_matches_brute_force_with_padding():
    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = rng.integers(2, 14, 2)
        mask = rng.random((h, w)) < 0.7
        sq = squared_edt_padded(mask)
        padded = np.pad(mask, 1)
        outside = np.argwhere(~padded)
        for y, x in np.argwhere(mask):
            expected = ((outside - [y + 1, x + 1]) ** 2).sum(1).min()
            assert sq[y, x] == expected
        assert (sq[~mask] == 0).all()
    full = np.ones((5, 7), bool)
    sq = squared_edt_padded(full)
    assert sq[0, 3] == 1 and sq[2, 3] == 9 and sq[2, 0] == 1  # border pixels have d = 1


def test_first_click_at_deepest_interior_point():
    gt = np.zeros((11, 13), np.int64)
    gt[2:9, 3:12] = 1  # 7 x 9 box: deepest row 5, columns 6..8 tie at d = 4; row-major first
    clicker = Clicker(gt)
    click = clicker.make_next_click(np.zeros_like(gt, dtype=bool))
    assert click.is_positive and click.coords == (5, 6) and click.indx == 0


def test_padding_makes_image_border_a_boundary():
    gt = np.zeros((9, 9), np.int64)
    gt[2:7, :5] = 1  # touches the left border; unpadded, column 0 would be as deep as column 2
    y, x, pos = next_click_evaluation(gt, np.zeros((9, 9), bool))
    assert pos and (y, x) == (4, 2)
    assert squared_edt_padded(gt == 1)[4, 0] == 1


def test_tie_is_negative_and_row_major_first():
    gt = np.zeros((7, 12), np.int64)
    gt[1:6, 1:6] = 1
    pred = np.zeros_like(gt, dtype=bool)
    pred[1:6, 6:11] = True  # FP square identical in size to the FN square: a = b
    y, x, pos = next_click_evaluation(gt, pred)
    assert not pos and (y, x) == (3, 8)
    # among equal maxima, the smallest row then column is chosen
    gt2 = np.zeros((8, 8), np.int64)
    gt2[5:8, 0:3] = 1
    gt2[0:3, 5:8] = 1
    y, x, pos = next_click_evaluation(gt2, np.zeros((8, 8), bool))
    assert pos and (y, x) == (1, 6)


def test_positive_only_when_strictly_larger():
    gt = np.zeros((7, 14), np.int64)
    gt[1:6, 1:6] = 1
    pred = np.zeros_like(gt, dtype=bool)
    pred[1:5, 7:11] = True  # smaller FP region
    assert next_click_evaluation(gt, pred)[2] is True


def test_perfect_mask_gives_negative_click_at_origin():
    gt = np.zeros((6, 6), np.int64)
    gt[2:4, 2:4] = 1
    gt[0, 0] = -1  # even when (0, 0) is ignored
    assert next_click_evaluation(gt, gt == 1) == (0, 0, False)


def test_ignore_pixels_are_not_errors_but_repel():
    gt = np.zeros((9, 20), np.int64)
    gt[:, :] = 1
    gt[:, 10] = -1  # an ignore column splits the object; ignore acts as a boundary
    clicker = Clicker(gt)
    y, x = clicker.make_next_click(np.zeros_like(gt, dtype=bool)).coords
    assert (y, x) == (4, 4)  # centre of the left half (d = 5), not the middle of the image
    gt3 = np.zeros((5, 5), np.int64)
    gt3[1:4, 1:4] = -1
    pred = np.zeros((5, 5), bool)
    pred[1:4, 1:4] = True  # predicted positive on ignore pixels only: no error
    assert next_click_evaluation(gt3, pred) == (0, 0, False)


def test_clicked_pixels_excluded_but_still_in_error():
    gt = np.zeros((7, 7), np.int64)
    gt[1:6, 1:6] = 1
    clicker = Clicker(gt)
    empty = np.zeros_like(gt, dtype=bool)
    first = clicker.make_next_click(empty)
    second = clicker.make_next_click(empty)  # same error: the deepest pixel is already clicked
    assert first.coords == (3, 3)
    # the next candidates have d^2 = 4 (distances computed with (3, 3) still in the error)
    assert second.coords == (2, 2) and second.is_positive and second.indx == 1
    assert len(clicker) == 2 and clicker.num_pos_clicks == 2


def test_clicker_api():
    clicker = Clicker(init_clicks=[Click(True, (3, 4)), Click(False, (1, 1))])
    assert [c.indx for c in clicker.get_clicks()] == [0, 1]
    assert clicker.get_clicks(clicks_limit=1)[0].coords == (3, 4)
    clicker.reset_clicks()
    assert len(clicker) == 0
    with pytest.raises(ValueError, match="gt_mask"):
        clicker.make_next_click(np.zeros((3, 3), bool))


def test_training_click_rule():
    gt = np.zeros((20, 30), np.float32)
    gt[2:18, 2:14] = 1
    prob = np.zeros_like(gt)
    prob[5:12, 20:27] = 0.9  # a smaller FP blob
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        y, x, pos = next_click_training(gt, prob, rng)
        assert pos
        d = chamfer_dt_padded(gt > 0.5)
        assert d[y, x] > d.max() / 2
        seen.add((y, x))
    assert len(seen) > 3  # uniform over the candidate set, not the argmax
    assert next_click_training(gt, gt.copy(), rng) is None  # nothing wrong: no click
    # equal maxima -> negative; ignore (-1) counts as background in training
    gt2 = -np.ones((5, 5), np.float32)
    prob2 = np.full((5, 5), 0.8, np.float32)
    y, x, pos = next_click_training(gt2, prob2, rng)
    assert not pos and 1 <= y <= 3 and 1 <= x <= 3  # d > 3 / 2 keeps the inner 3 x 3
    chamfer = chamfer_dt_padded(np.ones((5, 5), bool))
    assert chamfer.dtype == np.float32 and chamfer[0, 0] == pytest.approx(1.0)


def test_fast_and_integer_edt_paths_agree_exactly():
    """The OpenCV fast path (rounded float distances) equals SciPy's integer feature-index path
    on random blobs, thin structures and large regions; above its limit it falls back."""
    import cv2

    rng = np.random.default_rng(7)
    for i in range(60):
        h, w = rng.integers(20, 300, 2)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 6)):
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(1, w)), int(rng.integers(1, h)))
            cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        mask = mask.astype(bool) ^ (rng.random((h, w)) < 0.02 * (i % 3))
        np.testing.assert_array_equal(squared_edt_padded(mask),
                                      squared_edt_padded(mask, method="scipy"))
    big = np.ones((1100, 1200), bool)  # centre distance 550 > the fast path's limit
    sq = squared_edt_padded(big)
    assert sq.max() == 550 ** 2 and sq[549, 600] == 550 ** 2
    with pytest.raises(ValueError, match="method"):
        squared_edt_padded(big, method="cv2")


def _reference_click(gt, pred, clicked):
    """The straightforward rule: integer squared EDT of the whole padded FN / FP maps (SciPy
    feature indices), clicked pixels zeroed, first row-major maximum, negative on ties."""
    from scipy import ndimage
    valid = gt != -1
    fn = (gt == 1) & ~pred & valid
    fp = (gt != 1) & pred & valid

    def sq_edt(mask):
        padded = np.pad(mask, 1)
        iy, ix = ndimage.distance_transform_edt(padded, return_distances=False,
                                                return_indices=True)
        h, w = padded.shape
        d = (iy - np.arange(h)[:, None]) ** 2 + (ix - np.arange(w)[None, :]) ** 2
        d = d[1:-1, 1:-1].astype(np.int64)
        d[~mask] = 0
        d[clicked] = 0
        return d

    d_fn, d_fp = sq_edt(fn), sq_edt(fp)
    if d_fn.max() == 0 and d_fp.max() == 0:
        return 0, 0, False
    pos = d_fn.max() > d_fp.max()
    y, x = np.unravel_index(np.argmax(d_fn if pos else d_fp), gt.shape)
    return int(y), int(x), bool(pos)


def test_box_restricted_click_equals_the_whole_image_rule():
    """The clicker works on the error masks' bounding boxes only; on random objects, ignore
    bands, predictions and clicked pixels it must pick exactly the whole-image rule's click."""
    from isegm.inference.utils import get_iou, masks_iou
    rng = np.random.default_rng(7)
    for trial in range(200):
        h, w = rng.integers(20, 90, 2)
        yy, xx = np.mgrid[:h, :w]
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, max(h, w) / 2)
        gt = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.int64)
        if trial % 2:
            ring = np.abs(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - r) < 1.5
            gt[ring] = -1
        pred = (yy - cy - rng.normal(0, 4)) ** 2 + (xx - cx - rng.normal(0, 4)) ** 2 \
            < (r * rng.uniform(0.5, 1.3)) ** 2
        pred |= rng.random((h, w)) < (0.01 if trial % 3 else 0.2)  # specks: one-sided errors
        clicker = Clicker(gt)
        for _ in range(3):
            clicked = clicker._clicked.copy()
            expected = _reference_click(gt, pred, clicked)
            click = clicker.make_next_click(pred)
            assert (int(click.coords[0]), int(click.coords[1]), click.is_positive) == expected
            obj, valid = clicker.object_and_valid_masks()
            assert masks_iou(obj, valid, pred) == get_iou(gt, pred)
            pred = pred.copy()
            y, x = int(click.coords[0]), int(click.coords[1])
            pred[max(0, y - 3):y + 4, max(0, x - 3):x + 4] = click.is_positive


def test_depth_bound_is_an_upper_bound():
    """The bound that lets the clicker skip the second transform is never below the truth."""
    import cv2
    from isegm.inference.clicker import _depth_bound_sq
    from isegm.inference.utils import half_open_bbox
    rng = np.random.default_rng(3)
    tight = 0
    for i in range(300):
        h, w = rng.integers(1, 60, 2)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 4)):
            cv2.ellipse(mask, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                        (int(rng.integers(0, w)), int(rng.integers(0, h))),
                        float(rng.uniform(0, 180)), 0, 360, 1, -1)
        mask = mask.astype(bool) ^ (rng.random((h, w)) < 0.05 * (i % 2))
        truth = int(squared_edt_padded(mask).max())
        bound = _depth_bound_sq(mask, half_open_bbox(mask))
        assert truth <= bound, (i, truth, bound)
        tight += bound < 2 * truth + 2
    assert tight > 150  # and it is a useful bound, not a vacuous one
    assert _depth_bound_sq(np.ones((1, 1), bool), (0, 1, 0, 1)) >= 1  # a single pixel: d = 1
    assert _depth_bound_sq(np.zeros((3, 3), bool), None) == 0.0


def _random_masks(rng, count):
    """Blobs, speckle, thin rings and large regions, each with a few clicked pixels."""
    import cv2
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        kind = i % 4
        if kind == 0:
            mask = rng.random((h, w)) < rng.random()
        elif kind == 1:
            mask = np.zeros((h, w), np.uint8)
            for _ in range(rng.integers(1, 4)):
                cv2.ellipse(mask, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                            (int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))),
                            float(rng.uniform(0, 180)), 0, 360, 1, -1)
            mask = mask.astype(bool)
        elif kind == 2:
            yy, xx = np.mgrid[:h, :w]
            radius = np.hypot(yy - h / 2, xx - w / 2)
            mask = np.abs(radius - rng.uniform(0, max(h, w) / 2)) < rng.uniform(0.5, 6)
        else:
            mask = np.ones((h, w), bool)
            mask[rng.integers(0, h + 1):, rng.integers(0, w + 1):] = False
        yield mask, rng.random((h, w)) < rng.choice([0.0, 0.02, 0.3])


def test_compiled_deepest_pixel_equals_the_full_transform():
    """The numba kernel (bound, then exact distances where the bound reaches the floor) gives
    the full OpenCV/SciPy transform's pixel and depth, clicked pixels and ties included."""
    from isegm.inference.clicker import _deepest_pixel, _deepest_pixel_reference
    from isegm.inference.utils import half_open_bbox
    from isegm.inference.kernels.clicks import deepest_pixel
    from isegm.utils import jit
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    rng = np.random.default_rng(11)
    compared = 0
    for mask, clicked in _random_masks(rng, 1200):
        box = half_open_bbox(mask)
        expected = _deepest_pixel_reference(mask, clicked, box) if box is not None else (0, 0, 0)
        got = _deepest_pixel(mask, clicked, box)
        if expected[0] == 0:
            assert got[0] == 0
            continue
        assert got == expected, (mask.shape, got, expected)
        compared += 1
    assert compared > 900
    big = np.ones((1100, 1200), bool)  # beyond OpenCV's float-exact range: SciPy's answer
    assert _deepest_pixel(big, None) == _deepest_pixel_reference(big, None) == (550 ** 2, 549, 549)
    sq, y, x = deepest_pixel(np.ones((7, 9), bool), np.eye(7, 9, 4, dtype=bool))
    assert (sq, y, x) == (16, 3, 3)  # (3, 4) is clicked: the next pixel of depth 4 in row order
    with pytest.raises(ValueError, match="clicked"):
        deepest_pixel(np.ones((3, 3), bool), np.ones((2, 3), bool))


@pytest.mark.parametrize("compiled", [True, False])
def test_clicks_equal_with_and_without_the_compiled_kernel(monkeypatch, compiled):
    """Both paths of the clicker give the straightforward rule's clicks."""
    from isegm.utils import jit
    if compiled and not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    monkeypatch.setattr(jit, "ENABLED", compiled)
    rng = np.random.default_rng(5)
    for mask, clicked in _random_masks(rng, 200):
        gt = mask.astype(np.int64)
        pred = np.roll(mask, 2, axis=1) | (rng.random(mask.shape) < 0.01)
        assert next_click_evaluation(gt, pred, clicked) == _reference_click(gt, pred, clicked)
