"""NoC / NoF / IoU edge cases (evaluation-protocol.md §3, rules 55 and 64)."""
import numpy as np
import pytest

from isegm.inference.utils import (compute_noc_metric, compute_strict_nof, get_iou,
                                   get_iou_thresholds, mean_iou_per_click, percent_key,
                                   sample_noc, stop_iou, summarize_ious)


def test_iou_ignores_ignore_pixels():
    gt = np.array([[1, 1, -1, 0],
                   [0, 0, -1, 0]])
    pred = np.array([[1, 0, 1, 1],
                     [0, 0, 1, 0]], bool)
    # intersection 1; union over valid pixels: (0,0), (0,1), (0,3) = 3; ignore column excluded
    assert get_iou(gt, pred) == pytest.approx(1 / 3)
    assert get_iou(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 0.0
    with pytest.raises(ValueError, match="shape"):
        get_iou(gt, pred[:, :3])


def test_thresholds_default():
    thrs = get_iou_thresholds(0.9)
    assert len(thrs) == 3 and thrs[2] == pytest.approx(0.9) and thrs[2] > 0.9  # 0.9000000000000001
    assert [percent_key(t) for t in thrs] == ["80", "85", "90"]
    assert len(get_iou_thresholds(0.95)) == 4 and len(get_iou_thresholds(0.85)) == 2


def test_noc_is_one_based_and_failure_scores_n():
    assert sample_noc([0.5, 0.95], 0.9) == 2
    assert sample_noc([0.95], 0.9) == 1
    assert sample_noc([0.1, 0.2, 0.3], 0.9, max_clicks=20) == 20  # not 21, not len + 1


def test_iou_equal_to_threshold_counts_in_float32():
    thr = get_iou_thresholds(0.9)[2]  # 0.9000000000000001 in float64
    iou = np.float32(0.9)
    assert float(iou) < thr  # a float64 comparison would fail
    noc, nof = compute_noc_metric([np.array([0.5, iou], np.float32)], [thr], max_clicks=20)
    assert noc == [2.0] and nof == [0]
    # exactly 0.85 as a float32 (from a python list) also counts
    assert sample_noc([0.85], 0.85) == 1


def test_nof_counts_success_exactly_at_last_click():
    n = 5
    at_last = np.array([0.1, 0.2, 0.3, 0.4, 0.91], np.float32)
    never = np.array([0.1] * 5, np.float32)
    early = np.array([0.95], np.float32)
    noc, nof = compute_noc_metric([at_last, never, early], [0.9], max_clicks=n)
    assert nof == [2]  # RITM's definition includes the success at click N
    assert noc == [pytest.approx((5 + 5 + 1) / 3)]
    assert compute_strict_nof([at_last, never, early], 0.9) == 1


def test_average_over_instances_and_summary():
    all_ious = [[0.81, 0.86, 0.91], [0.95], [0.2, 0.85]]
    s = summarize_ious(all_ious, get_iou_thresholds(0.9), max_clicks=20)
    assert s["num_samples"] == 3
    assert s["NoC@80"] == pytest.approx((1 + 1 + 2) / 3)
    assert s["NoC@85"] == pytest.approx((2 + 1 + 2) / 3)
    assert s["NoC@90"] == pytest.approx((3 + 1 + 20) / 3)
    assert s["NoF@90"] == 1 and s["NoF@85"] == 0


def test_stop_iou_and_miou_truncation():
    assert stop_iou(0.9, full_series=False) == 0.9
    assert stop_iou(0.5, full_series=False) == 0.8
    assert stop_iou(0.9, full_series=True) == 1.01
    assert stop_iou(0.9, full_series=True, min_clicks=3) == 0.9
    miou = mean_iou_per_click([[0.5, 0.7, 0.9], [0.3, 0.5]])
    assert miou.shape == (2,) and miou == pytest.approx([0.4, 0.6])
