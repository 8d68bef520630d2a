"""The speed work leaves outputs unchanged: each fast path against the straightforward one."""
import os

import numpy as np
import pytest
import torch

from isegm.model.roi_sampling import roi_align, roi_align_box
from isegm.utils import jit
from isegm.utils.timing import NULL_TIMER, StageTimer


@pytest.mark.parametrize("shape, box, out, scale", [
    ((1, 3, 48, 85), (30.0, 12.0, 52.0, 33.0), 16, 1.0),          # upsampling crop
    ((1, 3, 216, 384), (10.0, 3.0, 370.0, 200.0), 16, 1.0),       # large box: sparse product
    ((1, 3, 40, 60), (-5.0, -3.0, 70.0, 50.0), 24, 1.0),          # box beyond the image
    ((1, 16, 16, 16), (10.3, 5.2, 60.7, 63.1), 8, 0.25),          # feature map, spatial scale
    ((1, 1, 32, 32), (3.5, 7.0, 31.0, 19.2), 32, 1.0),            # coarse logits
    ((2, 3, 20, 30), (0.0, 0.0, 30.0, 20.0), 7, 1.0),             # second batch element
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align_box_matches_roi_align(shape, box, out, scale, channels_last):
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    b = shape[0] - 1
    ref = roi_align(x, torch.tensor([[b, *box]]), out, spatial_scale=scale)
    new = roi_align_box(x, box, out, spatial_scale=scale, batch_index=b)
    assert new.shape == ref.shape == (1, shape[1], out, out)
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.0, 1e9])  # every pass sparse / every pass dense
def test_roi_align_box_sparse_and_dense_passes_agree(ratio, monkeypatch):
    from isegm.model import roi_sampling as roi_align_module
    monkeypatch.setattr(roi_align_module, "SPARSE_AXIS_RATIO", ratio)
    x = torch.randn(1, 3, 120, 200)
    for box, out in (((7.3, 5.1, 190.2, 111.7), 16), ((20.0, 30.0, 41.0, 52.0), 32),
                     ((-4.0, -6.0, 210.0, 130.0), 9)):
        ref = roi_align(x, torch.tensor([[0, *box]]), out)
        torch.testing.assert_close(roi_align_box(x, box, out), ref, rtol=1e-5, atol=1e-5)


def test_roi_align_box_sampling_ratio_and_unaligned():
    x = torch.randn(1, 2, 30, 40)
    box = (4.2, 3.1, 33.3, 21.7)
    for kwargs in ({"sampling_ratio": 2}, {"aligned": False}, {"output_size": (5, 9)}):
        size = kwargs.pop("output_size", 6)
        ref = roi_align(x, torch.tensor([[0, *box]]), size, **kwargs)
        torch.testing.assert_close(roi_align_box(x, box, size, **kwargs), ref,
                                   rtol=1e-5, atol=1e-5)


def test_roi_align_box_reads_only_the_window():
    """NaNs outside the sampled window must not leak into the crop."""
    x = torch.full((1, 1, 100, 100), float("nan"))
    x[:, :, 40:61, 30:71] = torch.rand(1, 1, 21, 41)
    crop = roi_align_box(x, (32.0, 42.0, 68.0, 58.0), 8)
    assert torch.isfinite(crop).all()


def test_stage_timer_records_per_click_and_null_timer_is_free():
    timer = StageTimer("cpu")
    with timer.click():
        with timer.stage("a"):
            pass
        timer.start("b")
        timer.stop("b")
        with timer.stage("a"):
            pass
    assert len(timer.clicks) == 1
    rec = timer.clicks[0]
    assert set(rec) == {"a", "b", "total"}
    assert rec["total"] >= rec["a"] >= 0.0
    timer.start("outside")  # outside a click: ignored
    timer.stop("outside")
    assert len(timer.clicks) == 1
    # the null timer hands out one shared context manager
    assert NULL_TIMER.stage("x") is NULL_TIMER.stage("y")
    with NULL_TIMER.stage("x"):
        pass


def test_conv_norm_act_folded_bn_matches_textbook_path():
    from isegm.model.layers import ConvNormAct
    from isegm.model.refiner import LocalRefiner
    torch.manual_seed(1)
    refiner = LocalRefiner(16, width=8, num_blocks=2)
    for m in refiner.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.3)
    refiner.eval()
    args = (torch.randn(1, 3, 32, 32), torch.rand(1, 2, 32, 32), torch.randn(1, 1, 32, 32),
            torch.randn(1, 16, 8, 8))
    with torch.no_grad():
        fast = refiner(*args)
        try:
            ConvNormAct.fold_bn = False
            slow = refiner(*args)
        finally:
            ConvNormAct.fold_bn = True
    for key in ("refined", "boundary"):
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-4, atol=1e-5)
    # training mode never folds (batch statistics)
    refiner.train()
    block = refiner.stem
    x = torch.randn(2, 6, 16, 16)
    torch.testing.assert_close(block(x), torch.nn.Sequential.forward(block, x))


def test_head_keeps_its_folded_weights_until_a_parameter_changes():
    """Without autograd the fused head composes (and folds BN into) its weights once: the
    output equals the textbook head's, and a parameter changed in place (an optimiser step, a
    loaded state dict) or a new BN statistic is seen at the next call; with autograd nothing
    is kept."""
    from isegm.model.heads import SegFormerHead
    torch.manual_seed(4)
    head = SegFormerHead((8, 16, 24, 32), decoder_dim=16).eval()
    head.bn.running_mean.normal_(0, 0.3)
    feats = [torch.randn(1, c, 16 // 2 ** i, 16 // 2 ** i) for i, c in enumerate((8, 16, 24, 32))]
    textbook = SegFormerHead((8, 16, 24, 32), decoder_dim=16, fused=False).eval()
    textbook.load_state_dict(head.state_dict())
    with torch.inference_mode():
        first = head(feats)[0]
        kept = head._folded_cache[1][0]
        torch.testing.assert_close(first, textbook(feats)[0], rtol=1e-4, atol=1e-5)
        assert head._folded()[0][0] is kept  # not composed again
        head.linear_c[2].weight.mul_(1.5)
        textbook.linear_c[2].weight.mul_(1.5)
        second = head(feats)[0]
        assert head._folded_cache[1][0] is not kept
        torch.testing.assert_close(second, textbook(feats)[0], rtol=1e-4, atol=1e-5)
        assert not torch.equal(first, second)
        head.bn.running_var.mul_(2.0)
        textbook.bn.running_var.mul_(2.0)
        torch.testing.assert_close(head(feats)[0], textbook(feats)[0], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        head.load_state_dict(textbook.state_dict())  # copies in place
        torch.testing.assert_close(head(feats)[0], textbook(feats)[0], rtol=1e-4, atol=1e-5)
    head._folded_cache = ((), [], None)
    out = head(feats)[0]  # with autograd: composed, not kept
    assert out.requires_grad and head._folded_cache[0] == ()


def test_autocast_weights_cast_once_give_the_same_bits(monkeypatch):
    """`with_autocast_weights`: the backbone's Linear / Conv2d weights stored in bf16 give the
    bf16 outputs of autocast casting them on every call, bit for bit (the network, and the
    predictor over clicks); the original model keeps its fp32 weights, and everything not cast
    is shared."""
    from isegm.inference.clicker import Clicker
    from isegm.inference.predictors import get_predictor
    from isegm.inference.predictors import iglr as iglr_module
    from isegm.model import IGLRModel, with_autocast_weights
    torch.manual_seed(2)
    model = IGLRModel("mit_b0", "s2", infer_size=64, refine_size=32).eval()
    twin = with_autocast_weights(model, torch.bfloat16)
    assert model.backbone.block1[0].attn.q.weight.dtype == torch.float32
    assert twin.backbone.block1[0].attn.q.weight.dtype == torch.bfloat16
    assert twin.head.linear_c[0].weight is model.head.linear_c[0].weight
    assert twin.backbone.block1[0].norm1.weight is model.backbone.block1[0].norm1.weight
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.rand(1, 3, 64, 64)
        points = torch.tensor([[[20.0, 30.0, 0.0], [-1.0, -1.0, -1.0]]])
        prev = torch.zeros(1, 1, 64, 64)
        a = model.forward_coarse(x, points, prev)["instances"]
        b = twin.forward_coarse(x, points, prev)["instances"]
    assert torch.equal(a, b)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 96, 3), dtype=np.uint8)
    gt = np.zeros((70, 96), np.int32)
    gt[20:50, 30:75] = 1
    outputs = []
    for cast_once in (True, False):
        if not cast_once:  # the predictor as it was: autocast casts on every call
            monkeypatch.setattr(iglr_module, "with_autocast_weights", lambda m, dtype: m)
        pred = get_predictor("iglr", model, "cpu", with_flip=False,
                             autocast_dtype=torch.bfloat16)
        assert (pred.model is not model) == cast_once
        pred.set_image(image)
        clicker = Clicker(gt_mask=gt)
        mask = np.zeros(gt.shape, bool)
        outs = []
        for _ in range(3):
            clicker.make_next_click(mask)
            out = pred.get_prediction(clicker)
            outs.append(out.copy())
            mask = out > 0.49
        outputs.append(outs)
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# predictor fast path (crop-only work) against the straightforward full-image computation

def _random_masks(rng, h, w):
    """A coarse mask inside a target window and a previous mask inside the same window."""
    y1, x1 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    y2, x2 = rng.integers(y1 + 3, h + 1), rng.integers(x1 + 3, w + 1)
    pred = np.zeros((h, w), bool)
    prev = np.zeros((h, w), np.float32)
    for mask, value in ((pred, True), (prev, 0.9)):
        for _ in range(rng.integers(0, 3)):
            a, b = rng.integers(y1, y2, 2)
            c, d = rng.integers(x1, x2, 2)
            mask[min(a, b):max(a, b) + 1, min(c, d):max(c, d) + 1] = value
    return pred, prev, (y1, y2, x1, x2)


@pytest.mark.parametrize("strategy", ["diff", "click_square", "whole_object"])
def test_focus_crop_window_form_matches_full_image(strategy):
    from isegm.inference.focus import focus_crop
    rng = np.random.default_rng(0)
    h, w = 40, 56
    for _ in range(150):
        pred, prev, (y1, y2, x1, x2) = _random_masks(rng, h, w)
        logits = np.where(pred, 5.0, -5.0).astype(np.float32)
        logits[:y1] = logits[y2:] = -np.inf
        logits[:, :x1] = logits[:, x2:] = -np.inf
        click = (float(rng.integers(0, h)), float(rng.integers(0, w)))  # in or out the window
        target = (y1, y2, x1, x2)
        full = focus_crop(logits, prev, target, click, strategy)
        window = focus_crop(logits[y1:y2, x1:x2] > 0.49, prev[y1:y2, x1:x2], target, click,
                            strategy, origin=(y1, x1), image_size=(h, w))
        assert window == full, (target, click)


def _reference_prediction(pred, clicks):
    """The straightforward IGLR click on full-resolution maps (the code before the speed work)."""
    from isegm.inference.predictors.base import clicks_to_points
    from isegm.inference.crops import map_clicks, target_crop_roi
    from isegm.inference.focus import focus_crop
    from isegm.inference.resize import resize_bilinear
    from isegm.inference.utils import get_bbox_from_mask
    full_h, full_w = pred.image_nd.shape[-2:]
    prev_nd = torch.from_numpy(pred.prev_prediction)[None, None]
    roi = target_crop_roi(get_bbox_from_mask(pred.prev_prediction > 0.49), clicks,
                          (full_h, full_w), pred.target_crop_r, pred.min_crop_size)
    r0, r1, c0, c1 = roi
    s = (pred.infer_size, pred.infer_size)
    image = resize_bilinear(pred.image_nd[:, :, r0:r1 + 1, c0:c1 + 1], s)
    prev = resize_bilinear(prev_nd[:, :, r0:r1 + 1, c0:c1 + 1], s)
    net_logits, feature = pred._network_coarse(image, prev,
                                               map_clicks(clicks, roi, s, align_corners=True))
    probs = resize_bilinear(torch.sigmoid(net_logits), (r1 - r0 + 1, c1 - c0 + 1))
    coarse = torch.zeros((1, 1, full_h, full_w))
    coarse[:, :, r0:r1 + 1, c0:c1 + 1] = probs
    logits = torch.log(coarse / (1 - coarse))
    if not isinstance(pred, IGLRPredictor):
        return coarse[0, 0].numpy()
    box = focus_crop(logits[0, 0].numpy(), pred.prev_prediction, (r0, r1 + 1, c0, c1 + 1),
                     clicks[-1].coords, pred.focus_strategy, pred.focus_crop_r)
    if box is not None:
        y1, y2, x1, x2 = box
        size = pred.refine_size
        sy, sx = pred.infer_size / (r1 - r0 + 1), pred.infer_size / (c1 - c0 + 1)
        img_box = torch.tensor([[0, x1, y1, x2, y2]], dtype=torch.float32)
        net_box = torch.tensor([[0, (x1 - c0) * sx, (y1 - r0) * sy, (x2 - c0) * sx,
                                 (y2 - r0) * sy]], dtype=torch.float32)
        image_crop = roi_align(pred.image_nd, img_box, size)
        coarse_crop = roi_align(net_logits, net_box, size)
        feature_crop = roi_align(feature, net_box, max(1, size // 4),
                                 spatial_scale=feature.shape[-1] / pred.infer_size)
        crop_clicks = [c.copy(coords=((c.coords[0] + 0.5 - y1) * size / (y2 - y1) - 0.5,
                                      (c.coords[1] + 0.5 - x1) * size / (x2 - x1) - 0.5))
                       for c in clicks]
        points = clicks_to_points([crop_clicks], order=0)
        refined = pred.model.forward_refine(image_crop, points, coarse_crop,
                                            feature_crop)["refined"]
        if len(clicks) > pred.refine_after_clicks:
            logits = torch.log(prev_nd / (1 - prev_nd))
        logits[:, :, y1:y2, x1:x2] = resize_bilinear(refined, (y2 - y1, x2 - x1))
    return torch.sigmoid(logits)[0, 0].numpy()


from isegm.inference.predictors import IGLRPredictor  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model():
    from isegm.model import IGLRModel
    torch.manual_seed(0)
    model = IGLRModel("mit_b0", "s2", infer_size=64, refine_size=32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".iga_" in name:
                p.normal_(0, 0.5)
    return model


BACKENDS = ["numba", "torch", "torch-copy"]  # torch-copy: the CUDA form (crop not in place)


def _predictor(name, model, backend, **kwargs):
    """A predictor on the CPU with `backend`; 'torch-copy' is the torch backend as it runs on
    CUDA (the coarse crop computed apart from the output map and copied into it)."""
    from isegm.inference.predictors import get_predictor
    if backend == "numba" and not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    pred = get_predictor(name, model, "cpu", backend=backend.split("-")[0], **kwargs)
    assert pred.backend.name == backend.split("-")[0]
    if backend == "torch-copy":
        pred.backend.in_place = False
    return pred


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, kwargs", [
    ("iglr", {"with_flip": False}),
    ("iglr", {"with_flip": True, "focus_strategy": "click_square"}),
    ("iglr", {"with_flip": False, "refine_after_clicks": 2, "focus_strategy": "whole_object"}),
    ("coarse", {"with_flip": False}),
    ("iglr", {"with_flip": False, "separable": True}),
    ("coarse", {"with_flip": True, "separable": True}),
    ("iglr", {"with_flip": True, "separable": True, "roi_kernel": True}),
])
def test_predictor_fast_path_matches_full_image_reference(tiny_model, name, kwargs, backend,
                                                          monkeypatch):
    """Scripted previous masks (what a trained model would return) drive real target and focus
    crops; every click's output equals the full-image computation's, with each backend.
    `separable`: the torch backend's two-pass resize of large maps used for every paste
    (normally from 1 MP on); `roi_kernel`: the numba backend's target crop and refiner image
    crop from the uint8 image (normally from 1 MP and 0.26 MP on)."""
    from isegm.inference import backends, resize
    from isegm.inference.clicker import Clicker
    kwargs = dict(kwargs)
    if kwargs.pop("separable", False):
        monkeypatch.setattr(resize, "SEPARABLE_MIN_PIXELS", 1)
    if kwargs.pop("roi_kernel", False):  # the uint8 image sampling for every crop and box
        monkeypatch.setattr(backends, "ROI_ALIGN_MIN_PIXELS", 1)
        monkeypatch.setattr(backends, "RESIZE_IMAGE_MIN_PIXELS", 1)
    rng = np.random.default_rng(0)
    h, w = 70, 96
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = np.zeros((h, w), np.int32)
    gt[20:50, 30:75] = 1
    pred = _predictor(name, tiny_model, backend, **kwargs)
    pred.set_image(image)
    clicker = Clicker(gt_mask=gt)
    mask = np.zeros((h, w), bool)
    for k in range(5):
        clicker.make_next_click(mask)
        prev_before = pred.prev_prediction.copy()
        with torch.inference_mode():
            expected = _reference_prediction(pred, clicker.get_clicks())
        got = pred.get_prediction(clicker)
        np.testing.assert_array_equal(pred.prev_prediction, got)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert not np.shares_memory(prev_before, got)
        # next previous mask: the object shifted, a soft border outside (support grows)
        scripted = np.zeros((h, w), np.float32)
        scripted[18 + 2 * k:48, 28:70 + k] = 0.9
        scripted[10:12, 5:9] = 0.3
        if k == 3:  # through the public prev_mask route (support unknown: rescanned)
            pred.prev_prediction = scripted
        elif k == 2:  # with its threshold over the support, as the benchmark passes it
            pred.set_prev_prediction(scripted, (10, 48, 5, 72),
                                     above=scripted[10:48, 5:72] > 0.49)
        else:
            pred.set_prev_prediction(scripted, None if k % 2 else (10, 48, 5, 70 + k))
        mask = scripted > 0.49


@pytest.mark.parametrize("backend", BACKENDS)
def test_previous_mask_kept_from_the_paste_equals_the_outputs_threshold(tiny_model, backend):
    """Clicks chained on the predictor's own outputs (the evaluator's pattern): the previous
    mask the numba paste keeps (built while the output is written) equals the output's
    threshold over its support, count and bbox included; and `set_prev_prediction(above=...)`
    checks what it is given."""
    from isegm.inference.clicker import Clicker
    from isegm.inference.utils import get_bbox_from_mask
    rng = np.random.default_rng(3)
    h, w = 70, 96
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = np.zeros((h, w), np.int32)
    gt[15:55, 20:80] = 1
    pred = _predictor("iglr", tiny_model, backend, with_flip=False, refine_after_clicks=4)
    pred.set_image(image)
    clicker = Clicker(gt_mask=gt)
    out = np.zeros((h, w), np.float32)
    kept = 0
    for _ in range(6):  # clicks 5 and 6 paste on the previous map (no mask kept there)
        clicker.make_next_click(out > 0.49)
        out = pred.get_prediction(clicker)
        cached = pred._prev_mask_cache
        if cached is not None and cached[0] is out:
            kept += 1
        mask, (y1, y2, x1, x2), bbox = pred._prev_mask()
        expected = out[y1:y2, x1:x2] > 0.49
        np.testing.assert_array_equal(mask, expected)
        assert bbox == get_bbox_from_mask(expected)
        assert not out[:y1].any() and not out[y2:].any()  # the support holds the output
        assert not out[:, :x1].any() and not out[:, x2:].any()
    assert kept == (4 if backend == "numba" else 0)
    with pytest.raises(ValueError, match="support"):
        pred.set_prev_prediction(out, None, above=out > 0.49)
    with pytest.raises(ValueError, match="bool mask of the support"):
        pred.set_prev_prediction(out, (0, 10, 0, 10), above=np.zeros((10, 9), bool))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["iglr", "coarse"])
def test_predictor_reuses_only_outputs_nobody_holds(tiny_model, name, backend):
    """Output maps are recycled (their memory reused for a later click) only once the caller
    has dropped them: a caller that keeps every output sees them unchanged, and the outputs
    are the same either way. Objects and crops vary so stale pixels would show."""
    from isegm.inference.clicker import Clicker
    rng = np.random.default_rng(1)
    h, w = 80, 110
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gts = [np.zeros((h, w), np.int32) for _ in range(2)]
    gts[0][10:60, 15:50] = 1
    gts[1][40:75, 60:105] = 1
    kept, kept_copies, dropped = [], [], []
    holder = _predictor(name, tiny_model, backend, with_flip=False, refine_after_clicks=3)
    dropper = _predictor(name, tiny_model, backend, with_flip=False, refine_after_clicks=3)
    for gt in gts:
        for pred in (holder, dropper):
            pred.set_image(image)
        clickers = [Clicker(gt_mask=gt), Clicker(gt_mask=gt)]
        mask = np.zeros((h, w), bool)
        for k in range(6):
            for c in clickers:
                c.make_next_click(mask)
            out = holder.get_prediction(clickers[0])
            kept.append(out)
            kept_copies.append(out.copy())
            probs = dropper.get_prediction(clickers[1])  # the evaluator's pattern
            dropped.append(probs.copy())
            np.testing.assert_array_equal(probs, out)
            # steer the next crops: a drifting box as the next binary mask
            mask = np.zeros((h, w), bool)
            mask[5 + 6 * k:50 + 4 * k, 10 + 9 * k:40 + 10 * k] = True
            del probs
    for out, copy in zip(kept, kept_copies):
        np.testing.assert_array_equal(out, copy)  # nothing the caller held was overwritten
    assert len({o.__array_interface__["data"][0] for o in kept}) == len(kept)
    assert holder.reused_outputs == 0
    assert dropper.reused_outputs >= 8  # from the third click of each object on


@pytest.mark.parametrize("src, dst", [((256, 256), (2160, 1100)), ((64, 40), (1500, 700)),
                                      ((2, 300), (1100, 1000)), ((1, 5), (1100, 1000)),
                                      ((300, 200), (1200, 900))])
@pytest.mark.parametrize("compiled", [True, False])
def test_separable_resize_of_large_maps_matches_aten(src, dst, compiled):
    """Large one-channel maps are resized in two passes straight into the output window (rows
    with ATen, then across them the torch backend's sparse product, `resize_bilinear`; or the
    numba backend's row kernels, its coarse paste): equal to ATen's one-pass kernel to float
    rounding, and nothing outside the window is touched."""
    from isegm.inference.backends import NumbaBackend
    from isegm.inference.resize import SEPARABLE_MIN_PIXELS, resize_bilinear
    from isegm.inference.utils import get_bbox_from_mask
    if compiled and not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    assert dst[0] * dst[1] >= SEPARABLE_MIN_PIXELS  # the sizes take the two-pass path
    torch.manual_seed(0)
    x = torch.rand(1, 1, *src)
    full = torch.full((dst[0] + 5, dst[1] + 9), -7.0)
    window = full[2:2 + dst[0], 4:4 + dst[1]][None, None]
    if compiled:
        backend, box = NumbaBackend(torch.device("cpu")), (2, 2 + dst[0], 4, 4 + dst[1])
        mask, bbox = backend.paste(full.numpy(), backend.coarse(x, full.numpy(), box), box)
        written = window[0, 0].numpy() > 0.49  # the written map's threshold, kept as it went
        np.testing.assert_array_equal(mask, written)
        assert bbox == get_bbox_from_mask(written)
    else:
        got = resize_bilinear(x, dst, out=window)
        assert got.data_ptr() == window.data_ptr()
    expected = torch.nn.functional.interpolate(x, size=dst, mode="bilinear", align_corners=True)
    torch.testing.assert_close(window, expected, rtol=0, atol=2e-7)
    full[2:2 + dst[0], 4:4 + dst[1]] = -7.0
    assert bool((full == -7.0).all())  # outside the window: untouched


def test_compiled_roi_align_of_the_uint8_image_matches_roi_align_box():
    """`roi_align_image` (uint8 HxWx3, rows in parallel) equals `roi_align_box` on the
    float image / 255 for boxes inside, across and outside the image, large and small."""
    from isegm.model.roi_sampling import roi_align_image
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    nd = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    boxes = [(0, 0, 420, 300), (10.5, 20.25, 60.0, 41.0), (-15.0, -8.0, 30.0, 25.0),
             (400.0, 280.0, 450.0, 330.0), (100, 50, 101, 51), (33.3, 12.7, 407.9, 288.1)]
    for box in boxes:
        for size in ((64, 64), (17, 40)):
            expected = roi_align_box(nd, box, size)
            got = roi_align_image(image, box, size)
            assert got.shape == (1, 3) + size
            torch.testing.assert_close(got, expected.contiguous(), rtol=0, atol=5e-7)
    with pytest.raises(ValueError, match="uint8"):
        roi_align_image(image.astype(np.float32), boxes[0], 8)


def test_compiled_roi_align_of_features_matches_roi_align_box():
    """`roi_align_features` (window copied channels-last, all channels per FMA) equals
    `roi_align_box` on a 64-channel map at a quarter of the box coordinates' scale."""
    from isegm.model.roi_sampling import roi_align_features
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    torch.manual_seed(3)
    feature = torch.randn(1, 64, 40, 52)
    for box in [(40.0, 30.5, 200.0, 150.0), (0.0, 0.0, 208.0, 160.0), (-20.0, 130.0, 90.0, 190.0),
                (100.3, 7.9, 101.0, 9.0)]:
        for size in (16, (9, 23)):
            expected = roi_align_box(feature, box, size, spatial_scale=0.25)
            got = roi_align_features(feature, box, size, 0.25)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="float32"):
        roi_align_features(feature.double(), (0, 0, 8, 8), 4, 0.25)


def test_compiled_map_kernels_match_numpy():
    """The predictor's one-pass kernels against their NumPy forms: threshold with count and
    bbox over a window; the thresholded separable resize XOR a clipped mask, with count and
    bbox; the row blend into sub-windows of a map; empty results included."""
    from isegm.inference.kernels import maps
    from isegm.inference.backends import _window_minus_box
    from isegm.inference.resize import linear_taps
    from isegm.inference.utils import get_bbox_from_mask
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    rng = np.random.default_rng(2)
    values = rng.random((50, 70)).astype(np.float32)
    for window, thresh in (((3, 40, 5, 66), 0.8), ((0, 50, 0, 70), 0.3), ((7, 9, 1, 2), 2.0)):
        mask, count, bbox = maps.threshold_with_bbox(values, window, thresh)
        r0, r1, c0, c1 = window
        expected = values[r0:r1, c0:c1] > thresh
        np.testing.assert_array_equal(mask, expected)
        assert count == expected.sum() and bbox == get_bbox_from_mask(expected)
    rows = rng.random((12, 70)).astype(np.float32)
    taps = linear_taps(12, 45)
    full = torch.nn.functional.interpolate(torch.from_numpy(rows)[None, None], size=(45, 70),
                                           mode="bilinear", align_corners=True)[0, 0].numpy()
    other = rng.random((20, 30)) > 0.5
    for at in ((-3, 50), (10, -4), (40, 60), (100, 0)):
        for thresh in (0.6, 5.0):
            diff, count, bbox = maps.blend_threshold_xor(rows, taps, thresh, other, at)
            coarse = full >= thresh  # the focus rule's coarse threshold is inclusive
            placed = np.zeros((45, 70), bool)
            y, x = at
            ys, xs = slice(max(0, y), min(45, y + 20)), slice(max(0, x), min(70, x + 30))
            placed[ys, xs] = other[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
            np.testing.assert_array_equal(diff.view(bool), coarse ^ placed)
            assert count == coarse.sum() and bbox == get_bbox_from_mask(coarse)
    out = np.full((60, 90), -1, np.float32)
    window, box = (5, 50, 10, 80), (20, 30, 40, 55)
    parts = _window_minus_box(window, box)
    covered = np.zeros(out.shape, int)
    for a0, a1, b0, b1 in parts:
        covered[a0:a1, b0:b1] += 1
        maps.blend_rows(rows, taps, out, (a0, a1, b0, b1), col0=b0 - 10, first_row=a0 - 5)
    inside = np.zeros(out.shape, int)
    inside[5:50, 10:80] = 1
    inside[20:30, 40:55] = 0
    np.testing.assert_array_equal(covered, inside)  # the parts tile the window minus the box
    written = covered.astype(bool)
    np.testing.assert_allclose(out[written], full[:, 0:70][(np.nonzero(written)[0] - 5),
                                                            (np.nonzero(written)[1] - 10)],
                               rtol=0, atol=2e-7)
    assert (out[~written] == -1).all()


@pytest.mark.parametrize("src, width", [((256, 256), 3435), ((40, 300), 77), ((3, 5), 1),
                                        ((7, 1), 50)])
def test_compiled_first_pass_of_the_separable_resize_matches_aten(src, width):
    """`maps.resize_rows` (rows resized alone, the separable resize's first pass) equals
    ATen's align_corners=True bilinear resize to (h, width), enlarging and shrinking."""
    from isegm.inference.kernels import maps
    from isegm.inference.resize import linear_taps
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    x = torch.randn(1, 1, *src, generator=torch.Generator().manual_seed(1))
    got = maps.resize_rows(x[0, 0].numpy(), linear_taps(src[1], width))
    expected = torch.nn.functional.interpolate(x, size=(src[0], width), mode="bilinear",
                                               align_corners=True)[0, 0].numpy()
    assert got.shape == (src[0], width) and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=3e-7)


def test_compiled_sigmoid_paste_with_its_threshold_matches_torch():
    """The paste's row blend with the sigmoid (a vectorised polynomial exp) is within 3e-7 of
    PyTorch's sigmoid of the blend, saturating cleanly; the threshold built in the same pass
    equals the written map's (count and bbox too), pieces tiling the window; a window not
    fully written is refused."""
    from isegm.inference.kernels import maps
    from isegm.inference.backends import _window_minus_box
    from isegm.inference.resize import linear_taps
    from isegm.inference.utils import get_bbox_from_mask
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    rng = np.random.default_rng(5)
    rows = ((rng.random((16, 90)) - 0.5) * 40).astype(np.float32)
    rows[0, :8] = [0.0, 1e-8, -1e-8, 90.0, -90.0, 1e4, -1e4, 16.7]
    rows[3] = np.linspace(-0.2, 0.2, 90)  # values around the threshold's logit
    taps = linear_taps(16, 61)
    blend = torch.nn.functional.interpolate(torch.from_numpy(rows)[None, None], size=(61, 90),
                                            mode="bilinear", align_corners=True)[0, 0]
    expected = torch.sigmoid(blend).numpy()
    out = np.full((70, 100), -1, np.float32)
    window, box = (4, 65, 6, 96), (20, 40, 30, 70)
    mask = maps.WindowMask(window, 0.49)
    for a0, a1, b0, b1 in _window_minus_box(window, box):  # the coarse parts: a plain blend
        maps.blend_rows(rows, taps, out, (a0, a1, b0, b1), col0=b0 - 6, first_row=a0 - 4,
                           mask=mask)
    with pytest.raises(ValueError, match="cover"):
        mask.result()
    maps.blend_rows(rows, taps, out, box, col0=24, first_row=16, sigmoid=True, mask=mask)
    inside = np.zeros(out.shape, bool)
    inside[20:40, 30:70] = True
    np.testing.assert_allclose(out[inside], expected[16:36, 24:64].ravel(), rtol=0, atol=3e-7)
    assert out[0, 0] == -1 and out[69, 99] == -1  # nothing outside the window
    np.testing.assert_allclose(out[4:20, 6:96], blend.numpy()[:16], rtol=1e-6, atol=2e-7)
    values, count, bbox = mask.result()
    written = out[4:65, 6:96] > 0.49
    np.testing.assert_array_equal(values, written)
    assert count == written.sum() and bbox == get_bbox_from_mask(written)
    full = np.zeros((61, 90), np.float32)
    maps.blend_rows(rows, taps, full, (0, 61, 0, 90), sigmoid=True)  # without a mask
    np.testing.assert_allclose(full, expected, rtol=0, atol=3e-7)
    assert full[0, 5] == 1.0 and full[0, 6] < 1e-37
    with pytest.raises(ValueError, match="outside the mask"):
        maps.blend_rows(rows, taps, out, (0, 10, 0, 10), mask=maps.WindowMask(box, 0.5))


def test_focus_component_from_row_runs_matches_the_flood_fill():
    """The XOR's row runs (`blend_threshold_xor(..., runs=True)`, the XOR itself not kept) give
    the focus rule's box of the clicked component, or of the zeros when the click is on one,
    equal to the flood fill / mask pass they replace: blobby and noisy masks, clicks on ones,
    zeros and outside the window; the XOR is computed only when a row had more runs than are
    kept (then the flood fill)."""
    from scipy import ndimage
    from isegm.inference.kernels import maps
    from isegm.inference.focus import _component_bbox
    from isegm.inference.resize import linear_taps
    from isegm.inference.utils import get_bbox_from_mask
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    rng = np.random.default_rng(11)
    checked = overflowed = 0
    for trial in range(120):
        h, w = int(rng.integers(1, 90)), int(rng.integers(1, 300))
        s = int(rng.integers(2, 10))
        rows = rng.random((s, w)).astype(np.float32)  # noise along the rows: many runs
        if trial % 2:  # blobs
            rows = ndimage.uniform_filter1d(rows, 25, axis=1)
        taps = linear_taps(s, h)
        other = ndimage.uniform_filter(rng.random((h, w)), 3) > rng.uniform(0.45, 0.6)
        thresh = float(rng.choice([0.3, 0.5, 0.7]))
        xor, count, bbox, runs = maps.blend_threshold_xor(rows, taps, thresh, other,
                                                             (0, 0), runs=True)
        diff, plain_count, plain_bbox = maps.blend_threshold_xor(rows, taps, thresh, other,
                                                                    (0, 0))
        np.testing.assert_array_equal(xor(), diff)  # computed again on demand: the same
        assert (count, bbox) == (plain_count, plain_bbox)
        overflowed += not runs.complete
        if runs.complete:
            zeros = diff == 0
            assert runs.zeros() == (int(zeros.sum()), get_bbox_from_mask(zeros) if zeros.any()
                                    else None)
        calls = []

        def on_demand():
            calls.append(1)
            return xor()

        ys, xs = np.nonzero(diff)
        picks = [(int(rng.integers(-2, h + 2)), int(rng.integers(-2, w + 2))) for _ in range(3)]
        if len(ys):
            picks += [(int(ys[k]), int(xs[k])) for k in rng.integers(0, len(ys), 3)]
        for y, x in picks:
            oy, ox = int(rng.integers(0, 4)), int(rng.integers(0, 4))
            size = (h + oy + int(rng.integers(0, 3)), w + ox + int(rng.integers(0, 3)))
            expected = _component_bbox(diff.copy(), y + oy, x + ox, (oy, ox), size)
            assert _component_bbox(on_demand, y + oy, x + ox, (oy, ox), size,
                                   runs) == expected
            checked += 1
        assert bool(calls) == (not runs.complete)  # the mask only where the runs fall short
    assert checked > 500 and overflowed > 5


def test_numba_uses_512_bit_vectors_on_avx512_unless_told_otherwise():
    """On an AVX-512 CPU, importing the kernels turns off LLVM's 256-bit preference through
    NUMBA_CPU_FEATURES; a value the user set is left alone."""
    import subprocess
    import sys
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    code = ("import os, llvmlite.binding as ll; from isegm.utils import jit; "
            "print(bool(ll.get_host_cpu_features().get('avx512f')), "
            "repr(os.environ.get('NUMBA_CPU_FEATURES', '')))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(env):
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                              capture_output=True, text=True, check=True)
        avx512, features = done.stdout.split(" ", 1)
        return avx512 == "True", eval(features)

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
    avx512, features = run(env)
    assert features.endswith(",-prefer-256-bit") == avx512
    env["NUMBA_CPU_FEATURES"] = "+sse2"
    assert run(env)[1] == "+sse2"


def test_compiled_resize_of_the_uint8_image_matches_aten():
    """`kernels.image.resize_image` equals ATen's align_corners=True bilinear resize of the
    float image window / 255, shrinking and enlarging; a window outside the image is refused."""
    from isegm.inference.kernels import image as kernels_image
    from isegm.inference.resize import linear_taps
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    nd = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    for (r0, r1, c0, c1), size in (((0, 300, 0, 420), (64, 64)), ((17, 230, 40, 41), (32, 32)),
                                   ((5, 15, 100, 112), (40, 50)), ((299, 300, 0, 420), (8, 8))):
        expected = torch.nn.functional.interpolate(nd[:, :, r0:r1, c0:c1], size=size,
                                                   mode="bilinear", align_corners=True)
        got = kernels_image.resize_image(image, (r0, r1, c0, c1),
                                         linear_taps(r1 - r0, size[0]),
                                         linear_taps(c1 - c0, size[1]))
        torch.testing.assert_close(got, expected, rtol=0, atol=3e-7)
    with pytest.raises(ValueError, match="outside"):
        kernels_image.resize_image(image, (0, 301, 0, 10), linear_taps(301, 4),
                                   linear_taps(10, 4))


def test_compiled_kernels_use_as_many_threads_as_torch():
    """The parallel kernels follow `torch.set_num_threads` (a benchmark's `--threads`)."""
    from isegm.inference.kernels import maps
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    import numba
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        values = np.ones((8, 8), np.float32)
        assert maps.threshold_with_bbox(values, (0, 8, 0, 8), 0.5)[1] == 64
        assert numba.get_num_threads() == 1
        torch.set_num_threads(max(1, before))
        maps.threshold_with_bbox(values, (0, 8, 0, 8), 0.5)
        assert numba.get_num_threads() == min(before, numba.config.NUMBA_NUM_THREADS)
    finally:
        torch.set_num_threads(before)


def test_backend_is_chosen_once_numba_on_the_cpu_torch_otherwise():
    """The predictor's backend: numba on the CPU where numba is present, torch on CUDA and with
    IGLR_NUMBA=0 (checked in a fresh process, where the variable is read); a wrong name or the
    numba backend off the CPU is refused with the reason."""
    import subprocess
    import sys
    from isegm.inference.backends import NumbaBackend, TorchBackend, select_backend
    cpu = torch.device("cpu")
    assert type(select_backend(cpu)) is (NumbaBackend if jit.ENABLED else TorchBackend)
    assert type(select_backend(torch.device("cuda"))) is TorchBackend
    assert type(select_backend(cpu, "torch")) is TorchBackend
    with pytest.raises(KeyError, match="unknown predictor backend 'jax'"):
        select_backend(cpu, "jax")
    with pytest.raises(ValueError, match="runs on the CPU"):
        select_backend(torch.device("cuda"), "numba")
    code = ("from isegm.inference.backends import select_backend; import torch; "
            "print(select_backend(torch.device('cpu')).name)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          check=True, env={**os.environ, "IGLR_NUMBA": "0"})
    assert done.stdout.strip() == "torch"


def test_backends_give_the_same_clicks(tiny_model):
    """The numba and torch backends (in place on the CPU, and copied as on CUDA) chain the same
    outputs over clicks on their own previous outputs (the evaluator's pattern)."""
    from isegm.inference.clicker import Clicker
    rng = np.random.default_rng(7)
    h, w = 72, 100
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = np.zeros((h, w), np.int32)
    gt[12:60, 25:85] = 1
    outputs = {}
    for backend in BACKENDS:
        pred = _predictor("iglr", tiny_model, backend, with_flip=True, refine_after_clicks=4)
        pred.set_image(image)
        clicker = Clicker(gt_mask=gt)
        out, outs = np.zeros((h, w), np.float32), []
        for _ in range(6):
            clicker.make_next_click(out > 0.49)
            out = pred.get_prediction(clicker)
            outs.append(out.copy())
        outputs[backend] = outs
    for backend in BACKENDS[1:]:
        for a, b in zip(outputs[BACKENDS[0]], outputs[backend]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", [None, "omp"])
def test_parallel_kernels_run_on_numbas_workqueue_layer_unless_chosen(preset):
    """numba's OpenMP layer spins beside PyTorch's pool (a click 7x slower under load): our
    kernels default to `workqueue`; a NUMBA_THREADING_LAYER the user set is kept."""
    if not jit.ENABLED:
        pytest.skip(f"numba kernels disabled: {jit.DISABLED_REASON}")
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if preset:
        env["NUMBA_THREADING_LAYER"] = preset
    code = ("import numpy as np, numba\n"
            "from isegm.utils import jit\n"
            "def double(x):\n"
            "    for i in jit.prange(x.shape[0]):\n"
            "        x[i] *= 2.0\n"
            "numba.njit(parallel=True)(double)(np.ones(64))\n"
            "print(numba.threading_layer())\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    if preset == "omp" and done.returncode != 0 and "threading layer" in done.stderr:
        pytest.skip("numba's OpenMP layer is not available here")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (preset or "workqueue")
