"""The IGLR predictor's crop rules, click for click as the released predictor's (issue 22):
the target crop after an empty previous mask (protocol rule 28f) and the focus rule's coarse
threshold (rule 35a), with both predictor backends (numba kernels and torch)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isegm.inference.clicker import Click, Clicker
from isegm.inference.focus import COARSE_PROB_THRESH, coarse_mask_of_probs
from isegm.inference.kernels import maps
from isegm.inference.predictors import get_predictor
from isegm.inference.resize import linear_taps
from isegm.utils import jit

H = W = 50
BLOCK = (20, 40)  # rows and columns 20-39 of the network frame hold the coarse object
LOGIT = 8.0


@pytest.fixture(scope="module")
def tiny_model():
    from isegm.model import IGLRModel
    torch.manual_seed(0)
    return IGLRModel("mit_b0", "s2", infer_size=H, refine_size=32).eval()


def _block_logits(size, flipped: bool) -> torch.Tensor:
    """(1, 1, h, w) logits: +LOGIT on the BLOCK rows and columns of the frame, -LOGIT elsewhere
    (mirrored for the flipped half of the batch, so the flip average keeps it in place)."""
    logits = torch.full((1, 1) + tuple(size), -LOGIT)
    logits[:, :, BLOCK[0]:BLOCK[1], BLOCK[0]:BLOCK[1]] = LOGIT
    return torch.flip(logits, dims=[3]) if flipped else logits


@pytest.fixture
def block_model(tiny_model, monkeypatch):
    """The tiny IGLR model whose coarse logits are the fixed block in whatever frame the
    predictor feeds (its feature and refiner stay real); records the clicks it was given."""
    forward = tiny_model.forward_coarse
    seen = []

    def forward_coarse(image, points, prev_mask=None):
        out = dict(forward(image, points, prev_mask))
        size = image.shape[-2:]
        out["instances"] = torch.cat([_block_logits(size, b == 1) for b in range(len(image))])
        seen.append(points[0].clone())
        return out

    monkeypatch.setattr(tiny_model, "forward_coarse", forward_coarse)
    tiny_model.seen_points = seen
    yield tiny_model
    del tiny_model.seen_points


@pytest.fixture(params=["numba", "torch"])
def backend(request):
    if request.param == "numba" and not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    return request.param


def _run_minimal_case(model, name="iglr", **options):
    """Issue 22's minimal case on a 50x50 image: click 1 positive at (10, 10); click 2 positive
    at (12, 12) on a 5x5 previous mask at rows/columns 8-12 (target ROI rows/columns 5-15
    stored); click 3 negative at (10, 10) on an empty previous mask. Returns the predictor and
    the outputs of click 3."""
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    pred = get_predictor(name, model, "cpu", infer_size=H, **options)
    pred.set_image(image)
    clicker = Clicker()
    clicker.add_click(Click(is_positive=True, coords=(10, 10)))
    pred.get_prediction(clicker)
    clicker.add_click(Click(is_positive=True, coords=(12, 12)))
    prev = np.zeros((H, W), np.float32)
    prev[8:13, 8:13] = 0.9
    pred.get_prediction(clicker, prev_mask=prev)
    assert pred.last_target_roi == (5, 15, 5, 15)  # inclusive; (5, 16, 5, 16) half-open
    clicker.add_click(Click(is_positive=False, coords=(10, 10)))
    empty = np.full((H, W), 0.3, np.float32)  # below 0.49 everywhere: an empty mask
    out = pred.get_prediction(clicker, prev_mask=empty)
    return pred, out


def test_empty_previous_mask_keeps_the_stored_roi_as_released(block_model, backend):
    """Rule 28f: the network sees the whole image (clicks in its frame unmapped), its output is
    squeezed into the ROI stored at click 2 (0 outside it), the focus box clamped to it."""
    pred, out = _run_minimal_case(block_model, with_flip=True, backend=backend)
    assert pred.last_target_roi == (5, 15, 5, 15)
    assert pred.last_focus_box == (8, 14, 8, 14)  # half-open
    # the whole-image network call: clicks at their image coordinates (frame = image size)
    points = block_model.seen_points[-1].numpy()
    np.testing.assert_array_equal(points[:, :2], [[10, 10], [12, 12], [10, 10], [-1, -1]])
    assert not out[:5].any() and not out[16:].any()
    assert not out[:, :5].any() and not out[:, 16:].any()
    # outside the refined box, the whole image's probabilities resized to the image, then
    # into the 11x11 ROI (the released inverse transforms)
    squeezed = _squeezed_block()
    outside = np.ones((11, 11), bool)
    outside[8 - 5:14 - 5, 8 - 5:14 - 5] = False
    np.testing.assert_allclose(out[5:16, 5:16][outside], squeezed[outside], rtol=1e-5,
                               atol=1e-6)
    assert squeezed[5:9, 5:9].min() > 0.62 and squeezed[outside].max() < 0.62


def _squeezed_block() -> np.ndarray:
    """The block's probabilities as released after rule 28f: the whole frame's map resized to
    the 50x50 image, then into the 11x11 stored ROI."""
    whole = F.interpolate(torch.sigmoid(_block_logits((H, W), False)), size=(H, W),
                          mode="bilinear", align_corners=True)
    return F.interpolate(whole, size=(11, 11), mode="bilinear", align_corners=True)[0, 0].numpy()


def test_coarse_predictor_squeezes_into_the_stored_roi(block_model, backend):
    """The coarse-only predictor's target crop follows rule 28f too (no refinement: the whole
    ROI holds the squeezed map)."""
    pred, out = _run_minimal_case(block_model, name="coarse", with_flip=False, backend=backend)
    assert pred.last_target_roi == (5, 15, 5, 15)
    expected = np.zeros((H, W), np.float32)
    expected[5:16, 5:16] = _squeezed_block()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_empty_previous_mask_full_image_option(block_model, backend):
    """`empty_mask_roi='full'`: the whole image is the target crop and receives the output."""
    pred, out = _run_minimal_case(block_model, with_flip=True, empty_mask_roi="full",
                                  backend=backend)
    assert pred.last_target_roi == (0, H - 1, 0, W - 1)
    assert pred.last_focus_box == (15, 43, 15, 43)
    expected = torch.sigmoid(_block_logits((H, W), False))[0, 0].numpy()
    outside = np.ones((H, W), bool)
    outside[15:43, 15:43] = False
    np.testing.assert_allclose(out[outside], expected[outside], rtol=1e-5, atol=1e-6)


def test_empty_mask_roi_is_checked(tiny_model):
    with pytest.raises(KeyError, match="empty_mask_roi 'old'.*stored, full"):
        get_predictor("iglr", tiny_model, "cpu", empty_mask_roi="old")


def test_empty_previous_mask_before_any_stored_roi_uses_the_whole_image(block_model, backend):
    """Click 2 on an empty previous mask: no ROI was stored, the whole image (rule 28b)."""
    image = np.zeros((H, W, 3), np.uint8)
    pred = get_predictor("iglr", block_model, "cpu", infer_size=H, with_flip=False,
                         backend=backend)
    pred.set_image(image)
    clicker = Clicker()
    for coords in ((10, 10), (30, 30)):
        clicker.add_click(Click(is_positive=True, coords=coords))
        pred.get_prediction(clicker, prev_mask=np.zeros((H, W), np.float32))
        assert pred.last_target_roi == (0, H - 1, 0, W - 1)
    assert pred.last_focus_box == (15, 43, 15, 43)


def _float32_range(lo: float, hi: float) -> np.ndarray:
    """Every float32 in [lo, hi) (positive bounds), ascending."""
    a, b = np.array([lo, hi], np.float32).view(np.int32)
    return np.arange(a, b, dtype=np.int32).view(np.float32)


def test_coarse_threshold_equals_the_logit_rule_on_every_float32():
    """Rule 35a: log(p / (1 - p)) > 0.49 in float32, on all 8,388,608 float32 p in [0.5, 1)
    (below 0.5 both are false), equals `coarse_mask_of_probs` (NumPy and torch) and the
    numba kernel's threshold at COARSE_PROB_THRESH; a strict `>` would miss one value."""
    p = _float32_range(0.5, 1.0)
    assert p.size == 1 << 23
    pt = torch.from_numpy(p)
    logit_rule = (torch.log(pt / (1 - pt)) > 0.49).numpy()
    with np.errstate(divide="ignore"):
        assert np.array_equal(np.log(p / (np.float32(1) - p)) > 0.49, logit_rule)
    np.testing.assert_array_equal(coarse_mask_of_probs(p), logit_rule)
    np.testing.assert_array_equal(coarse_mask_of_probs(pt).numpy(), logit_rule)
    assert not np.any(_float32_range(0.0, 0.5) >= COARSE_PROB_THRESH)
    missed = p[(p > COARSE_PROB_THRESH) != logit_rule]
    assert missed.tolist() == [np.float32(0.6201064586639404)]
    if jit.ENABLED:  # the numba backend's threshold, on the same values
        rows = p.reshape(2048, 4096)
        identity = linear_taps(2048, 2048)
        mask, count, bbox = maps.blend_threshold_xor(rows, identity, COARSE_PROB_THRESH,
                                                     np.zeros((1, 1), bool), (0, 0))
        np.testing.assert_array_equal(mask.view(bool).reshape(-1), logit_rule)
        assert count == int(logit_rule.sum())
