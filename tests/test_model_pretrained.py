"""Pretrained MiT loading from synthetic state dicts in the three naming schemes."""
import re

import pytest
import torch
from safetensors.torch import save_file

from isegm.model import BACKBONES, PretrainedLoadError, load_pretrained_mit


@pytest.fixture(scope="module")
def source():
    """An 'ImageNet' MiT-B0 in official naming (random weights), with its classifier."""
    torch.manual_seed(1)
    backbone = BACKBONES.get("mit_b0")()
    state = {k: v.clone() for k, v in backbone.state_dict().items()
             if k not in backbone.new_keys()}
    state["head.weight"] = torch.randn(1000, 256)
    state["head.bias"] = torch.randn(1000)
    return state


def _to_hf(state):
    """Official -> Hugging Face `nvidia/mit-b0` names, written independently of the loader."""
    out = {}
    for key, value in state.items():
        if key.startswith("head."):
            out["classifier." + key[5:]] = value
            continue
        m = re.match(r"patch_embed(\d)\.(proj|norm)\.(\w+)$", key)
        if m:
            s, part, p = m.groups()
            out[f"segformer.encoder.patch_embeddings.{int(s) - 1}."
                f"{'proj' if part == 'proj' else 'layer_norm'}.{p}"] = value
            continue
        m = re.match(r"norm(\d)\.(\w+)$", key)
        if m:
            out[f"segformer.encoder.layer_norm.{int(m[1]) - 1}.{m[2]}"] = value
            continue
        m = re.match(r"block(\d)\.(\d+)\.(.+)\.(\w+)$", key)
        s, j, mid, p = m.groups()
        base = f"segformer.encoder.block.{int(s) - 1}.{j}."
        if mid == "attn.kv":
            k, v = value.chunk(2, dim=0)
            out[base + f"attention.self.key.{p}"] = k.clone()
            out[base + f"attention.self.value.{p}"] = v.clone()
            continue
        names = {"norm1": "layer_norm_1", "norm2": "layer_norm_2", "attn.q": "attention.self.query",
                 "attn.sr": "attention.self.sr", "attn.norm": "attention.self.layer_norm",
                 "attn.proj": "attention.output.dense", "mlp.fc1": "mlp.dense1",
                 "mlp.dwconv.dwconv": "mlp.dwconv.dwconv", "mlp.fc2": "mlp.dense2"}
        out[base + f"{names[mid]}.{p}"] = value
    return out


def _check_loaded(backbone, source, report):
    own = backbone.state_dict()
    for key, value in source.items():
        if not key.startswith("head."):
            assert torch.equal(own[key], value), key
    assert report.missing == []
    assert set(report.new) == set(backbone.new_keys())
    assert len(report.loaded) == len([k for k in source if not k.startswith("head.")])


def test_official_naming(tmp_path, source):
    path = tmp_path / "mit_b0.pth"
    torch.save(source, path)
    backbone = BACKBONES.get("mit_b0")()
    report = load_pretrained_mit(backbone, path)
    _check_loaded(backbone, source, report)
    assert sorted(report.unexpected) == ["head.bias", "head.weight"]


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_hugging_face_naming(tmp_path, source, fmt):
    hf = _to_hf(source)
    assert "segformer.encoder.block.0.0.attention.self.key.weight" in hf
    path = tmp_path / f"model.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in hf.items()}, str(path))
    else:
        torch.save(hf, path)
    backbone = BACKBONES.get("mit_b0")()
    report = load_pretrained_mit(backbone, path)
    _check_loaded(backbone, source, report)
    assert sorted(report.unexpected) == ["classifier.bias", "classifier.weight"]


def test_mmcv_wrapper_naming(tmp_path, source):
    wrapped = {"meta": {"epoch": 300}, "state_dict": {"backbone." + k: v for k, v in source.items()
                                                      if not k.startswith("head.")}}
    wrapped["state_dict"]["decode_head.conv_seg.weight"] = torch.zeros(2, 256, 1, 1)
    path = tmp_path / "segformer_mmseg.pth"
    torch.save(wrapped, path)
    backbone = BACKBONES.get("mit_b0")()
    report = load_pretrained_mit(backbone, path)
    _check_loaded(backbone, source, report)
    assert report.unexpected == ["decode_head.conv_seg.weight"]
    model_wrapped = {"model": dict(wrapped["state_dict"])}
    backbone = BACKBONES.get("mit_b0")()
    _check_loaded(backbone, source, load_pretrained_mit(backbone, model_wrapped))


def test_truncated_and_foreign_files_fail_loudly(tmp_path, source):
    truncated = dict(source)
    del truncated["block3.1.mlp.fc2.weight"]
    backbone = BACKBONES.get("mit_b0")()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(PretrainedLoadError, match="block3.1.mlp.fc2.weight"):
        load_pretrained_mit(backbone, truncated)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # untouched
    hf = _to_hf(source)
    del hf["segformer.encoder.block.1.0.attention.self.value.weight"]
    with pytest.raises(PretrainedLoadError, match="key and value"):
        load_pretrained_mit(BACKBONES.get("mit_b0")(), hf)
    with pytest.raises(PretrainedLoadError, match="no key matches"):
        load_pretrained_mit(backbone, {"conv1.weight": torch.zeros(3), "fc.bias": torch.zeros(3)})
    with pytest.raises(PretrainedLoadError, match="shape"):
        load_pretrained_mit(BACKBONES.get("mit_b1")(), source)  # B0 weights into B1
    with pytest.raises(PretrainedLoadError, match="do not exist"):
        load_pretrained_mit(backbone, tmp_path / "nope.pth")


def test_six_channel_first_embedding_is_split(source):
    state = dict(source)
    rgb = state["patch_embed1.proj.weight"]
    extra = torch.randn(rgb.shape[0], 3, 7, 7)
    state["patch_embed1.proj.weight"] = torch.cat([rgb, extra], 1)
    backbone = BACKBONES.get("mit_b0")()
    report = load_pretrained_mit(backbone, state)
    assert torch.equal(backbone.patch_embed1.proj.weight, rgb)
    assert torch.equal(backbone.interaction_embed.proj.weight, extra)
    assert report.adapted and "interaction_embed.proj.weight" not in report.new


def _hf4_to_hf5(hf4, prefix, attention):
    """4.x Hugging Face names -> the per-stage layout of transformers 5.x, written independently
    of the loader. `attention`: 'self' keeps `attention.self.query` etc. and `mlp.dense1`; 'proj'
    uses `attention.q_proj` / `k_proj` / `v_proj` / `o_proj`, `mlp.fc1` / `fc2` and a flat
    `mlp.dwconv`."""
    out = {}
    block_parts = {"layer_norm_1": "layernorm_before", "layer_norm_2": "layernorm_after"}
    if attention == "proj":
        block_parts.update({"attention.self.query": "attention.q_proj",
                            "attention.self.key": "attention.k_proj",
                            "attention.self.value": "attention.v_proj",
                            "attention.self.sr": "attention.sr",
                            "attention.self.layer_norm": "attention.layer_norm",
                            "attention.output.dense": "attention.o_proj",
                            "mlp.dense1": "mlp.fc1", "mlp.dense2": "mlp.fc2",
                            "mlp.dwconv.dwconv": "mlp.dwconv"})
    for key, value in hf4.items():
        m = re.match(r"segformer\.encoder\.patch_embeddings\.(\d)\.(.+)$", key)
        if m:
            out[f"{prefix}stages.{m[1]}.patch_embeddings.{m[2]}"] = value
            continue
        m = re.match(r"segformer\.encoder\.layer_norm\.(\d)\.(\w+)$", key)
        if m:
            out[f"{prefix}stages.{m[1]}.layer_norm.{m[2]}"] = value
            continue
        m = re.match(r"segformer\.encoder\.block\.(\d)\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m:
            s, j, part, p = m.groups()
            out[f"{prefix}stages.{s}.blocks.{j}.{block_parts.get(part, part)}.{p}"] = value
            continue
        out[key] = value  # the classifier
    return out


@pytest.mark.parametrize("prefix, attention", [("segformer.", "self"),
                                               ("segformer.encoder.", "proj")])
def test_transformers_5_layout_loads_like_4(tmp_path, source, prefix, attention):
    hf4 = _to_hf(source)
    hf5 = _hf4_to_hf5(hf4, prefix, attention)
    assert f"{prefix}stages.1.blocks.0.layernorm_before.weight" in hf5
    assert not any(".block." in k or "layer_norm_1" in k for k in hf5)
    loaded = {}
    for name, state in (("v4", hf4), ("v5", hf5)):
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        torch.manual_seed(0 if name == "v4" else 1)  # different init: loading must overwrite it
        backbone = BACKBONES.get("mit_b0")()
        report = load_pretrained_mit(backbone, path)
        _check_loaded(backbone, source, report)
        assert sorted(report.unexpected) == ["classifier.bias", "classifier.weight"]
        loaded[name] = {k: v for k, v in backbone.state_dict().items()
                        if k not in backbone.new_keys()}
    assert loaded["v4"].keys() == loaded["v5"].keys()
    for key, value in loaded["v4"].items():
        assert torch.equal(value, loaded["v5"][key]), key
