"""Mix Transformer (MiT, the SegFormer encoder) B0-B5 with Interaction-Guided Attention.

Stages are built in a loop from one configuration table; parameter names match the official
NVlabs ImageNet checkpoints (`patch_embed1.proj.weight`, `block1.0.attn.q.weight`, `norm1.weight`,
...). IGLR additions (absent from those checkpoints, listed by `MixVisionTransformer.new_keys`):
`interaction_embed.*` and `interaction_scale` (spec §3.3) and the per-head IGA coefficients
`block{s}.{j}.attn.iga_{pos,neg,feedback}` (spec §3.4).

    backbone = BACKBONES.get("mit_b0")(in_interaction=3, iga_stages=(0, 1, 2, 3))
    feats = backbone(image_normalised, interaction)  # 4 maps, strides 4, 8, 16, 32
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from isegm.utils.registry import Registry

from .layers import IGA_TERMS, IGAMaps, OverlapPatchEmbed, TransformerBlock, init_weights, \
    tokens_to_map

BACKBONES: Registry[Callable[..., "MixVisionTransformer"]] = Registry("backbone")


@dataclass(frozen=True)
class MiTConfig:
    embed_dims: tuple = (64, 128, 320, 512)
    depths: tuple = (2, 2, 2, 2)
    num_heads: tuple = (1, 2, 5, 8)
    sr_ratios: tuple = (8, 4, 2, 1)
    mlp_ratio: float = 4.0


MIT_CONFIGS = {
    "mit_b0": MiTConfig(embed_dims=(32, 64, 160, 256)),
    "mit_b1": MiTConfig(),
    "mit_b2": MiTConfig(depths=(3, 4, 6, 3)),
    "mit_b3": MiTConfig(depths=(3, 4, 18, 3)),
    "mit_b4": MiTConfig(depths=(3, 8, 27, 3)),
    "mit_b5": MiTConfig(depths=(3, 6, 40, 3)),
}


class MixVisionTransformer(nn.Module):
    """MiT encoder. forward(image (B,3,H,W) normalised, interaction (B,K,H,W)) -> list of four
    (B, C_s, h_s, w_s) maps (channels-last views), h_1 = ceil(H/4), then halving (ceil).

    `in_interaction`: channels of the interaction maps (2 = click maps, 3 = + prev mask); 0
    disables the interaction embedding and IGA. `iga_stages`: 0-based stages whose attention gets
    the interaction-guided bias; `iga_terms`: subset of ('pos', 'neg', 'feedback').
    """

    def __init__(self, config: MiTConfig, in_chans: int = 3, in_interaction: int = 3,
                 iga_stages: Sequence[int] = (0, 1, 2, 3),
                 iga_terms: Sequence[str] = IGA_TERMS, drop_path_rate: float = 0.1,
                 interaction_scale_init: float = 0.1):
        super().__init__()
        iga_stages = tuple(int(s) for s in iga_stages)
        if any(s not in range(4) for s in iga_stages):
            raise ValueError(f"iga_stages must be within 0..3, got {iga_stages}")
        unknown = set(iga_terms) - set(IGA_TERMS)
        if unknown:
            raise ValueError(f"unknown iga_terms {sorted(unknown)}; known: {IGA_TERMS}")
        if "feedback" in iga_terms and 0 < in_interaction < 3:
            iga_terms = tuple(t for t in iga_terms if t != "feedback")  # no prev mask, no term
        if in_interaction == 0:
            iga_stages, iga_terms = (), ()
        self.config = config
        self.embed_dims = tuple(config.embed_dims)
        self.in_interaction = in_interaction
        self.iga_stages = iga_stages if iga_terms else ()
        self.iga_terms = tuple(t for t in IGA_TERMS if t in iga_terms)

        dpr = torch.linspace(0, drop_path_rate, sum(config.depths)).tolist()
        cursor = 0
        in_ch = in_chans
        for s, (dim, depth, heads, sr) in enumerate(zip(config.embed_dims, config.depths,
                                                        config.num_heads, config.sr_ratios)):
            patch, stride = (7, 4) if s == 0 else (3, 2)
            setattr(self, f"patch_embed{s + 1}", OverlapPatchEmbed(in_ch, dim, patch, stride))
            terms = self.iga_terms if s in self.iga_stages else ()
            setattr(self, f"block{s + 1}", nn.ModuleList(
                TransformerBlock(dim, heads, config.mlp_ratio, sr, dpr[cursor + j], terms)
                for j in range(depth)))
            setattr(self, f"norm{s + 1}", nn.LayerNorm(dim, eps=1e-6))
            cursor += depth
            in_ch = dim
        if in_interaction > 0:
            self.interaction_embed = OverlapPatchEmbed(in_interaction, config.embed_dims[0], 7, 4,
                                                       norm=False)
            self.interaction_scale = nn.Parameter(torch.tensor(float(interaction_scale_init)))
        self.apply(init_weights)

    def new_keys(self) -> List[str]:
        """State-dict keys that IGLR adds to MiT (not in ImageNet checkpoints)."""
        return [k for k in self.state_dict() if k.startswith("interaction_") or ".iga_" in k]

    def iga_magnitudes(self) -> Dict[str, float]:
        """Mean |coefficient| per stage and term over the stage's blocks and heads, e.g.
        {'stage1/pos': 0.8, 'stage1/neg': 0.5, 'stage1/feedback': 0.3, ...} (logged to
        tensorboard during training: the click terms only matter once these reach O(1))."""
        out: Dict[str, float] = {}
        for s in self.iga_stages:
            for term in self.iga_terms:
                coefs = [getattr(block.attn, f"iga_{term}").detach()
                         for block in getattr(self, f"block{s + 1}")]
                out[f"stage{s + 1}/{term}"] = float(torch.cat(coefs).abs().mean())
        return out

    def forward(self, x: torch.Tensor,
                interaction: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        if self.in_interaction > 0:
            if interaction is None or interaction.shape[1] != self.in_interaction:
                got = None if interaction is None else tuple(interaction.shape)
                raise ValueError(f"backbone expects interaction maps with {self.in_interaction} "
                                 f"channels, got {got}")
        outs = []
        for s in range(4):
            tokens, h, w = getattr(self, f"patch_embed{s + 1}")(x)
            sr = self.config.sr_ratios[s]
            if h < sr or w < sr:
                raise ValueError(f"backbone input too small: stage {s + 1} grid {h}x{w} is "
                                 f"smaller than its spatial reduction {sr}; MiT needs inputs "
                                 f"of at least 32x32 px (64x64 with pipeline 's1')")
            if s == 0 and self.in_interaction > 0:
                extra, _, _ = self.interaction_embed(interaction)
                tokens = tokens + self.interaction_scale * extra
            iga = None
            if s in self.iga_stages:
                iga = IGAMaps.build(interaction, h, w, sr, self.iga_terms)
            for block in getattr(self, f"block{s + 1}"):
                tokens = block(tokens, h, w, iga)
            tokens = getattr(self, f"norm{s + 1}")(tokens)
            x = tokens_to_map(tokens, h, w)
            outs.append(x)
        return outs


def _register(name: str) -> None:
    def build(**kwargs) -> MixVisionTransformer:
        return MixVisionTransformer(MIT_CONFIGS[name], **kwargs)
    build.__name__ = name
    build.__doc__ = f"MiT-{name[-2:].upper()} backbone; kwargs go to MixVisionTransformer."
    BACKBONES.register(name)(build)


for _name in MIT_CONFIGS:
    _register(_name)
