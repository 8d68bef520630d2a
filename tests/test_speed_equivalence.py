"""The speed work leaves outputs unchanged: each fast path against the straightforward one."""
import numpy as np
import pytest
import torch

from isegm.model.ops import roi_align, roi_align_box
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
