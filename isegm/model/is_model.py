"""The interactive IGLR model (RITM's `ISModel` role) and its self-describing checkpoints.

`IGLRModel` is composed from injected parts, a backbone (`BACKBONES` registry), a `SegFormerHead`
and a `LocalRefiner`, built from plain constructor arguments (stored by `@serialize`, so
`load_is_model` rebuilds the exact model from a checkpoint without the config module).

    model = IGLRModel(backbone="mit_b0", pipeline="s2")
    out = model(image, points, prev_mask, focus_boxes)   # training entry
    coarse = model.forward_coarse(image, points, prev_mask)
    refined = model.forward_refine(image_crop, points_crop, coarse_crop, feature_crop)
    save_is_model(model, "last_checkpoint.pth", epoch=3)
    model = load_is_model("last_checkpoint.pth", device="cpu")
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from isegm.utils.serialization import CheckpointError, atomic_save, build_from_config, \
    get_model_config, load_torch_file, serialize

from .heads import SegFormerHead
from .layers import IGA_TERMS
from .mit import BACKBONES
from .ops import click_maps, points_to_crop
from .roi_sampling import roi_align
from .refiner import LocalRefiner

ARCH = "iglr"
PIPELINES = ("s1", "s2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_decoder_dim(backbone: str) -> int:
    return 256 if backbone in ("mit_b0", "mit_b1") else 512


class IGLRModel(nn.Module):
    """Click-based segmentation: MiT + IGA backbone, SegFormer head, Local Region Refiner.

    Images are (B, 3, H, W) floats in [0, 1] (normalised inside); clicks (B, 2M, 3) rows
    (y, x, order), positives first, padding (-1, -1, -1); prev masks (B, 1, H, W) probabilities.
    `pipeline='s1'` runs backbone and head on a half-resolution input; `'s2'` at full input.
    `focus_strategy`, `focus_crop_r`, `target_crop_r` are stored defaults for predictors.
    `head_dropout`: Dropout2d probability before the head's classifier (SegFormer's 0.1).
    """

    @serialize
    def __init__(self, backbone: str = "mit_b0", pipeline: str = "s2", infer_size: int = 256,
                 refine_size: int = 256, decoder_dim: Optional[int] = None,
                 with_prev_mask: bool = True, use_refiner: bool = True,
                 iga_stages: Sequence[int] = (0, 1, 2, 3),
                 iga_terms: Sequence[str] = IGA_TERMS, norm_radius: float = 5,
                 use_disks: bool = True, drop_path_rate: float = 0.1,
                 focus_strategy: str = "diff", focus_crop_r: float = 1.4,
                 target_crop_r: float = 1.4, head_dropout: float = 0.1):
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got '{pipeline}'")
        if decoder_dim is None:
            decoder_dim = default_decoder_dim(backbone)
        if not with_prev_mask:
            iga_terms = tuple(t for t in iga_terms if t != "feedback")
        self.backbone_name = backbone
        self.pipeline = pipeline
        self.infer_size = infer_size
        self.refine_size = refine_size
        self.feature_channels = decoder_dim
        self.with_prev_mask = with_prev_mask
        self.use_refiner = use_refiner
        self.norm_radius = norm_radius
        self.use_disks = use_disks
        self.focus_strategy = focus_strategy
        self.focus_crop_r = focus_crop_r
        self.target_crop_r = target_crop_r

        self.backbone = BACKBONES.get(backbone)(
            in_interaction=3 if with_prev_mask else 2, iga_stages=tuple(iga_stages),
            iga_terms=tuple(iga_terms), drop_path_rate=drop_path_rate)
        self.head = SegFormerHead(self.backbone.embed_dims, decoder_dim, dropout=head_dropout)
        self.refiner = LocalRefiner(decoder_dim) if use_refiner else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        # Convolutions run channels-last on CPU (token maps are channels-last views already).
        self.to(memory_format=torch.channels_last)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> ImageNet-normalised."""
        return (image - self.mean) / self.std

    def interaction_maps(self, points: torch.Tensor, prev_mask: Optional[torch.Tensor],
                         size: Sequence[int]) -> torch.Tensor:
        """(B, 2 or 3, H, W): positive, negative click maps [and prev mask]."""
        maps = click_maps(points, size, self.norm_radius, self.use_disks)
        if not self.with_prev_mask:
            return maps
        if prev_mask is None:
            prev_mask = maps.new_zeros(maps.shape[0], 1, *maps.shape[-2:])
        return torch.cat((maps, prev_mask.to(maps.dtype)), dim=1)

    def forward_coarse(self, image: torch.Tensor, points: torch.Tensor,
                       prev_mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """image (B,3,H,W) in [0,1], points (B,2M,3), prev_mask (B,1,H,W) probabilities or None.

        Returns {'instances': (B,1,H,W) logits, 'instances_lowres': (B,1,h,w) logits,
        'feature': (B,D,h,w)} with h, w = ceil(H/4), ceil(W/4).
        """
        h_in, w_in = image.shape[-2:]
        if prev_mask is not None and prev_mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"prev_mask {tuple(prev_mask.shape)} does not match image "
                             f"{tuple(image.shape)}")
        x = self.normalize(image)
        inter = self.interaction_maps(points.to(x.dtype), prev_mask, (h_in, w_in)).to(x.dtype)
        if self.pipeline == "s1":
            half = (max(1, h_in // 2), max(1, w_in // 2))
            x = F.interpolate(x, size=half, mode="bilinear", align_corners=False)
            inter = F.interpolate(inter, size=half, mode="bilinear", align_corners=False)
        logits, feature = self.head(self.backbone(x, inter))
        low = (-(-h_in // 4), -(-w_in // 4))
        if logits.shape[-2:] != low:
            logits = F.interpolate(logits, size=low, mode="bilinear", align_corners=False)
            feature = F.interpolate(feature, size=low, mode="bilinear", align_corners=False)
        instances = F.interpolate(logits, size=(h_in, w_in), mode="bilinear", align_corners=False)
        return {"instances": instances, "instances_lowres": logits, "feature": feature}

    def forward_refine(self, image_crop: torch.Tensor, points_crop: torch.Tensor,
                       coarse_crop: torch.Tensor,
                       feature_crop: torch.Tensor) -> Dict[str, torch.Tensor]:
        """image_crop (B,3,S,S) in [0,1], points_crop (B,2M,3) in crop pixels, coarse_crop
        (B,1,S,S) logits, feature_crop (B,D,h,w) any size -> {'refined', 'boundary'} (B,1,S,S)
        logits (refined includes the gated blend with coarse_crop)."""
        if self.refiner is None:
            raise RuntimeError("this IGLRModel was built with use_refiner=False")
        maps = click_maps(points_crop.to(image_crop.dtype), image_crop.shape[-2:],
                          self.norm_radius, self.use_disks)
        return self.refiner(self.normalize(image_crop), maps, coarse_crop, feature_crop)

    def crop_inputs(self, image: torch.Tensor, points: torch.Tensor, coarse: Dict[str, Any],
                    focus_boxes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """ROI-sample the refiner inputs over focus_boxes (B,4) (x1,y1,x2,y2) input pixels:
        image and coarse logits at refine_size, the feature at refine_size // 4, clicks mapped
        into the crops."""
        w_in = image.shape[-1]
        s = self.refine_size
        boxes = focus_boxes.to(image.dtype)  # box i on image i: (B, 4), no batch gather
        feature = coarse["feature"]
        return {
            "image_crop": roi_align(image, boxes, s),
            "coarse_crop": roi_align(coarse["instances"], boxes, s),
            "feature_crop": roi_align(feature, boxes, max(1, s // 4),
                                      spatial_scale=feature.shape[-1] / w_in),
            "points_crop": points_to_crop(points.to(image.dtype), boxes, s),
        }

    def forward(self, image: torch.Tensor, points: torch.Tensor,
                prev_mask: Optional[torch.Tensor] = None,
                focus_boxes: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Training entry: coarse forward, then (with `use_refiner` and focus_boxes (B,4)) the
        refiner on the ROI-sampled crops; adds 'refined', 'boundary' (B,1,S,S) logits."""
        out = self.forward_coarse(image, points, prev_mask)
        if self.use_refiner and focus_boxes is not None:
            crops = self.crop_inputs(image, points, out, focus_boxes)
            out.update(self.forward_refine(crops["image_crop"], crops["points_crop"],
                                           crops["coarse_crop"], crops["feature_crop"]))
        return out


def with_autocast_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `model` for inference under `torch.autocast(dtype=dtype)` in which the
    backbone's Linear and Conv2d weights and biases are stored in `dtype` already. Autocast
    casts them to it on every call (for B3, 46 M parameters: about 20 ms a click on this
    project's CPU); cast once, the outputs are bit for bit the same. Everything else (norms, IGA
    coefficients, the head, which computes in fp32, the refiner, whose BatchNorm folding
    computes in fp32) is shared with `model`, which is not changed. A model without a
    `backbone` is returned as it is."""
    import copy
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return model
    # deepcopy with a memo that maps every tensor to what the copy holds: the cast weight for
    # the backbone's Linear / Conv2d parameters (never copied in fp32 first), itself otherwise
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    for module in backbone.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            for param in module.parameters(recurse=False):
                memo[id(param)] = nn.Parameter(param.detach().to(dtype), requires_grad=False)
    return copy.deepcopy(model, memo)


def save_is_model(model: nn.Module, path: Union[str, os.PathLike], **extras: Any) -> None:
    """Atomically write {'arch': 'iglr', 'config', 'state_dict', **extras} to `path`."""
    model = getattr(model, "module", model)
    checkpoint = {"arch": ARCH, "config": get_model_config(model),
                  "state_dict": model.state_dict()}
    clash = set(extras) & set(checkpoint)
    if clash:
        raise ValueError(f"save_is_model: extras may not override {sorted(clash)}")
    checkpoint.update(extras)
    atomic_save(checkpoint, path)


def load_is_model(checkpoint_or_path: Union[str, os.PathLike, Mapping[str, Any]],
                  device: Union[str, torch.device] = "cpu", trust: bool = False,
                  source: Optional[str] = None) -> IGLRModel:
    """Rebuild the exact model stored by `save_is_model` (from a path or a loaded dict) on
    `device`, in eval mode. Raises `CheckpointError` naming the file for foreign or corrupt
    checkpoints, `UntrustedCheckpointError` for a file that needs full unpickling unless
    `trust=True` (then it is unpickled in full after a logged warning naming the file).
    `source` names a loaded dict's file in the messages."""
    if isinstance(checkpoint_or_path, Mapping):
        checkpoint, name = checkpoint_or_path, source or "<checkpoint dict>"
    else:
        name = str(checkpoint_or_path)
        checkpoint = load_torch_file(checkpoint_or_path, map_location="cpu", trust=trust)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint '{name}' holds a {type(checkpoint).__name__}, "
                              f"not an IGLR checkpoint dict")
    arch = checkpoint.get("arch")
    if arch != ARCH or "config" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint '{name}' is not an IGLR model checkpoint "
                              f"(arch={arch!r}, keys={sorted(checkpoint)[:8]}); expected "
                              f"'arch': '{ARCH}' with 'config' and 'state_dict' "
                              f"(for ImageNet MiT weights use load_pretrained_mit)")
    try:
        model = build_from_config(checkpoint["config"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"checkpoint '{name}': cannot rebuild the model: {e}") from e
    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in checkpoint["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # torch's message spans lines: one line here
        raise CheckpointError(f"checkpoint '{name}': weights do not match the stored "
                              f"config: {' '.join(str(e).split())}") from e
    return model.to(device).eval()
