"""Building blocks shared by every backbone stage, the head and the refiner.

One home for each block: `DropPath`, `ConvNormAct`, `SeparableConv`, `OverlapPatchEmbed`,
`EfficientAttention` (spatial-reduction attention with the optional interaction-guided bias),
`MixFFN`, `TransformerBlock` and `init_weights`. Token tensors are (B, N, C) with N = h * w in
row-major order; "map views" of tokens are (B, C, h, w) tensors in channels-last memory format,
obtained without copying (`tokens_to_map`).

Parameter names follow the official MiT (SegFormer) checkpoints: `proj`/`norm` in patch
embeddings, `q`/`kv`/`proj`/`sr`/`norm` in attention, `fc1`/`dwconv.dwconv`/`fc2` in the MLP,
`norm1`/`attn`/`norm2`/`mlp` in a block.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

IGA_TERMS = ("pos", "neg", "feedback")


def tokens_to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, C) tokens -> (B, C, h, w) channels-last view (no copy when tokens are contiguous)."""
    b, n, c = tokens.shape
    if n != h * w:
        raise ValueError(f"tokens_to_map: {n} tokens do not form a {h}x{w} grid")
    return tokens.view(b, h, w, c).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C); a view when `x` is channels-last."""
    return x.flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth: zero whole residual branches per sample with probability `drop_prob`."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (ReLU by default, `act=None` for none).

    With the BN in eval mode (running statistics, an affine map per channel) it is folded into
    the convolution's weight and bias on the fly, saving a full pass over the output;
    `fold_bn = False` (class or instance attribute) runs the textbook path, which tests compare
    against. Parameters and checkpoints are unchanged.
    """

    fold_bn = True

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, act: Optional[type] = nn.ReLU):
        layers = [nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups,
                            bias=False),
                  nn.BatchNorm2d(out_ch)]
        if act is not None:
            layers.append(act(inplace=True) if act is nn.ReLU else act())
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self[0], self[1]
        if bn.training or not self.fold_bn or not bn.track_running_stats:
            return super().forward(x)
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        y = F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), bias, conv.stride, conv.padding,
                     conv.dilation, conv.groups)
        return self[2](y) if len(self) > 2 else y


class SeparableConv(nn.Sequential):
    """Depth-wise separable conv block: 3x3 depth-wise ConvNormAct, then 1x1 ConvNormAct."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(ConvNormAct(in_ch, in_ch, 3, stride, groups=in_ch),
                         ConvNormAct(in_ch, out_ch, 1))


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: conv (kernel `patch_size`, `stride`, padding k//2) + LayerNorm.

    forward: (B, C_in, H, W) -> tokens (B, h*w, dim), h, w with h = floor((H - 1) / stride) + 1.
    With `norm=False` it is a bare conv (used for the interaction embedding).
    """

    def __init__(self, in_ch: int, dim: int, patch_size: int = 7, stride: int = 4,
                 norm: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=1e-6) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(map_to_tokens(x)), h, w


class IGAMaps:
    """Interaction maps of one stage, pooled once and shared by all blocks of that stage.

    `pn`: (B, T, Nk) positive/negative click maps on the key grid (T = number of active click
    terms, in the order of `EfficientAttention.iga_terms`), or None; `mm`: (B, 1, Nq, Nk) outer
    product m(i) m(j) of the feedback map m = 2M - 1 pooled to the query and key grids, or None.

    Pooling (spec §3.4): P and N are max-pooled (a key cell that holds any part of a click disk
    is 1; key cells are 32 px wide in every stage at 256², so an average would turn a radius-5
    disk into at most 0.07), the prev mask M is average-pooled (its share of the cell).
    """

    __slots__ = ("pn", "mm")

    def __init__(self, pn: Optional[torch.Tensor], mm: Optional[torch.Tensor]):
        self.pn = pn
        self.mm = mm

    @staticmethod
    def build(interaction: torch.Tensor, h: int, w: int, sr_ratio: int,
              terms: Sequence[str]) -> "IGAMaps":
        """`interaction` (B, 2 or 3, H, W): positive, negative click maps [and prev mask]."""
        channels = [i for i, t in enumerate(("pos", "neg")) if t in terms]
        pn = None
        if channels:
            clicks = interaction[:, channels]
            q_clicks = F.adaptive_max_pool2d(clicks, (h, w))
            k_clicks = F.max_pool2d(q_clicks, sr_ratio, sr_ratio) if sr_ratio > 1 else q_clicks
            pn = k_clicks.flatten(2)
        mm = None
        if "feedback" in terms:
            if interaction.shape[1] < 3:
                raise ValueError("IGA feedback term needs the prev mask channel (with_prev_mask)")
            q_mask = F.adaptive_avg_pool2d(interaction[:, 2:3], (h, w))
            k_mask = F.avg_pool2d(q_mask, sr_ratio, sr_ratio) if sr_ratio > 1 else q_mask
            mq = q_mask.flatten(1) * 2 - 1
            mk = k_mask.flatten(1) * 2 - 1
            mm = (mq.unsqueeze(2) * mk.unsqueeze(1)).unsqueeze(1)
        return IGAMaps(pn, mm)


class EfficientAttention(nn.Module):
    """Multi-head spatial-reduction attention (MiT) with optional Interaction-Guided Attention.

    Keys/values come from the token grid reduced by a `sr_ratio` x `sr_ratio` strided conv.
    With `iga_terms`, per-head coefficients (zero-initialised) `iga_pos`, `iga_neg`,
    `iga_feedback` (each (heads,)) add the bias a_h P(j) + b_h N(j) + c_h m(i) m(j) to the
    attention logits, passed to `scaled_dot_product_attention` as a float mask.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 iga_terms: Sequence[str] = ()):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by num_heads {num_heads}")
        unknown = set(iga_terms) - set(IGA_TERMS)
        if unknown:
            raise ValueError(f"unknown IGA terms {sorted(unknown)}; known: {IGA_TERMS}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.iga_terms = tuple(t for t in IGA_TERMS if t in iga_terms)
        for term in self.iga_terms:
            setattr(self, f"iga_{term}", nn.Parameter(torch.zeros(num_heads)))

    def iga_bias(self, maps: IGAMaps, nq: int) -> torch.Tensor:
        """(B, heads, Nq, Nk) float bias from the stage's pooled maps (a broadcast view when
        there is no feedback term)."""
        heads = self.num_heads
        bias = None
        click_terms = [t for t in self.iga_terms if t != "feedback"]
        if click_terms:
            coef = torch.stack([getattr(self, f"iga_{t}") for t in click_terms], 1)  # (heads, T)
            bias = torch.matmul(coef, maps.pn).unsqueeze(2)  # (B, heads, 1, Nk)
        if "feedback" in self.iga_terms:
            c = self.iga_feedback.view(1, heads, 1, 1)
            bias = maps.mm * c if bias is None else torch.addcmul(bias, maps.mm, c)
        b, _, _, nk = bias.shape
        return bias.expand(b, heads, nq, nk)

    def _qkv(self, x: torch.Tensor, h: int, w: int) -> Tuple[torch.Tensor, ...]:
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).view(b, n, heads, c // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(map_to_tokens(self.sr(tokens_to_map(x, h, w))))
        kv = self.kv(x).view(b, x.shape[1], 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        return q, kv[0], kv[1]

    def forward(self, x: torch.Tensor, h: int, w: int,
                iga: Optional[IGAMaps] = None) -> torch.Tensor:
        """x: (B, N, C) tokens of an h x w grid -> (B, N, C)."""
        b, n, c = x.shape
        q, k, v = self._qkv(x, h, w)
        mask = None
        if iga is not None and self.iga_terms:
            mask = self.iga_bias(iga, n).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def attention_weights(self, x: torch.Tensor, h: int, w: int,
                          iga: Optional[IGAMaps] = None) -> torch.Tensor:
        """Explicit softmax attention probabilities (B, heads, Nq, Nk), for inspection and
        tests (the forward pass uses the fused kernel instead)."""
        q, k, _ = self._qkv(x, h, w)
        logits = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
        if iga is not None and self.iga_terms:
            logits = logits + self.iga_bias(iga, x.shape[1])
        return logits.softmax(dim=-1)


class DWConv(nn.Module):
    """3x3 depth-wise conv over a token grid (official name: `dwconv.dwconv`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, h, w)))


class MixFFN(nn.Module):
    """Mix-FFN: fc1 -> 3x3 depth-wise conv -> GELU -> fc2, on (B, N, C) tokens."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + DropPath(attn(norm1 x)), then x + DropPath(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, sr_ratio: int = 1,
                 drop_path: float = 0.0, iga_terms: Sequence[str] = ()):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio, iga_terms=iga_terms)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int,
                iga: Optional[IGAMaps] = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w, iga))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


def init_weights(module: nn.Module) -> None:
    """The one initialisation used everywhere: truncated normal (std 0.02) for linear layers,
    fan-out normal for convolutions, ones/zeros for norms, zero biases. IGA coefficients are
    plain parameters created as zeros and are not touched here."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        fan_out //= module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
