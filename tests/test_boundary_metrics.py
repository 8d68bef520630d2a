"""Boundary IoU and ASSD (isegm/inference/boundary.py): hand-computed cases and independent
formulations (distance transforms, OpenCV's external contours, brute-force distances)."""
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from isegm.inference.boundary import (BoundaryScorer, boundary_band, boundary_width,
                                      outer_contour)


def square(shape, y1, y2, x1, x2):
    mask = np.zeros(shape, dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def test_boundary_width_is_two_percent_of_the_diagonal_at_least_one():
    assert boundary_width((480, 854)) == 20          # 0.02 * 979.6 = 19.6
    assert boundary_width((20, 20)) == 1             # 0.57
    assert boundary_width((10, 10)) == 1             # 0.28 rounds to 0: at least one step
    assert boundary_width((300, 400)) == 10          # exactly 10.0


def test_square_and_shifted_square_by_hand():
    gt = square((20, 20), 5, 15, 5, 15)
    scorer = BoundaryScorer(gt.astype(np.int32))
    assert np.count_nonzero(boundary_band(gt, 1)) == 36
    assert scorer(gt) == (1.0, 0.0)
    # one column to the right: the bands share the top and bottom rows' 9 common pixels each
    biou, assd = scorer(square((20, 20), 5, 15, 6, 16))
    assert biou == pytest.approx(18 / 54)
    # 18 of each ring's 36 pixels are 1 px from the other ring, the rest on it
    assert assd == pytest.approx(0.5)


def test_ring_counts_its_hole_in_the_band_but_not_in_the_contour():
    ring = square((30, 30), 5, 25, 5, 25) & ~square((30, 30), 10, 20, 10, 20)
    filled = square((30, 30), 5, 25, 5, 25)
    band = boundary_band(ring, boundary_width(ring.shape))
    assert np.count_nonzero(band) == 76 + 44          # outer ring + the ring around the hole
    scorer = BoundaryScorer(ring.astype(np.int32))
    biou, assd = scorer(filled)
    assert biou == pytest.approx(76 / 120)
    assert assd == 0.0                                # outer contours are the same
    assert np.array_equal(outer_contour(ring), outer_contour(filled))


def test_image_border_counts_as_an_edge():
    top = square((10, 10), 0, 5, 0, 10)
    band = boundary_band(top, 1)
    # rows 0 and 4, columns 0 and 9: 50 pixels minus the 3x8 interior
    assert np.count_nonzero(band) == 26
    assert not band[1:4, 1:9].any() and band[0].all() and band[:5, 0].all() and band[:5, 9].all()


def test_empty_masks_are_defined():
    gt = square((20, 30), 5, 15, 5, 15)
    scorer = BoundaryScorer(gt.astype(np.int32))
    biou, assd = scorer(np.zeros((20, 30), bool))
    assert biou == 0.0 and assd == pytest.approx(math.hypot(20, 30))
    empty = BoundaryScorer(np.zeros((20, 30), np.int32))
    assert empty(np.zeros((20, 30), bool)) == (1.0, 0.0)
    biou, assd = empty(gt)
    assert biou == 0.0 and assd == pytest.approx(math.hypot(20, 30))


def test_ignore_pixels_are_background_unless_excluded():
    gt = square((20, 20), 5, 15, 5, 15).astype(np.int32)
    gt[5, 5:15] = -1                                  # the top row of the object is "ignore"
    pred = square((20, 20), 5, 15, 5, 15)
    default, _ = BoundaryScorer(gt)(pred)
    excluded, _ = BoundaryScorer(gt, exclude_ignore=True)(pred)
    # as released: ignore is background, so the ground truth is rows 6..14 and bands differ
    assert default < 1.0
    # without the ignore row both bands lose it; they differ only in the gt band's new top row
    gt_band = boundary_band(gt > 0, 1) & (gt != -1)
    pred_band = boundary_band(pred, 1) & (gt != -1)
    want = np.count_nonzero(gt_band & pred_band) / np.count_nonzero(gt_band | pred_band)
    assert excluded == pytest.approx(want) and excluded > default


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        BoundaryScorer(np.zeros((10, 10), np.int32))(np.zeros((10, 11), bool))


def random_blobs(rng, shape):
    noise = ndimage.gaussian_filter(rng.random(shape), sigma=rng.uniform(1.5, 4.0))
    return noise > np.quantile(noise, rng.uniform(0.4, 0.9))


def test_band_equals_chessboard_distance_formulation():
    rng = np.random.default_rng(0)
    for _ in range(40):
        shape = tuple(rng.integers(8, 60, size=2))
        mask = random_blobs(rng, shape)
        width = int(rng.integers(1, 6))
        padded = np.pad(mask, 1)
        depth = ndimage.distance_transform_cdt(padded, metric='chessboard')[1:-1, 1:-1]
        assert np.array_equal(boundary_band(mask, width), mask & (depth <= width))


def test_contour_and_assd_equal_fill_holes_formulation_and_brute_force_distances():
    rng = np.random.default_rng(1)
    for _ in range(30):
        shape = tuple(rng.integers(10, 50, size=2))
        gt, pred = random_blobs(rng, shape), random_blobs(rng, shape)
        for mask in (gt, pred):
            filled = ndimage.binary_fill_holes(mask)
            inner = ndimage.binary_erosion(filled, structure=ndimage.generate_binary_structure(2, 1),
                                           border_value=0)
            assert np.array_equal(outer_contour(mask), filled & ~inner)
        a = np.argwhere(outer_contour(gt))
        b = np.argwhere(outer_contour(pred))
        pairwise = cdist(a, b)
        want = (pairwise.min(axis=1).sum() + pairwise.min(axis=0).sum()) / (len(a) + len(b))
        assert BoundaryScorer(gt)(pred)[1] == pytest.approx(want, rel=1e-9)
