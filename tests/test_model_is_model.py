"""IGLRModel: output shapes, gradients, refiner blend, checkpoints."""
import pytest
import torch

from isegm.model import IGLRModel, load_is_model, save_is_model
from isegm.utils.serialization import CheckpointError, atomic_save


def _batch(h, w, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, h, w, generator=gen)
    points = torch.tensor([[[h * 0.3, w * 0.4, 0], [-1, -1, -1], [h * 0.8, w * 0.9, 1],
                            [-1, -1, -1]]] * batch)
    prev = torch.rand(batch, 1, h, w, generator=gen)
    boxes = torch.tensor([[w * 0.1, h * 0.2, w * 0.6, h * 0.7], [0, 0, w, h]][:batch])
    return image, points, prev, boxes


@pytest.mark.parametrize("backbone", ["mit_b0", pytest.param("mit_b3", marks=pytest.mark.slow)])
@pytest.mark.parametrize("pipeline", ["s1", "s2"])
def test_output_shapes(backbone, pipeline):
    torch.manual_seed(0)
    model = IGLRModel(backbone=backbone, pipeline=pipeline, refine_size=64).eval()
    dim = 256 if backbone == "mit_b0" else 512
    assert model.feature_channels == dim
    for h, w in [(256, 256), (72, 104), (90, 66)]:
        image, points, prev, boxes = _batch(h, w, batch=1)
        with torch.no_grad():
            out = model(image, points, prev, boxes[:1])
        low = (-(-h // 4), -(-w // 4))
        assert out["instances"].shape == (1, 1, h, w)
        assert out["instances_lowres"].shape == (1, 1) + low
        assert out["feature"].shape == (1, dim) + low
        assert out["refined"].shape == out["boundary"].shape == (1, 1, 64, 64)
        assert all(torch.isfinite(v).all() for v in out.values())


def test_too_small_input_is_a_clear_error():
    model = IGLRModel(pipeline="s1", use_refiner=False).eval()
    image, points, prev, _ = _batch(40, 64, batch=1)
    with pytest.raises(ValueError, match="too small"):
        model.forward_coarse(image, points, prev)


def test_s1_runs_backbone_at_half_resolution():
    model = IGLRModel(pipeline="s1", use_refiner=False).eval()
    seen = []
    model.backbone.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    image, points, prev, _ = _batch(64, 96, batch=1)
    with torch.no_grad():
        out = model.forward_coarse(image, points, prev)
    assert seen == [(1, 3, 32, 48)]
    assert out["instances_lowres"].shape == (1, 1, 16, 24)


def test_gradients_reach_iga_embedding_head_and_refiner():
    torch.manual_seed(0)
    model = IGLRModel(backbone="mit_b0", refine_size=64).train()
    with torch.no_grad():  # IGA coefficients start at zero; their gradient must still flow
        model.backbone.interaction_scale.fill_(0.1)
    image, points, prev, boxes = _batch(64, 96)
    out = model(image, points, prev, boxes)
    loss = out["instances"].mean() + out["refined"].mean() + out["boundary"].mean()
    loss.backward()
    iga = [(k, p) for k, p in model.named_parameters() if ".iga_" in k]
    assert len(iga) == 3 * 8  # 3 terms x 8 blocks of B0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in iga), \
        [k for k, p in iga if p.grad is None or p.grad.abs().sum() == 0]
    for prefix in ("backbone.interaction_embed.", "backbone.interaction_scale", "head.",
                   "refiner."):
        params = [(k, p) for k, p in model.named_parameters() if k.startswith(prefix)]
        assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params), \
            [k for k, p in params if p.grad is None or p.grad.abs().sum() == 0]


def test_without_prev_mask_and_without_refiner():
    model = IGLRModel(with_prev_mask=False, use_refiner=False).eval()
    assert model.refiner is None
    assert model.backbone.interaction_embed.proj.in_channels == 2
    assert all(not hasattr(b.attn, "iga_feedback") for b in model.backbone.block1)
    image, points, prev, boxes = _batch(64, 64, batch=1)
    with torch.no_grad():
        out = model(image, points, prev, boxes[:1])
    assert "refined" not in out and out["instances"].shape == (1, 1, 64, 64)
    with pytest.raises(RuntimeError, match="use_refiner=False"):
        model.forward_refine(image, points, out["instances"], out["feature"])


def test_refined_is_gated_blend_of_coarse():
    torch.manual_seed(0)
    model = IGLRModel(refine_size=32).eval()
    image, points, _, _ = _batch(32, 32, batch=1)
    coarse = torch.randn(1, 1, 32, 32)
    feature = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        model.refiner.boundary_head.bias.fill_(-30.0)  # no boundary anywhere -> coarse passes
        out = model.forward_refine(image, points, coarse, feature)
        torch.testing.assert_close(out["refined"], coarse, atol=1e-5, rtol=0)
        model.refiner.boundary_head.bias.fill_(30.0)  # boundary everywhere -> refiner's logits
        out = model.forward_refine(image, points, coarse, feature)
    assert (out["refined"] - coarse).abs().max() > 1e-3


def test_checkpoint_round_trip_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    model = IGLRModel(backbone="mit_b0", pipeline="s1", iga_stages=(1, 2),
                      iga_terms=("pos", "feedback"), refine_size=32, decoder_dim=64).eval()
    with torch.no_grad():
        for k, p in model.named_parameters():
            if ".iga_" in k:
                p.normal_()
    image, points, prev, boxes = _batch(64, 80)
    with torch.no_grad():
        ref = model(image, points, prev, boxes)
    path = tmp_path / "ckpt.pth"
    save_is_model(model, path, epoch=7)
    raw = torch.load(path, weights_only=True)  # our checkpoints need no unpickling
    assert raw["arch"] == "iglr" and raw["epoch"] == 7
    assert raw["config"]["params"]["iga_terms"] == ["pos", "feedback"]
    loaded = load_is_model(path, device="cpu")
    assert not loaded.training and loaded.pipeline == "s1" and loaded.feature_channels == 64
    with torch.no_grad():
        out = loaded(image, points, prev, boxes)
    for key in ref:
        assert torch.equal(ref[key], out[key]), key
    assert isinstance(load_is_model(raw), IGLRModel)


def test_checkpoint_errors(tmp_path):
    foreign = tmp_path / "ritm.pth"
    atomic_save({"arch": "ritm_hrnet", "state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="ritm.pth.*not an IGLR"):
        load_is_model(foreign)
    raw_mit = tmp_path / "mit_b0.pth"
    atomic_save({"patch_embed1.proj.weight": torch.zeros(1)}, raw_mit)
    with pytest.raises(CheckpointError, match="load_pretrained_mit"):
        load_is_model(raw_mit)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_is_model(corrupt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_is_model(tmp_path / "missing.pth")
    model = IGLRModel(use_refiner=False)
    good = tmp_path / "good.pth"
    save_is_model(model, good)
    ckpt = torch.load(good, weights_only=True)
    ckpt["config"]["params"]["use_refiner"] = True  # config and weights disagree
    with pytest.raises(CheckpointError, match="do not match"):
        load_is_model(ckpt)
    with pytest.raises(ValueError, match="pipeline"):
        IGLRModel(pipeline="s3")


def test_refiner_runs_channels_last_and_equals_the_nchw_network(tmp_path):
    """IGLRModel keeps the refiner's conv weights channels-last (faster oneDNN kernels on the
    CPU), also after a checkpoint round trip, and it computes what the same weights in NCHW
    compute."""
    torch.manual_seed(0)
    model = IGLRModel(refine_size=32)
    for bn in (m for m in model.refiner.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    convs = [m for m in model.refiner.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last)
                         for c in convs)
    assert not model.refiner.stem[0].weight.is_contiguous()   # (48, 6, 3, 3): not NCHW
    image, points, _, _ = _batch(32, 32, batch=2)
    coarse = torch.randn(2, 1, 32, 32)
    feature = torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        out = model.forward_refine(image, points, coarse, feature)
        nchw = IGLRModel(refine_size=32).eval()
        nchw.load_state_dict(model.state_dict())
        nchw.refiner.to(memory_format=torch.contiguous_format)
        assert nchw.refiner.stem[0].weight.is_contiguous()
        ref = nchw.forward_refine(image, points, coarse, feature)
    for key in ("refined", "boundary"):
        assert out[key].shape == (2, 1, 32, 32)
        torch.testing.assert_close(out[key], ref[key], atol=1e-5, rtol=1e-5)
    save_is_model(model, tmp_path / "m.pth")
    loaded = load_is_model(tmp_path / "m.pth")
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in loaded.refiner.modules() if isinstance(m, torch.nn.Conv2d))
    assert not loaded.refiner.stem[0].weight.is_contiguous()
