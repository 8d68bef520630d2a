"""MiT backbone with Interaction-Guided Attention: exactness at zero coefficients, effect of the
bias, official parameter names, the fused head."""
import copy

import pytest
import torch
import torch.nn.functional as F

from isegm.model import BACKBONES, MIT_CONFIGS, SegFormerHead
from isegm.model.layers import IGAMaps
from isegm.model.ops import click_maps


def _inputs(h=64, w=96, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, h, w, generator=gen)
    points = torch.tensor([[[20.0, 30.0, 0], [-1, -1, -1], [50.0, 80.0, 1], [-1, -1, -1]],
                           [[40.0, 10.0, 0], [10.0, 70.0, 1], [-1, -1, -1], [-1, -1, -1]]])
    maps = click_maps(points[:batch], (h, w), radius=5)
    prev = torch.rand(batch, 1, h, w, generator=gen)
    return image, torch.cat([maps, prev], 1)


@pytest.fixture(scope="module")
def b5():
    torch.manual_seed(0)
    return BACKBONES.get("mit_b5")(drop_path_rate=0.1)


def _pair(name, b5):
    """An IGA backbone and the same weights with IGA disabled. B0-B3: a second backbone built
    with iga_stages=() (no IGA parameters at all); B4/B5 (slow to build): the same module with
    its IGA stages switched off at run time, which also skips building any bias."""
    torch.manual_seed(0)
    if name in ("mit_b4", "mit_b5"):
        iga = (b5 if name == "mit_b5" else BACKBONES.get(name)()).eval()  # eval: no drop path
        plain = copy.copy(iga)  # shallow: shares every parameter
        plain.iga_stages = ()
        return iga, plain
    iga = BACKBONES.get(name)(iga_stages=(0, 1, 2, 3), drop_path_rate=0.0).eval()
    plain = BACKBONES.get(name)(iga_stages=(), drop_path_rate=0.0).eval()
    result = plain.load_state_dict(iga.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all(".iga_" in k for k in result.unexpected_keys)
    return iga, plain


def test_registry_lists_all_variants_and_fails_loudly():
    assert BACKBONES.names() == [f"mit_b{i}" for i in range(6)]
    with pytest.raises(KeyError, match="mit_b0"):
        BACKBONES.get("mit_b9")


@pytest.mark.parametrize("name", list(MIT_CONFIGS))
def test_zero_iga_equals_plain_and_nonzero_differs(name, b5):
    iga, plain = _pair(name, b5)
    h, w = (64, 96) if name in ("mit_b0", "mit_b1", "mit_b2", "mit_b3") else (32, 64)
    image, inter = _inputs(h, w)
    with torch.no_grad():
        out_iga = iga(image, inter)
        out_plain = plain(image, inter)
        for a, b in zip(out_iga, out_plain):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
        coefs = [p for name_, p in iga.named_parameters() if ".iga_" in name_]
        assert coefs and all(p.abs().max() == 0 for p in coefs)  # zero-initialised
        for p in coefs:
            p.fill_(2.0)
        changed = iga(image, inter)
        for p in coefs:
            p.zero_()
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(changed, out_plain))


def test_parameter_names_match_official_mit():
    keys = set(BACKBONES.get("mit_b0")().state_dict())
    for key in ["patch_embed1.proj.weight", "patch_embed1.norm.bias", "block1.0.attn.q.weight",
                "block1.0.attn.kv.weight", "block1.0.attn.sr.weight", "block1.0.attn.norm.weight",
                "block1.0.attn.proj.bias", "block1.0.mlp.fc1.weight",
                "block1.0.mlp.dwconv.dwconv.weight", "block1.1.mlp.fc2.bias",
                "block4.1.norm2.weight", "norm1.weight", "norm4.bias", "patch_embed4.proj.weight"]:
        assert key in keys, key
    assert "block4.0.attn.sr.weight" not in keys  # sr ratio 1 in the last stage
    b0 = BACKBONES.get("mit_b0")()
    assert b0.block1[0].attn.iga_pos.shape == (1,) and b0.block4[0].attn.iga_feedback.shape == (8,)
    assert sorted(k for k in b0.new_keys() if k.startswith("block1.0")) == [
        "block1.0.attn.iga_feedback", "block1.0.attn.iga_neg", "block1.0.attn.iga_pos"]


def test_standard_widths_depths_and_b5_builds(b5):
    assert [len(getattr(b5, f"block{s}")) for s in range(1, 5)] == [3, 6, 40, 3]
    assert b5.embed_dims == (64, 128, 320, 512)
    n_params = sum(p.numel() for k, p in b5.named_parameters() if k not in b5.new_keys())
    assert 81e6 < n_params < 82.5e6  # ImageNet MiT-B5 without its classifier: ~81.4M
    assert b5.block3[39].mlp.fc1.weight.shape == (1280, 320)
    assert b5.block3[39].drop_path.drop_prob == pytest.approx(0.1 * 48 / 51)


def test_iga_configuration():
    only_pos = BACKBONES.get("mit_b0")(iga_stages=(1, 3), iga_terms=("pos",))
    assert not hasattr(only_pos.block1[0].attn, "iga_pos")
    assert only_pos.block2[0].attn.iga_terms == ("pos",)
    no_prev = BACKBONES.get("mit_b0")(in_interaction=2)
    assert no_prev.block1[0].attn.iga_terms == ("pos", "neg")  # no prev mask, no feedback term
    with pytest.raises(ValueError, match="iga_terms"):
        BACKBONES.get("mit_b0")(iga_terms=("clicks",))
    with pytest.raises(ValueError, match="iga_stages"):
        BACKBONES.get("mit_b0")(iga_stages=(4,))


def test_iga_bias_formula_and_sdpa_mask():
    torch.manual_seed(0)
    backbone = BACKBONES.get("mit_b0")(drop_path_rate=0.0).eval()
    attn = backbone.block2[0].attn  # 2 heads, sr 4
    with torch.no_grad():
        attn.iga_pos.copy_(torch.tensor([1.5, -0.5]))
        attn.iga_neg.copy_(torch.tensor([-2.0, 0.7]))
        attn.iga_feedback.copy_(torch.tensor([0.3, 1.1]))
    _, inter = _inputs(64, 96)
    h, w = 8, 12
    maps = IGAMaps.build(inter, h, w, 4, ("pos", "neg", "feedback"))
    bias = attn.iga_bias(maps, h * w)
    assert bias.shape == (2, 2, h * w, 2 * 3)
    # independent computation of a_h P(j) + b_h N(j) + c_h m(i) m(j): P, N max-pooled over the
    # pixels of each key cell (32x32 px: stride 4 x sr 4; 2x3 cells at 64x96), M average-pooled
    # (spec §3.4)
    k_clicks = inter[:, :2].reshape(2, 2, 2, 32, 3, 32).amax(dim=(3, 5))
    p, n = k_clicks[:, 0].flatten(1), k_clicks[:, 1].flatten(1)
    q_mask = F.adaptive_avg_pool2d(inter[:, 2:], (h, w))
    mk = 2 * F.avg_pool2d(q_mask, 4).flatten(1) - 1
    mq = 2 * q_mask.flatten(1) - 1
    assert set(p.unique().tolist()) == {0.0, 1.0}  # a cell that holds any click pixel is 1
    for head in range(2):
        expected = (attn.iga_pos[head] * p[:, None, :] + attn.iga_neg[head] * n[:, None, :]
                    + attn.iga_feedback[head] * mq[:, :, None] * mk[:, None, :])
        torch.testing.assert_close(bias[:, head], expected.detach())
    # the fused SDPA output equals explicit softmax attention with the bias
    x = torch.randn(2, h * w, 64)
    with torch.no_grad():
        out = attn(x, h, w, maps)
        probs = attn.attention_weights(x, h, w, maps)
        _, _, v = attn._qkv(x, h, w)
        manual = attn.proj((probs @ v).transpose(1, 2).reshape(2, h * w, 64))
    torch.testing.assert_close(out, manual, atol=1e-5, rtol=1e-5)


def test_attention_moves_towards_positive_clicks():
    """At the default click radius (5 px, IGLRModel.norm_radius): the clicked key cell gets
    P = 1 (max pooling), and a positive coefficient pulls attention to it."""
    import inspect
    from isegm.model import IGLRModel
    radius = inspect.signature(IGLRModel.__init__).parameters["norm_radius"].default
    assert radius == 5
    torch.manual_seed(0)
    backbone = BACKBONES.get("mit_b0")(drop_path_rate=0.0).eval()
    attn = backbone.block1[0].attn  # stage 1: 16x24 query grid, sr 8 -> 2x3 key grid at 64x96
    points = torch.tensor([[[8.0, 12.0, 0], [-1, -1, -1]]])  # positive click in key cell (0, 0)
    maps = click_maps(points, (64, 96), radius=radius)
    inter = torch.cat([maps, torch.zeros(1, 1, 64, 96)], 1)
    iga = IGAMaps.build(inter, 16, 24, 8, ("pos", "neg", "feedback"))
    assert iga.pn[0, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    clicked = iga.pn[0, 0] > 0.5
    x = torch.randn(1, 16 * 24, 32)
    with torch.no_grad():
        before = attn.attention_weights(x, 16, 24, iga)[..., clicked].sum(-1).mean()
        attn.iga_pos.fill_(4.0)
        after = attn.attention_weights(x, 16, 24, iga)[..., clicked].sum(-1).mean()
        attn.iga_pos.fill_(-4.0)
        pushed = attn.attention_weights(x, 16, 24, iga)[..., clicked].sum(-1).mean()
    assert after > before + 0.1 and pushed < before


def test_no_bias_built_when_iga_off(monkeypatch):
    backbone = BACKBONES.get("mit_b0")(iga_stages=(), drop_path_rate=0.0).eval()
    calls = []
    monkeypatch.setattr(IGAMaps, "build", staticmethod(lambda *a, **k: calls.append(1)))
    seen_masks = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen_masks.append(kwargs.get("attn_mask"))
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    image, inter = _inputs(32, 32, batch=1)
    with torch.no_grad():
        backbone(image, inter)
    assert calls == [] and len(seen_masks) == 8 and all(m is None for m in seen_masks)


@pytest.mark.parametrize("dim", [256, 512])
def test_fused_head_equals_textbook_head(dim):
    torch.manual_seed(0)
    head = SegFormerHead((32, 64, 160, 256), dim).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.05)
        head.bn.running_mean.normal_()
        head.bn.running_var.uniform_(0.5, 2.0)
    feats = [torch.randn(2, c, 16 // 2 ** i + 1, 24 // 2 ** i) for i, c in
             enumerate((32, 64, 160, 256))]
    with torch.no_grad():
        logits, feature = head(feats)
        head.fused = False
        logits_ref, feature_ref = head(feats)
    assert logits.shape == (2, 1, 17, 24) and feature.shape == (2, dim, 17, 24)
    torch.testing.assert_close(feature, feature_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, logits_ref, atol=1e-4, rtol=1e-4)


def test_head_computes_in_fp32_under_bf16_autocast():
    """The fused head's cancelling sum stays in fp32 under autocast (bf16 flips boundary
    pixels): same result as the fp32 head on bf16-representable features, fp32 outputs."""
    torch.manual_seed(1)
    head = SegFormerHead((32, 64, 160, 256), 256).eval()
    feats = [torch.randn(1, c, 16 // 2 ** i, 16 // 2 ** i).bfloat16() for i, c in
             enumerate((32, 64, 160, 256))]
    with torch.no_grad():
        ref_logits, ref_feature = head([f.float() for f in feats])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, feature = head(feats)
    assert logits.dtype == feature.dtype == torch.float32
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feature, ref_feature, atol=1e-5, rtol=1e-5)


def test_folded_head_cache_follows_a_real_batchnorm_update():
    """The eval head caches its BN-folded weights; a real train-mode forward (BatchNorm updating
    its running statistics in place, as in a frozen-head or skipped-GradScaler step) must
    invalidate that cache."""
    torch.manual_seed(0)
    head = SegFormerHead((32, 64, 160, 256), 256, dropout=0.0).eval()
    feats = [torch.randn(2, c, 16 // 2 ** i, 16 // 2 ** i) for i, c in
             enumerate((32, 64, 160, 256))]
    shifted = [3.0 * f + 1.0 for f in feats]
    with torch.no_grad():
        head(feats)  # fills the cache
        mean_before = head.bn.running_mean.clone()
        head.train()
        head(shifted)  # BatchNorm's own in-place update of the running statistics
        head.eval()
        assert not torch.equal(head.bn.running_mean, mean_before)
        logits, feature = head(feats)
        head.fused = False
        logits_ref, feature_ref = head(feats)
    torch.testing.assert_close(feature, feature_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, logits_ref, atol=1e-4, rtol=1e-4)
