"""Statistics of the training click sampler (protocol §7, rules 48-52)."""
import cv2
import numpy as np
import pytest

from isegm.data.points_sampler import MultiPointSampler, generate_probs
from isegm.data.sample import DSample

M = 6


def _disk_sample(ignore=False):
    inst = np.zeros((64, 80), np.int32)
    cv2.circle(inst, (30, 32), 14, 1, -1)
    if ignore:
        cv2.circle(inst, (30, 32), 16, -1, 2)
    return DSample(np.zeros((64, 80, 3), np.uint8), inst, objects_ids=[1],
                   ignore_ids=[-1] if ignore else None, sample_id='disk')


def _three_objects():
    inst = np.zeros((64, 96), np.int32)
    inst[8:28, 8:28] = 1
    inst[8:28, 40:60] = 2
    inst[36:56, 70:90] = 3
    return DSample(np.zeros((64, 96, 3), np.uint8), inst, objects_ids=[1, 2, 3]), inst


def _split(points):
    pos, neg = points[:M], points[M:]
    return pos[pos[:, 0] >= 0], neg[neg[:, 0] >= 0]


def test_counts_follow_prob_gamma_and_clicks_fall_on_the_right_side():
    sample = _disk_sample()
    gt = sample.gt_mask
    sampler = MultiPointSampler(M, prob_gamma=0.7, positive_erode_prob=0.0)
    rng = np.random.default_rng(0)
    n = 3000
    pos_counts, neg_counts = np.zeros(M + 1), np.zeros(M + 1)
    for _ in range(n):
        sampler.sample_object(sample, rng)
        points = sampler.sample_points(rng)
        assert points.shape == (2 * M, 3) and points.dtype == np.float32
        pos, neg = _split(points)
        # padding rows are exactly (-1, -1, -1) and come after the clicks
        assert np.all(points[:M][len(pos):] == -1) and np.all(points[M:][len(neg):] == -1)
        assert np.all(gt[pos[:, 0].astype(int), pos[:, 1].astype(int)] == 1)
        assert np.all(gt[neg[:, 0].astype(int), neg[:, 1].astype(int)] != 1)
        assert np.all(pos[:, 2] == 100) and np.all(neg[:, 2] == 100)
        pos_counts[len(pos)] += 1
        neg_counts[len(neg)] += 1
    expected_pos = np.concatenate([[0], generate_probs(M, 0.7)])
    expected_neg = generate_probs(M + 1, 0.7)
    np.testing.assert_allclose(pos_counts / n, expected_pos, atol=0.03)
    np.testing.assert_allclose(neg_counts / n, expected_neg, atol=0.03)
    assert generate_probs(3, 0.5) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_first_click_center_is_deep_inside():
    sample = _disk_sample(ignore=True)
    gt = sample.gt_mask
    dist = cv2.distanceTransform(np.pad((gt == 1).astype(np.uint8), 1), cv2.DIST_L2, 0)[1:-1, 1:-1]
    sampler = MultiPointSampler(M, first_click_center=True)
    rng = np.random.default_rng(1)
    firsts = []
    for _ in range(300):
        sampler.sample_object(sample, rng)
        points = sampler.sample_points(rng)
        pos, neg = _split(points)
        assert pos[0, 2] == 0 and np.all(pos[1:, 2] == 100)
        y, x = int(pos[0, 0]), int(pos[0, 1])
        assert dist[y, x] > dist.max() / 1.7
        firsts.append((y, x))
        assert np.all(gt[pos[:, 0].astype(int), pos[:, 1].astype(int)] == 1)   # never in ignore
        np.testing.assert_array_equal(sampler.selected_mask, gt)
    # several distinct centre pixels, all within 14 / 1.7 + 1 px of the centre (30, 32)... (x, y)
    firsts = np.array(firsts)
    assert len({tuple(p) for p in firsts}) > 20
    assert np.max(np.hypot(firsts[:, 0] - 32, firsts[:, 1] - 30)) < 15 - 15 / 1.7 + 1


def test_negative_strategies_border_and_other():
    sample, inst = _three_objects()
    rng = np.random.default_rng(2)
    border = MultiPointSampler(M, negative_bg_prob=0, negative_other_prob=0, negative_border_prob=1)
    other = MultiPointSampler(M, negative_bg_prob=0, negative_other_prob=1, negative_border_prob=0)
    seen_border = seen_other = 0
    for _ in range(200):
        border.sample_object(sample, rng)
        gt = border.selected_mask
        _, neg = _split(border.sample_points(rng))
        label = inst[gt == 1][0]
        band = int(np.ceil(0.1 * np.sqrt((gt == 1).sum())))       # 2 px for a 20x20 square
        ys, xs = np.nonzero(inst == label)
        for y, x, _ in neg.astype(int):
            assert gt[y, x] == 0
            dy = max(ys.min() - y, 0, y - ys.max())
            dx = max(xs.min() - x, 0, x - xs.max())
            assert max(dy, dx) <= band
            seen_border += 1
        other.sample_object(sample, rng)
        gt = other.selected_mask
        _, neg = _split(other.sample_points(rng))
        for y, x, _ in neg.astype(int):
            assert inst[y, x] != 0 and gt[y, x] == 0
            seen_other += 1
    assert seen_border > 200 and seen_other > 200


def test_merging_takes_a_union_of_distinct_roots():
    sample, inst = _three_objects()
    sampler = MultiPointSampler(M, merge_objects_prob=1.0, max_num_merged_objects=2)
    rng = np.random.default_rng(3)
    pairs = set()
    for _ in range(100):
        sampler.sample_object(sample, rng)
        labels = set(np.unique(inst[sampler.selected_mask == 1]).tolist())
        assert len(labels) == 2
        np.testing.assert_array_equal(sampler.selected_mask == 1, np.isin(inst, list(labels)))
        pairs.add(tuple(sorted(labels)))
        pos, _ = _split(sampler.sample_points(rng))
        hit = set(inst[pos[:, 0].astype(int), pos[:, 1].astype(int)].tolist())
        assert hit <= labels and len(hit) == 2          # the first click of each object is kept
    assert pairs == {(1, 2), (1, 3), (2, 3)}


def test_empty_sample_gives_background_negatives_only():
    sample = DSample(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.int32), objects_ids=[])
    sampler = MultiPointSampler(M)
    rng = np.random.default_rng(4)
    for _ in range(20):
        sampler.sample_object(sample, rng)
        points = sampler.sample_points(rng)
        assert np.all(points[:M] == -1)
        assert sampler.selected_mask.sum() == 0


def test_hierarchy_children_become_negatives():
    inst = np.zeros((40, 40), np.int32)
    parts = np.zeros((40, 40), np.int32)
    inst[5:35, 5:35] = 1
    parts[10:20, 10:20] = 1
    objects = {0: {'mapping': (0, 1), 'parent': None, 'children': [1]},
               1: {'mapping': (1, 1), 'parent': 0, 'children': []}}
    sample = DSample(np.zeros((40, 40, 3), np.uint8), np.stack([inst, parts], 2), objects=objects)
    sampler = MultiPointSampler(M, use_hierarchy=True, positive_erode_prob=0.0)
    rng = np.random.default_rng(5)
    kinds = set()
    for _ in range(200):
        sampler.sample_object(sample, rng)
        gt = sampler.selected_mask
        area = int((gt == 1).sum())
        kinds.add(area)
        assert area in (900, 800, 100)     # whole, whole minus disabled part, the part alone
        pos, _ = _split(sampler.sample_points(rng))
        assert np.all(gt[pos[:, 0].astype(int), pos[:, 1].astype(int)] == 1)
    assert kinds == {900, 800, 100}
