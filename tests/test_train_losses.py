"""Losses, metrics, optimiser/schedule and the training-time interaction helpers."""
import math

import numpy as np
import pytest
import torch

from isegm.engine.losses import (BoundaryWeightedFocalLoss, LossSpec, NormalizedFocalLoss,
                                 SigmoidBinaryCrossEntropyLoss, boundary_band, check_loss_specs,
                                 compute_losses)
from isegm.engine.metrics import IoUMetric
from isegm.engine.optim import build_multistep_scheduler, build_optimizer, clip_gradients


def _square_target(h=16, w=16):
    t = torch.zeros(2, 1, h, w)
    t[:, :, 4:12, 4:12] = 1
    return t


def test_normalized_focal_loss_reference_value():
    # One sample, two valid pixels: p(true) = 0.8 and 0.6, one ignored pixel.
    logits = torch.tensor([[[[math.log(4.0), math.log(1.5), 5.0]]]])  # sigmoid 0.8, 0.6
    target = torch.tensor([[[[1.0, 1.0, -1.0]]]])
    loss = NormalizedFocalLoss(alpha=0.5, gamma=2)(logits, target)
    beta = np.array([0.2 ** 2, 0.4 ** 2])
    mult = 2 / beta.sum()
    expected = (-(0.5 * beta * mult * np.log([0.8, 0.6]))).sum() / 2
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_normalized_focal_loss_ignores_ignore_pixels_and_orders_predictions():
    target = _square_target()
    good = (target * 2 - 1) * 6
    bad = -good
    nfl = NormalizedFocalLoss()
    assert nfl(good, target).max() < 0.01 < nfl(bad, target).min()
    ignored = target.clone()
    ignored[:, :, :, :8] = -1
    changed = good.clone()
    changed[:, :, :, :8] = -good[:, :, :, :8]  # flip only ignored pixels
    assert torch.allclose(nfl(changed, ignored), nfl(good, ignored))
    # gradient flows, and not through ignored pixels
    logits = torch.zeros_like(target, requires_grad=True)
    nfl(logits, ignored).sum().backward()
    assert logits.grad[:, :, :, :8].abs().max() == 0
    assert logits.grad[:, :, :, 8:].abs().max() > 0


def test_boundary_band_and_weighted_focal_loss():
    mask = torch.zeros(1, 1, 20, 20)
    mask[:, :, 5:15, 5:15] = 1
    band = boundary_band(mask, 2)
    # band = dilate XOR erode: rows 3..16 minus rows 7..12 of the square region
    assert band[0, 0, 10, 3:17].tolist() == [1.0] * 4 + [0.0] * 6 + [1.0] * 4
    assert band[0, 0, 0, 0] == 0 and band[0, 0, 10, 10] == 0
    # Errors on the boundary cost more than the same errors far inside the object.
    target = mask
    logits = (target * 2 - 1) * 5
    on_edge, inside = logits.clone(), logits.clone()
    on_edge[0, 0, 5, 5:9] = -5       # boundary pixels wrong
    inside[0, 0, 10, 8:12] = -5      # interior pixels wrong
    bw = BoundaryWeightedFocalLoss(boundary_weight=5.0, band_ratio=0.1)
    plain = BoundaryWeightedFocalLoss(boundary_weight=1.0, band_ratio=0.1)
    assert bw(on_edge, target) > bw(inside, target)
    assert plain(on_edge, target).item() == pytest.approx(plain(inside, target).item(), rel=1e-5)


def test_bce_matches_torch_on_valid_pixels():
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    target[0, 0, 0, :] = -1
    ours = SigmoidBinaryCrossEntropyLoss()(logits, target)
    valid = target[1] != -1
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[1][valid], target[1][valid])
    assert ours[1].item() == pytest.approx(ref.item(), rel=1e-5)
    valid0 = target[0] != -1
    ref0 = torch.nn.functional.binary_cross_entropy_with_logits(logits[0][valid0], target[0][valid0])
    assert ours[0].item() == pytest.approx(ref0.item(), rel=1e-5)


def test_loss_declarations_weight_and_resize():
    target = _square_target()
    outputs = {"instances": torch.zeros(2, 1, 16, 16), "instances_lowres": torch.zeros(2, 1, 4, 4)}
    specs = check_loss_specs([
        LossSpec("a", 1.0, NormalizedFocalLoss(), "instances", "instances"),
        LossSpec("b", 0.5, SigmoidBinaryCrossEntropyLoss(), "instances_lowres", "instances"),
    ])
    total, terms = compute_losses(specs, outputs, {"instances": target})
    assert terms["b"].item() == pytest.approx(math.log(2), rel=1e-5)
    assert total.item() == pytest.approx(terms["a"].item() + 0.5 * terms["b"].item(), rel=1e-6)
    with pytest.raises(KeyError, match="reads model output 'refined'"):
        compute_losses([LossSpec("r", 1.0, NormalizedFocalLoss(), "refined", "instances")],
                       outputs, {"instances": target})
    with pytest.raises(ValueError, match="declared twice"):
        check_loss_specs(specs + specs)


def test_iou_metric():
    gt = _square_target()                     # 64 px objects
    pred = torch.full_like(gt, -5.0)
    pred[0, :, 4:12, 4:12] = 5                # exact
    pred[1, :, 4:12, 4:8] = 5                 # half
    gt[1, :, 0, :] = -1                       # ignore row does not count
    pred[1, :, 0, :] = 5
    metric = IoUMetric()
    ious = metric.update(pred, gt)
    assert ious.tolist() == pytest.approx([1.0, 0.5])
    assert metric.compute() == pytest.approx(0.75)
    metric.reset()
    assert metric.compute() == 0.0


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(3, 3)
        self.head = torch.nn.Linear(3, 1)


def test_optimizer_groups_schedule_and_clipping():
    net = _Net()
    opt = build_optimizer(net, "adam", {"lr": 5e-4}, backbone_lr_mult=0.1)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"backbone": 5e-5, "head": 5e-4})
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    sched = build_multistep_scheduler(opt, [2, 4], gamma=0.1)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([5e-4, 5e-4, 5e-5, 5e-5, 5e-6])
    for p in net.parameters():
        p.grad = torch.full_like(p, 10.0)
    before = clip_gradients(net, 1.0)
    after = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    assert before > 1.0 and after.item() == pytest.approx(1.0, rel=1e-4)
    assert clip_gradients(net, None) is None
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(net, "lamb")


def test_iga_coefficients_get_their_own_learning_rate():
    from isegm.model import IGLRModel
    net = IGLRModel(backbone="mit_b0", pipeline="s2", infer_size=64, refine_size=32)
    iga_names = {n for n, _ in net.named_parameters() if n.rsplit(".", 1)[-1] in
                 ("iga_pos", "iga_neg", "iga_feedback")}
    assert len(iga_names) == 3 * 8  # three coefficients in each of the 8 blocks of MiT-B0
    opt = build_optimizer(net, "adam", {"lr": 1e-3}, backbone_lr_mult=0.1, iga_lr_mult=20.0)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert {k: g["lr"] for k, g in by_name.items()} == pytest.approx(
        {"backbone": 1e-4, "head": 1e-3, "iga": 2e-2})
    ids = {id(p) for p in by_name["iga"]["params"]}
    assert ids == {id(p) for n, p in net.named_parameters() if n in iga_names}
    # every parameter is in exactly one group
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(net.parameters()))
    # without the multiplier the coefficients stay in the backbone group
    plain = build_optimizer(net, "adam", {"lr": 1e-3}, backbone_lr_mult=0.1)
    assert [g["name"] for g in plain.param_groups] == ["backbone", "head"]
    with pytest.raises(ValueError, match="iga_lr_mult"):
        build_optimizer(net, "adam", {"lr": 1e-3}, iga_lr_mult=0.0)


def test_linear_warmup_then_the_multistep_schedule():
    from isegm.engine.optim import apply_warmup
    net = _Net()
    opt = build_optimizer(net, "adam", {"lr": 1e-3}, backbone_lr_mult=0.5)
    sched = build_multistep_scheduler(opt, [1], gamma=0.1)  # decay after epoch 0
    steps_per_epoch, warmup = 3, 4  # the warm-up outlasts the first epoch
    seen = []
    for step in range(7):
        apply_warmup(opt, sched, step, warmup)
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        if (step + 1) % steps_per_epoch == 0:
            sched.step()
    head = [lrs[1] for lrs in seen]
    # 1/4, 2/4, 3/4 of 1e-3 in epoch 0; then 4/4 of the decayed 1e-4; the schedule after
    assert head == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-4, 1e-4, 1e-4, 1e-4])
    assert [lrs[0] for lrs in seen][:2] == pytest.approx([1.25e-4, 2.5e-4])  # backbone x 0.5
    sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-4)  # no milestone: unchanged
