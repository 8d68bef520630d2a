"""Loading ImageNet-pretrained MiT weights into the IGLR backbone (spec §3.2).

Accepted files (always read on CPU):
- official NVlabs `mit_b*.pth`: keys as in `MixVisionTransformer` (`patch_embed1.proj.weight`,
  `block1.0.attn.kv.weight`, ...); the classifier `head.*` is ignored;
- Hugging Face `nvidia/mit-b*` (`pytorch_model.bin` or `model.safetensors`):
  `segformer.encoder.{patch_embeddings,block,layer_norm}.*` (transformers 4.x, the hub files),
  with attention key and value weights concatenated into `kv`; also the per-stage layout of
  transformers 5.x (`segformer[.encoder].stages.N.{patch_embeddings,blocks.M,layer_norm}`,
  `layernorm_before/after`, `q_proj/k_proj/v_proj/o_proj` or the 4.x attention names);
- mmcv/mmseg-style wrappers: the state dict under 'state_dict' or 'model', keys prefixed with
  'backbone.' (or 'module.').

`convert_mit_state_dict` does the key mapping (a pure function on dicts, tested on synthetic
state dicts); `load_pretrained_mit` loads, checks shapes, adapts a 3+K-channel first patch
embedding into the RGB and interaction embeddings, logs missing/unexpected keys and raises
`PretrainedLoadError` when any backbone weight stays uninitialised or nothing matches.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from isegm.utils.log import logger
from isegm.utils.serialization import load_torch_file

_WRAPPER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("module.", "backbone.", "encoder.")

_HF_RULES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r"^patch_embeddings\.(\d+)\.proj\.(.+)$"), "patch_embed{s}.proj.{1}"),
    (re.compile(r"^patch_embeddings\.(\d+)\.layer_norm\.(.+)$"), "patch_embed{s}.norm.{1}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.layer_norm_1\.(.+)$"), "block{s}.{1}.norm1.{2}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.layer_norm_2\.(.+)$"), "block{s}.{1}.norm2.{2}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.attention\.self\.query\.(.+)$"), "block{s}.{1}.attn.q.{2}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.attention\.self\.sr\.(.+)$"), "block{s}.{1}.attn.sr.{2}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.attention\.self\.layer_norm\.(.+)$"),
     "block{s}.{1}.attn.norm.{2}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.attention\.output\.dense\.(.+)$"),
     "block{s}.{1}.attn.proj.{2}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.mlp\.dense1\.(.+)$"), "block{s}.{1}.mlp.fc1.{2}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.mlp\.dwconv\.dwconv\.(.+)$"),
     "block{s}.{1}.mlp.dwconv.dwconv.{2}"),
    (re.compile(r"^block\.(\d+)\.(\d+)\.mlp\.dense2\.(.+)$"), "block{s}.{1}.mlp.fc2.{2}"),
    (re.compile(r"^layer_norm\.(\d+)\.(.+)$"), "norm{s}.{1}"),
]
_HF_KEY_VALUE = re.compile(r"^block\.(\d+)\.(\d+)\.attention\.self\.(key|value)\.(.+)$")

# Hugging Face transformers 5.x groups the encoder by stage (`stages.N.patch_embeddings`,
# `stages.N.blocks.M`, `stages.N.layer_norm`) and renames block parts ViT-style
# (`layernorm_before` / `layernorm_after`, and `q_proj` / `k_proj` / `v_proj` / `o_proj`
# beside the 4.x attention names). These rules bring such a key to its 4.x name first.
_HF5_STAGE = re.compile(r"^stages\.(\d+)\.(patch_embeddings|blocks|layer_norm|layernorm|norm)"
                        r"\.(.+)$")
_HF5_BLOCK_PARTS: List[Tuple[re.Pattern, str]] = [
    (re.compile(r"^(\d+)\.layernorm_before\.(.+)$"), "{0}.layer_norm_1.{1}"),
    (re.compile(r"^(\d+)\.layernorm_after\.(.+)$"), "{0}.layer_norm_2.{1}"),
    (re.compile(r"^(\d+)\.attention\.(?:self\.)?(?:query|q_proj)\.(.+)$"),
     "{0}.attention.self.query.{1}"),
    (re.compile(r"^(\d+)\.attention\.(?:self\.)?(?:key|k_proj)\.(.+)$"),
     "{0}.attention.self.key.{1}"),
    (re.compile(r"^(\d+)\.attention\.(?:self\.)?(?:value|v_proj)\.(.+)$"),
     "{0}.attention.self.value.{1}"),
    (re.compile(r"^(\d+)\.attention\.(?:self\.)?sr\.(.+)$"), "{0}.attention.self.sr.{1}"),
    (re.compile(r"^(\d+)\.attention\.(?:self\.)?layer_norm\.(.+)$"),
     "{0}.attention.self.layer_norm.{1}"),
    (re.compile(r"^(\d+)\.attention\.(?:output\.dense|o_proj|out_proj)\.(.+)$"),
     "{0}.attention.output.dense.{1}"),
    (re.compile(r"^(\d+)\.mlp\.(?:dense1|fc1)\.(.+)$"), "{0}.mlp.dense1.{1}"),
    (re.compile(r"^(\d+)\.mlp\.dwconv\.(?:dwconv\.)?(weight|bias)$"), "{0}.mlp.dwconv.dwconv.{1}"),
    (re.compile(r"^(\d+)\.mlp\.(?:dense2|fc2)\.(.+)$"), "{0}.mlp.dense2.{1}"),
]


def _hf5_to_hf4(key: str) -> str:
    """A transformers 5.x Segformer encoder key (prefixes stripped) in 4.x naming; other keys
    unchanged."""
    match = _HF5_STAGE.match(key)
    if not match:
        return key
    stage, part, rest = match.groups()
    if part == "patch_embeddings":
        return f"patch_embeddings.{stage}.{rest}"
    if part != "blocks":
        return f"layer_norm.{stage}.{rest}"
    for pattern, template in _HF5_BLOCK_PARTS:
        inner = pattern.match(rest)
        if inner:
            return f"block.{stage}." + template.format(*inner.groups())
    return f"block.{stage}.{rest}"


# The ImageNet weights `configs.yml` points to as shipped. Only these may be absent (training
# then starts from scratch with a warning); a path a user gave explicitly must exist.
PRETRAINED_CONFIG_KEY = "IMAGENET_PRETRAINED_MODELS"
DEFAULT_PRETRAINED_FILES = {f"SEGFORMER_B{i}": f"./weights/pretrained/mit_b{i}.pth"
                            for i in range(6)}


class PretrainedLoadError(RuntimeError):
    """Pretrained weights could not be loaded completely into the backbone."""


def resolve_pretrained_path(paths: Any, key: str) -> Optional[Path]:
    """The ImageNet MiT file configured as `IMAGENET_PRETRAINED_MODELS.<key>` (e.g. SEGFORMER_B0)
    in `paths` (an `isegm.utils.config.Config`), or None with a logged warning when the built-in
    default (`DEFAULT_PRETRAINED_FILES`, or the key left out) is absent.

    A path given explicitly (an environment variable, or a value other than the default in the
    configuration file) that does not exist raises `ConfigPathError` naming where it came from.
    """
    from isegm.utils.config import ConfigError, ConfigPathError
    dotted = f"{PRETRAINED_CONFIG_KEY}.{key}"
    try:
        path = paths.resolve(dotted)
    except ConfigError as e:
        logger.warning(f"{dotted} is not configured ({e}): training the backbone FROM SCRATCH")
        return None
    if path.is_file():
        return path
    origin = paths.origin(dotted)
    explicit = paths.from_environment(dotted) or \
        str(paths[PRETRAINED_CONFIG_KEY][key]) != DEFAULT_PRETRAINED_FILES.get(key)
    if explicit:
        raise ConfigPathError(f"ImageNet weights {dotted} = '{path}' (set by {origin}) do not "
                              f"exist; expected an MiT checkpoint there (official mit_b*.pth, "
                              f"Hugging Face .safetensors/.bin)")
    logger.warning(f"ImageNet weights not found at the default '{path}' ({origin}): training "
                   f"the backbone FROM SCRATCH, which needs far longer schedules")
    return None


@dataclass
class LoadReport:
    """What `load_pretrained_mit` did: keys loaded, backbone keys not in the file (`missing`,
    excluding IGLR's own new parameters, listed in `new`), file keys not used (`unexpected`)."""
    source: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)
    adapted: List[str] = field(default_factory=list)


def unwrap_state_dict(obj: Any) -> Dict[str, torch.Tensor]:
    """Find the tensor dict inside a checkpoint ('state_dict' / 'model' wrappers, nested)."""
    for _ in range(3):
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None and not any(torch.is_tensor(v) for v in obj.values()):
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping):
        raise PretrainedLoadError(f"expected a state dict, got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def convert_mit_state_dict(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor],
                                                                       List[str]]:
    """Map official / Hugging Face / mmcv-style MiT keys to this backbone's names.

    Returns (converted state dict, keys of `state` that were not used).
    """
    out: Dict[str, torch.Tensor] = {}
    unused: List[str] = []
    pending_kv: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        k = key
        if k.startswith("segformer."):
            k = k[len("segformer."):]
        k = _hf5_to_hf4(_strip_prefixes(k))
        hf = _HF_KEY_VALUE.match(k)
        if hf:
            s, j, which, suffix = hf.groups()
            target = f"block{int(s) + 1}.{j}.attn.kv.{suffix}"
            pending_kv.setdefault((target, key), {})[which] = value
            continue
        for pattern, template in _HF_RULES:
            match = pattern.match(k)
            if match:
                groups = match.groups()
                k = template.format(*groups, s=int(groups[0]) + 1)
                break
        if k.startswith(("head.", "classifier.", "decode_head.", "auxiliary_head.")):
            unused.append(key)
            continue
        out[k] = value
    # key and value live in different entries: pair them by target name.
    by_target: Dict[str, Dict[str, torch.Tensor]] = {}
    for (target, _), parts in pending_kv.items():
        by_target.setdefault(target, {}).update(parts)
    for target, parts in by_target.items():
        if set(parts) != {"key", "value"}:
            raise PretrainedLoadError(f"Hugging Face attention weights for '{target}' have "
                                      f"{sorted(parts)} but need both key and value")
        out[target] = torch.cat((parts["key"], parts["value"]), dim=0)
    return out, unused


def read_weights(path: Union[str, os.PathLike], trust: bool = False) -> Dict[str, torch.Tensor]:
    """Read a .pth/.pt/.bin (torch, `weights_only` unless `trust`) or .safetensors file on CPU
    and unwrap it."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedLoadError(f"pretrained weights '{path}' do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise PretrainedLoadError(f"pretrained weights '{path}' could not be read: {e}") from e
    try:
        return unwrap_state_dict(load_torch_file(path, map_location="cpu", trust=trust))
    except PretrainedLoadError as e:
        raise PretrainedLoadError(f"pretrained weights '{path}': {e}") from e


def load_pretrained_mit(backbone: nn.Module,
                        path_or_state: Union[str, os.PathLike, Mapping[str, Any]],
                        trust: bool = False) -> LoadReport:
    """Load ImageNet MiT weights into `backbone` (a `MixVisionTransformer`) in place.

    A torch file loads with `weights_only=True`; one that needs full unpickling raises
    `UntrustedCheckpointError` unless `trust=True` (--trust-checkpoint).

    Raises `PretrainedLoadError` when nothing matches, when a shape differs, or when any
    backbone weight other than IGLR's new parameters is left uninitialised.
    """
    if isinstance(path_or_state, Mapping):
        source, state = "<state dict>", unwrap_state_dict(path_or_state)
    else:
        source, state = str(path_or_state), read_weights(path_or_state, trust=trust)
    converted, unused = convert_mit_state_dict(state)
    report = LoadReport(source=source)
    own = backbone.state_dict()
    new_keys = set(backbone.new_keys()) if hasattr(backbone, "new_keys") else set()

    rgb_key, inter_key = "patch_embed1.proj.weight", "interaction_embed.proj.weight"
    first = converted.get(rgb_key)
    if first is not None and rgb_key in own and first.shape[1] > own[rgb_key].shape[1]:
        # A checkpoint whose first embedding also saw interaction channels: split it.
        n_rgb = own[rgb_key].shape[1]
        extra = first[:, n_rgb:]
        if inter_key in own and extra.shape == own[inter_key].shape:
            converted[rgb_key] = first[:, :n_rgb]
            converted.setdefault(inter_key, extra)
            report.adapted.append(f"{rgb_key}: split {first.shape[1]} input channels into RGB "
                                  f"and {inter_key}")

    to_load: Dict[str, torch.Tensor] = {}
    for key, value in converted.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        if value.shape != own[key].shape:
            raise PretrainedLoadError(f"pretrained weights '{source}': '{key}' has shape "
                                      f"{tuple(value.shape)}, the backbone expects "
                                      f"{tuple(own[key].shape)} (another MiT variant?)")
        to_load[key] = value.to(own[key].dtype)
    report.unexpected += unused
    if not to_load:
        raise PretrainedLoadError(f"pretrained weights '{source}': no key matches the backbone "
                                  f"(first keys in the file: {list(state)[:5]})")
    report.loaded = sorted(to_load)
    report.new = sorted(k for k in new_keys if k not in to_load)
    report.missing = sorted(k for k in own if k not in to_load and k not in new_keys
                            and not k.endswith("num_batches_tracked"))
    if report.missing:
        raise PretrainedLoadError(
            f"pretrained weights '{source}' leave {len(report.missing)} backbone weights "
            f"uninitialised, e.g. {report.missing[:5]} (truncated file or another variant?)")
    backbone.load_state_dict(to_load, strict=False)
    logger.info(f"loaded {len(report.loaded)} pretrained MiT tensors from {source}; "
                f"new (kept at init): {len(report.new)}; unexpected: {len(report.unexpected)}"
                + (f" e.g. {report.unexpected[:3]}" if report.unexpected else "")
                + (f"; adapted: {report.adapted}" if report.adapted else ""))
    return report
