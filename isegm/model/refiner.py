"""Local Region Refiner (spec §4.3): a light convolutional network on the focus crop.

- Spatial branch over [normalised image crop, click maps, sigmoid(coarse crop)] (6 channels),
  stride-2 stem then depth-wise separable blocks, all at 1/2 of the crop.
- Semantic branch: 1x1 projection of the decoder feature crop, applied at the feature's own
  resolution and then upsampled to 1/2 of the crop (projection and bilinear resizing commute).
- Attention gate: sigmoid(1x1 conv of the spatial features) multiplies the semantic features.
- Fusion (concat + separable block), then two 1-channel heads: refined logits r and boundary
  logits b, upsampled to the crop size; output refined = sigmoid(b) r + (1 - sigmoid(b)) coarse.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormAct, SeparableConv, init_weights


class LocalRefiner(nn.Module):
    """forward(image (B,3,S,S) normalised, click_maps (B,2,S,S), coarse (B,1,S,S) logits,
    feature (B,C,h,w) any size) -> {'refined', 'boundary'} (B,1,S,S) logits."""

    def __init__(self, feature_channels: int, width: int = 48, num_blocks: int = 3):
        super().__init__()
        self.stem = ConvNormAct(6, width, 3, stride=2)
        self.spatial = nn.Sequential(*(SeparableConv(width, width) for _ in range(num_blocks)))
        self.semantic = ConvNormAct(feature_channels, width, 1)
        self.gate = nn.Conv2d(width, width, 1)
        self.fuse = SeparableConv(2 * width, width)
        self.refined_head = nn.Conv2d(width, 1, 1)
        self.boundary_head = nn.Conv2d(width, 1, 1)
        self.apply(init_weights)

    def forward(self, image: torch.Tensor, click_maps: torch.Tensor, coarse: torch.Tensor,
                feature: torch.Tensor) -> Dict[str, torch.Tensor]:
        size = image.shape[-2:]
        x = torch.cat((image, click_maps, torch.sigmoid(coarse)), dim=1)
        spatial = self.spatial(self.stem(x))
        semantic = self.semantic(feature)
        if semantic.shape[-2:] != spatial.shape[-2:]:
            semantic = F.interpolate(semantic, size=spatial.shape[-2:], mode="bilinear",
                                     align_corners=False)
        gated = semantic * torch.sigmoid(self.gate(spatial))
        fused = self.fuse(torch.cat((spatial, gated), dim=1))
        heads = torch.cat((self.refined_head(fused), self.boundary_head(fused)), dim=1)
        heads = F.interpolate(heads, size=size, mode="bilinear", align_corners=False)
        refined, boundary = heads[:, :1], heads[:, 1:]
        gate = torch.sigmoid(boundary)
        return {"refined": gate * refined + (1 - gate) * coarse, "boundary": boundary}
