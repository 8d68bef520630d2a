"""The session API (isegm/inference/session.py) on the evaluator's predictors: exact undo,
multi-object label maps, caller-owned arrays, errors, threads."""
import threading

import numpy as np
import pytest
import torch

from isegm.inference.clicker import Click, Clicker
from isegm.inference.predictors import get_predictor
from isegm.inference.session import (ClickOutsideImageError, Segmenter, SessionClosedError,
                                     SessionError)
from isegm.model import IGLRModel


def two_objects_image(h=90, w=120):
    """A red disk on the left, a green square on the right, on blue."""
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = (30, 60, 170)
    yy, xx = np.mgrid[0:h, 0:w]
    image[(yy - 45) ** 2 + (xx - 30) ** 2 < 18 ** 2] = (220, 40, 30)
    image[25:65, 75:110] = (40, 210, 60)
    return image


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    full = IGLRModel("mit_b0", infer_size=64, refine_size=32).eval()
    coarse = IGLRModel("mit_b0", infer_size=64, use_refiner=False).eval()
    return {"iglr": full, "coarse": coarse, "cv_grabcut": None}


@pytest.fixture(params=["cv_grabcut", "coarse", "iglr"])
def segmenter(request, models):
    return Segmenter(request.param, models[request.param], "cpu", with_flip=False)


CLICKS = [(30, 45, True), (5, 5, False), (92, 45, True), (60, 80, False), (35, 50, True),
          (100, 30, True), (110, 85, False), (20, 20, False), (45, 60, True), (70, 10, False),
          (80, 60, True), (25, 40, True)]


def test_session_matches_the_evaluator_loop(segmenter):
    """Per click, the session returns what the predictor returns when driven as the evaluator
    drives it (one `get_prediction` per click on a growing Clicker)."""
    image = two_objects_image()
    predictor = segmenter.new_predictor()
    clicker = Clicker()
    session = segmenter.new_session()
    with torch.no_grad():
        predictor.set_image(image)
        session.set_image(image)
        for x, y, positive in CLICKS[:4]:
            clicker.add_click(Click(is_positive=positive, coords=(y, x)))
            expected = predictor.get_prediction(clicker).copy()
            mask, probs = session.add_click(x, y, positive)
            np.testing.assert_array_equal(probs, expected)
            np.testing.assert_array_equal(mask, expected > 0.49)
    assert mask.dtype == bool and probs.dtype == np.float32 and mask.shape == (90, 120)


def test_undo_restores_bit_for_bit_and_replays_the_predictor_state(segmenter):
    """12 clicks (past the IGLR 10-click rule), undo back through them: every undo returns the
    earlier arrays exactly; clicking again after undo gives exactly the first run's result (the
    predictor's per-image state was restored)."""
    session = segmenter.new_session()
    session.set_image(two_objects_image())
    results = [session.add_click(x, y, p) for x, y, p in CLICKS]
    for k in range(len(CLICKS) - 1, 0, -1):
        mask, probs = session.undo()
        np.testing.assert_array_equal(probs, results[k - 1][1])
        np.testing.assert_array_equal(mask, results[k - 1][0])
        assert [(c.coords[1], c.coords[0], c.is_positive) for c in session.clicks] == \
            [(x, y, p) for x, y, p in CLICKS[:k]]
    # forward again from 1 click: the same results as the first time
    for k in range(1, len(CLICKS)):
        mask, probs = session.add_click(*CLICKS[k])
        np.testing.assert_array_equal(probs, results[k][1])
    mask, probs = session.undo()
    np.testing.assert_array_equal(probs, results[-2][1])
    mask, probs = session.add_click(*CLICKS[-1])
    np.testing.assert_array_equal(probs, results[-1][1])
    # back to no clicks: an empty mask
    for _ in range(len(CLICKS)):
        mask, probs = session.undo()
    assert not mask.any() and not probs.any() and session.clicks == []
    with pytest.raises(SessionError, match="nothing to undo"):
        session.undo()


def test_returned_arrays_belong_to_the_caller(segmenter):
    session = segmenter.new_session()
    session.set_image(two_objects_image())
    mask1, probs1 = session.add_click(30, 45, True)
    keep = probs1.copy()
    mask2, probs2 = session.add_click(92, 45, True)
    np.testing.assert_array_equal(probs1, keep)  # not overwritten by the next click
    probs2[:] = 7.0
    mask2[:] = True
    mask, probs = session.undo()
    np.testing.assert_array_equal(probs, keep)
    assert not np.shares_memory(probs, probs1)
    assert float(session.current_probs().max()) <= 1.0


def test_grabcut_objects_and_label_map():
    """Two objects on one image with the classical predictor: the label map holds each object's
    mask under its label, later objects painted over earlier ones."""
    session = Segmenter("cv_grabcut").new_session()
    image = two_objects_image()
    session.set_image(image)
    disk_mask, _ = session.add_click(30, 45, True)
    assert disk_mask[45, 30] and not disk_mask[45, 92] and not disk_mask[5, 5]
    obj = session.finish_object()
    assert obj.clicks_xy() == [{"x": 30, "y": 45, "positive": True}]
    assert session.clicks == [] and not session.current_mask().any()
    square_one, _ = session.add_click(92, 45, True)
    square_mask, _ = session.add_click(30, 45, False)
    assert square_mask[45, 92] and not square_mask[45, 30]
    labels = session.label_map()
    assert labels.dtype == np.uint8 and labels.shape == (90, 120)
    expected = np.zeros((90, 120), np.uint8)
    expected[disk_mask] = 1
    expected[square_mask] = 2
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(session.label_map(include_current=False), disk_mask.astype(np.uint8))
    session.finish_object()
    assert len(session.objects) == 2
    np.testing.assert_array_equal(session.objects[1].mask, square_mask)
    # undo with no current clicks reopens the last object, with its clicks and mask
    mask, _ = session.undo()
    np.testing.assert_array_equal(mask, square_mask)
    assert len(session.objects) == 1 and len(session.clicks) == 2
    mask, _ = session.undo()
    np.testing.assert_array_equal(mask, square_one)
    session.reset()
    assert session.clicks == [] and len(session.objects) == 1
    np.testing.assert_array_equal(session.label_map(), disk_mask.astype(np.uint8))
    with pytest.raises(SessionError, match="no clicks"):
        session.finish_object()


def test_errors_name_the_problem():
    segmenter = Segmenter("cv_grabcut")
    session = segmenter.new_session()
    with pytest.raises(SessionError, match="set_image"):
        session.add_click(1, 1, True)
    with pytest.raises(SessionError, match="set_image"):
        session.undo()
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        session.set_image(np.zeros((4, 4), np.uint8))
    session.set_image(two_objects_image())
    for x, y in [(120, 10), (-1, 10), (10, 90), (10, -0.6), (float("nan"), 3)]:
        with pytest.raises(ClickOutsideImageError, match="outside|finite"):
            session.add_click(x, y, True)
    assert session.clicks == []
    session.add_click(119, 89, True)  # the last pixel is inside
    session.close()
    for call in (lambda: session.add_click(1, 1, True), session.undo, session.reset,
                 session.finish_object, session.label_map,
                 lambda: session.set_image(two_objects_image())):
        with pytest.raises(SessionClosedError, match="closed"):
            call()
    with pytest.raises(KeyError, match="cv_grabcut"):
        Segmenter("no_such_predictor")


def test_sessions_share_one_model_and_are_thread_safe(models):
    """Two sessions on one model, each clicked from 3 threads at once: every session ends with
    all its clicks, and its final result equals a single-threaded replay of its clicks."""
    segmenter = Segmenter("iglr", models["iglr"], "cpu")
    sessions = [segmenter.new_session(), segmenter.new_session()]
    assert sessions[0]._predictor.model is sessions[1]._predictor.model
    for s in sessions:
        s.set_image(two_objects_image())

    def worker(session, clicks):
        for click in clicks:
            session.add_click(*click)

    threads = [threading.Thread(target=worker, args=(s, CLICKS[i::3][:2]))
               for s in sessions for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for s in sessions:
        assert len(s.clicks) == 6
        replay = segmenter.new_session()
        replay.set_image(two_objects_image())
        for c in s.clicks:
            _, probs = replay.add_click(c.coords[1], c.coords[0], c.is_positive)
        np.testing.assert_array_equal(s.current_probs(), probs)
