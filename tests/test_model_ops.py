"""Click maps, crop mapping and roi_align against an independent nested-loop reference."""
import math

import numpy as np
import pytest
import torch

from isegm.model.ops import click_maps, points_to_crop
from isegm.model.roi_sampling import roi_align


# ----------------------------------------------------------------------------- click maps

def _points(pos, neg, m):
    rows = [list(p) + [i] for i, p in enumerate(pos)] + [[-1, -1, -1]] * (m - len(pos))
    rows += [list(p) + [i] for i, p in enumerate(neg)] + [[-1, -1, -1]] * (m - len(neg))
    return torch.tensor([rows], dtype=torch.float32)


def test_click_maps_disk_radius_and_place():
    pts = _points([(10, 20)], [(30, 5)], m=3)
    maps = click_maps(pts, (40, 50), radius=5)
    assert maps.shape == (1, 2, 40, 50)
    yy, xx = np.mgrid[:40, :50]
    expected_pos = ((yy - 10) ** 2 + (xx - 20) ** 2 <= 25).astype(np.float32)
    expected_neg = ((yy - 30) ** 2 + (xx - 5) ** 2 <= 25).astype(np.float32)
    np.testing.assert_array_equal(maps[0, 0].numpy(), expected_pos)
    np.testing.assert_array_equal(maps[0, 1].numpy(), expected_neg)
    # the disk reaches exactly radius 5 along the axes and not beyond
    assert maps[0, 0, 10, 25] == 1 and maps[0, 0, 10, 26] == 0 and maps[0, 0, 15, 20] == 1
    assert maps[0, 0, 16, 20] == 0 and maps[0, 0].sum() == expected_pos.sum() == 81


def test_click_maps_padding_ignored_and_union():
    pts = _points([(5, 5), (5, 30)], [], m=4)
    maps = click_maps(pts, (20, 40), radius=3)
    assert maps[0, 1].sum() == 0  # only padding negatives
    only_first = click_maps(_points([(5, 5)], [], m=4), (20, 40), radius=3)
    assert maps[0, 0].sum() == 2 * only_first[0, 0].sum()
    # a padding row does not draw at (-1, -1) even with a large radius
    big = click_maps(_points([], [], m=2), (10, 10), radius=50)
    assert big.sum() == 0


def test_click_maps_batch_independent():
    a = _points([(3, 4)], [(8, 8)], m=2)
    b = _points([(9, 1)], [], m=2)
    both = click_maps(torch.cat([a, b]), (12, 12), radius=2)
    assert torch.equal(both[:1], click_maps(a, (12, 12), 2))
    assert torch.equal(both[1:], click_maps(b, (12, 12), 2))


def test_click_maps_distance_variant():
    pts = _points([(10, 10)], [], m=1)
    maps = click_maps(pts, (30, 30), radius=5, use_disks=False)
    assert maps[0, 0, 10, 10] == pytest.approx(1.0)
    assert maps[0, 0, 10, 15] == pytest.approx(1 - math.tanh(2.0), abs=1e-6)
    assert maps[0, 1].abs().max() == 0  # no negative click -> zero map
    assert maps[0, 0, 29, 29] < 1e-3


def test_click_disks_after_rescaling_into_crop():
    # A click at (y=40, x=60) in a 100x120 image, crop box x 40..80, y 20..60 -> 4 crop px/px.
    pts = _points([(40, 60)], [], m=1)
    boxes = torch.tensor([[40.0, 20.0, 80.0, 60.0]])
    crop_pts = points_to_crop(pts, boxes, 160)
    # pixel centre 40.5 -> (40.5 - 20) * 4 = 82 continuous -> pixel index 81.5
    assert crop_pts[0, 0, 0].item() == pytest.approx(81.5)
    assert crop_pts[0, 0, 1].item() == pytest.approx(81.5)
    assert torch.equal(crop_pts[0, 1], torch.tensor([-1.0, -1.0, -1.0]))
    maps = click_maps(crop_pts, (160, 160), radius=5)
    ys, xs = torch.nonzero(maps[0, 0], as_tuple=True)
    assert ys.float().mean().item() == pytest.approx(81.5)
    assert xs.float().mean().item() == pytest.approx(81.5)
    assert (ys.max() - ys.min()).item() == 9  # radius 5 at crop (network input) scale
    # consistency with roi_align: a one-pixel marker lands where the click is mapped
    img = torch.zeros(1, 1, 100, 120)
    img[0, 0, 40, 60] = 1
    crop = roi_align(img, torch.tensor([[0, 40.0, 20.0, 80.0, 60.0]]), 160)
    peak = torch.nonzero(crop[0, 0] == crop[0, 0].max()).float().mean(0)
    assert peak.tolist() == pytest.approx([81.5, 81.5], abs=0.6)


# ----------------------------------------------------------------------------- roi_align

def _bilinear_ref(img, y, x):
    """torchvision's bilinear_interpolate, written out for one channel image (H, W)."""
    h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * img[y_low, x_low] + hy * lx * img[y_low, x_high]
            + ly * hx * img[y_high, x_low] + ly * lx * img[y_high, x_high])


def _roi_align_ref(inp, boxes, out_h, out_w, scale, ratio, aligned):
    inp = inp.astype(np.float64)
    k = boxes.shape[0]
    c = inp.shape[1]
    out = np.zeros((k, c, out_h, out_w))
    for r in range(k):
        b = int(boxes[r, 0])
        off = 0.5 if aligned else 0.0
        x1, y1 = boxes[r, 1] * scale - off, boxes[r, 2] * scale - off
        x2, y2 = boxes[r, 3] * scale - off, boxes[r, 4] * scale - off
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / out_h, rw / out_w
        gh = ratio if ratio > 0 else int(math.ceil(rh / out_h))
        gw = ratio if ratio > 0 else int(math.ceil(rw / out_w))
        count = max(gh * gw, 1)
        for ch in range(c):
            for ph in range(out_h):
                for pw in range(out_w):
                    acc = 0.0
                    for iy in range(gh):
                        y = y1 + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = x1 + pw * bw + (ix + 0.5) * bw / gw
                            acc += _bilinear_ref(inp[b, ch], y, x)
                    out[r, ch, ph, pw] = acc / count
    return out


ROI_CASES = [
    # (boxes (b, x1, y1, x2, y2), output size, spatial scale, sampling ratio, aligned)
    ([[0, 2.0, 1.0, 9.0, 7.5], [1, 0.0, 0.0, 11.0, 9.0]], (5, 4), 1.0, -1, True),
    ([[1, -3.0, -2.0, 4.0, 5.0], [0, 6.0, 4.0, 14.0, 12.0]], (4, 6), 1.0, -1, True),  # borders
    ([[0, 0.0, 0.0, 22.0, 18.0], [1, 3.3, 2.7, 17.1, 9.9]], (3, 3), 0.5, 2, True),
    ([[0, 1.0, 1.0, 1.5, 1.2], [1, 10.0, 8.0, 11.0, 9.0]], (2, 3), 1.0, -1, False),  # tiny
    ([[1, 0.5, 0.25, 10.5, 8.75], [0, -1.0, 3.0, 12.0, 6.0]], (7, 9), 1.0, -1, False),
    ([[0, 0.0, 0.0, 11.0, 9.0]], (20, 25), 1.0, -1, True),  # upsampling the whole map
]


@pytest.mark.parametrize("boxes,size,scale,ratio,aligned", ROI_CASES)
def test_roi_align_matches_reference(boxes, size, scale, ratio, aligned):
    gen = torch.Generator().manual_seed(1)
    inp = torch.rand(2, 3, 9, 11, generator=gen)
    boxes_t = torch.tensor(boxes, dtype=torch.float32)
    out = roi_align(inp, boxes_t, size, spatial_scale=scale, sampling_ratio=ratio,
                    aligned=aligned)
    ref = _roi_align_ref(inp.numpy(), np.array(boxes, dtype=np.float64), size[0], size[1],
                         scale, ratio, aligned)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5, rtol=0)


def test_roi_align_identity_box_and_gradient():
    inp = torch.rand(1, 4, 8, 8, requires_grad=True)
    out = roi_align(inp, torch.tensor([[0, 0.0, 0.0, 8.0, 8.0]]), 8)
    assert torch.allclose(out, inp, atol=1e-6)  # aligned box over the whole map is identity
    out.sum().backward()
    assert torch.allclose(inp.grad, torch.ones_like(inp))


def test_roi_align_channels_last_and_empty():
    inp = torch.rand(2, 5, 9, 11).to(memory_format=torch.channels_last)
    boxes = torch.tensor([[1, 2.0, 1.0, 9.0, 7.5]])
    ref = _roi_align_ref(inp.numpy(), boxes.double().numpy(), 4, 4, 1.0, -1, True)
    np.testing.assert_allclose(roi_align(inp, boxes, 4).numpy(), ref, atol=1e-5)
    assert roi_align(inp, torch.zeros(0, 5), 4).shape == (0, 5, 4, 4)
    with pytest.raises(ValueError, match="boxes must be"):
        roi_align(inp, torch.zeros(3, 4), 4)


# ------------------------------------------------- roi_align: the matrix formulation (issue 16)

@pytest.fixture
def matrix_roi_align(monkeypatch):
    """roi_align with its own formulation also where torchvision imports."""
    from isegm.model import roi_sampling
    monkeypatch.setattr(roi_sampling, "torchvision_roi_align", lambda: None)
    return roi_align


def _random_boxes(gen, k, n, h, w):
    """Boxes of every kind on an (h, w) map: inside, partly outside, tiny (under a pixel),
    huge (many times the map: dozens of samples per bin), inverted (x2 < x1)."""
    rows = []
    for i in range(k):
        kind = i % 5
        cx, cy = float(gen.uniform(-2, w + 2)), float(gen.uniform(-2, h + 2))
        if kind == 0:
            bw, bh = gen.uniform(1, w), gen.uniform(1, h)
        elif kind == 1:
            bw, bh = gen.uniform(w, 2 * w), gen.uniform(h, 2 * h)
        elif kind == 2:
            bw, bh = gen.uniform(0.01, 0.9), gen.uniform(0.01, 0.9)
        elif kind == 3:
            bw, bh = gen.uniform(8 * w, 15 * w), gen.uniform(8 * h, 15 * h)
        else:
            bw, bh = -gen.uniform(0.5, 4), gen.uniform(0.5, 4)
        rows.append([i % n, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
    return np.array(rows)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [-1, 1, 2, 3])
def test_roi_align_matrices_match_the_reference_on_random_boxes(matrix_roi_align, aligned,
                                                                ratio):
    gen = np.random.default_rng(7 + ratio)
    n, c, h, w = 2, 2, 7, 9
    inp = torch.from_numpy(gen.random((n, c, h, w)).astype(np.float32))
    boxes = _random_boxes(gen, 10, n, h, w)
    for scale, size in ((1.0, (3, 4)), (0.5, (5, 2))):
        out = matrix_roi_align(inp, torch.tensor(boxes, dtype=torch.float32), size,
                               spatial_scale=scale, sampling_ratio=ratio, aligned=aligned)
        ref = _roi_align_ref(inp.numpy(), boxes.astype(np.float32).astype(np.float64), *size,
                             scale, ratio, aligned)
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-5, rtol=0)


def test_roi_align_one_box_per_input_channels_last_and_float64(matrix_roi_align):
    gen = np.random.default_rng(3)
    inp = torch.from_numpy(gen.random((3, 6, 8, 10)))
    boxes = torch.from_numpy(_random_boxes(gen, 3, 3, 8, 10))
    boxes[:, 0] = torch.arange(3)
    ref = _roi_align_ref(inp.numpy(), boxes.numpy(), 4, 5, 1.0, -1, True)
    out = matrix_roi_align(inp, boxes[:, 1:], (4, 5))  # (N, 4): box n on input n
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10, rtol=0)
    last = matrix_roi_align(inp.to(memory_format=torch.channels_last), boxes, (4, 5))
    np.testing.assert_allclose(last.numpy(), ref, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match=r"or \(3, 4\)"):
        matrix_roi_align(inp, boxes[:2, 1:], 4)


def test_roi_align_gradient(matrix_roi_align):
    gen = torch.Generator().manual_seed(4)
    inp = torch.rand(2, 1, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    boxes = torch.tensor([[1, -1.5, 0.5, 4.2, 3.9], [0, 0.3, -2.0, 9.0, 6.5],
                          [1, 2.2, 1.1, 2.6, 1.3]], dtype=torch.float64)
    for ratio, aligned in ((-1, True), (2, False)):
        assert torch.autograd.gradcheck(
            lambda x: matrix_roi_align(x, boxes, (2, 3), 0.9, ratio, aligned), (inp,),
            fast_mode=True)


def test_roi_align_reads_nothing_back_to_the_host(matrix_roi_align):
    """No `.item()`, `int(tensor)`, `bool(tensor)` or `.tolist()` inside: each would be a device
    synchronisation on CUDA (the gather formulation read two per call)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class NoHostReads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten._local_scalar_dense, torch.ops.aten.is_nonzero,
                                       torch.ops.aten.item):
                raise AssertionError(f"host read: {func}")
            return func(*args, **(kwargs or {}))

    inp = torch.rand(2, 3, 9, 11, requires_grad=True)
    with NoHostReads():
        out = matrix_roi_align(inp, torch.tensor([[0.5, 1.0, 7.0, 6.0], [-2.0, 0.0, 11.0, 9.5]]),
                               (4, 4))
        out.sum().backward()
    assert out.shape == (2, 3, 4, 4) and inp.grad.abs().sum() > 0


def test_roi_align_torchvision_path_equals_the_matrices(monkeypatch):
    from isegm.model import roi_sampling
    if roi_sampling.torchvision_roi_align() is None:
        pytest.skip("torchvision does not import beside this torch: roi_align runs its own "
                    "formulation, tested above")
    gen = np.random.default_rng(5)
    inp = torch.from_numpy(gen.random((2, 3, 7, 9)).astype(np.float32))
    boxes = torch.tensor(_random_boxes(gen, 10, 2, 7, 9), dtype=torch.float32)
    for ratio, aligned in ((-1, True), (2, False)):
        tv = roi_align(inp, boxes, (3, 4), 0.5, ratio, aligned)
        monkeypatch.setattr(roi_sampling, "torchvision_roi_align", lambda: None)
        own = roi_align(inp, boxes, (3, 4), 0.5, ratio, aligned)
        monkeypatch.undo()
        torch.testing.assert_close(tv, own, atol=1e-5, rtol=0)
