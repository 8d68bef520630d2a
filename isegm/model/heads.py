"""SegFormer all-MLP decoder head (spec §3.5), computed in a fused form.

The textbook head projects each stage i with a linear layer L_i (C_i -> D), upsamples to 1/4,
concatenates the four maps and applies a 1x1 "fuse" conv F = [F_1 .. F_4] (4D -> D), BN, ReLU,
then a 1x1 classifier. Channel mixing commutes with bilinear upsampling (whose weights sum to one),
so  F(concat_i up(L_i x_i)) = sum_i up((F_i L_i) x_i + F_i b_i).  The fused path composes the
small matrices F_i L_i (D x C_i) on the fly and applies each at its stage's own resolution: the
expensive 4D -> D conv over the 1/4 grid disappears, and only D-channel maps are upsampled.
In eval mode the BatchNorm (a per-channel affine map) is folded into the same weights as well.
Parameters (and so training and checkpoints) are those of the textbook head; `fused=False`
runs the textbook path, which tests compare against.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import init_weights, map_to_tokens, tokens_to_map


class SegFormerHead(nn.Module):
    """forward(feats: four (B, C_i, h_i, w_i) maps) -> (logits (B, 1, h_1, w_1),
    feature (B, D, h_1, w_1)) with D = `decoder_dim`; the feature is the fused decoder output
    after BN + ReLU, before dropout and the classifier."""

    def __init__(self, in_channels: Sequence[int], decoder_dim: int = 256,
                 num_classes: int = 1, dropout: float = 0.1, fused: bool = True):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.decoder_dim = decoder_dim
        self.fused = fused
        self.linear_c = nn.ModuleList(nn.Linear(c, decoder_dim) for c in self.in_channels)
        self.linear_fuse = nn.Conv2d(decoder_dim * len(self.in_channels), decoder_dim, 1,
                                     bias=False)
        self.bn = nn.BatchNorm2d(decoder_dim)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(decoder_dim, num_classes, 1)
        self.apply(init_weights)
        self._folded_cache: Tuple[tuple, List[torch.Tensor], torch.Tensor] = ((), [], None)

    def _composed(self) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Per-stage weights F_i L_i (D, C_i) and the total bias sum_i F_i b_i (D,)."""
        d = self.decoder_dim
        fuse = self.linear_fuse.weight.view(d, len(self.in_channels), d)
        weights, bias = [], None
        for i, lin in enumerate(self.linear_c):
            f_i = fuse[:, i]
            weights.append(f_i @ lin.weight)
            b_i = f_i @ lin.bias
            bias = b_i if bias is None else bias + b_i
        return weights, bias

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Stage features -> (logits, decoder feature), always computed in fp32: under bf16/fp16
        autocast the fused form's sum of four projected stage maps, whose terms largely cancel,
        rounds enough to flip boundary pixels (GrabCut, trained B0: mask IoU against fp32 0.975
        with a bf16 head, 0.991 with an fp32 one); the head is a few percent of a click."""
        device_type = feats[0].device.type
        if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                return self._forward([f.float() for f in feats])
        return self._forward(feats)

    def _folded(self) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """`_composed` with the eval BatchNorm folded in. Without autograd (inference) the
        result is kept until a parameter or BN statistic changes (their versions and storage
        are the key): composing the matrices costs 0.5 GFLOP a click for B3's head.

        BatchNorm's own train-mode update writes the running statistics inside its kernel
        without bumping their version counters; it always increments `num_batches_tracked`
        with an in-place add (a version bump), so that counter is part of the key."""
        bn = self.bn
        tensors = [p for p in self.parameters()] + [bn.running_mean, bn.running_var,
                                                    bn.num_batches_tracked]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        if not torch.is_grad_enabled() and self._folded_cache[0] == key:
            return self._folded_cache[1], self._folded_cache[2]
        weights, bias = self._fold_bn(*self._composed())
        if not torch.is_grad_enabled():
            self._folded_cache = (key, weights, bias)
        return weights, bias

    def _fold_bn(self, weights: List[torch.Tensor], bias: torch.Tensor
                 ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Composed weights (D, C_i) and bias (D,) with the eval BatchNorm folded in."""
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        weights = [wt * scale[:, None] for wt in weights]
        return weights, (bias - self.bn.running_mean) * scale + self.bn.bias

    def _forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        size = feats[0].shape[-2:]
        if self.fused:
            fold_bn = not self.bn.training
            if fold_bn:  # eval: BN is an affine map per channel, fold it into the weights
                # (uncached under torch.export: fake tensors have no storage to key a cache on)
                weights, bias = (self._fold_bn(*self._composed())
                                 if torch.compiler.is_exporting() else self._folded())
            else:
                weights, bias = self._composed()
            x = None
            for i in reversed(range(len(feats))):
                f = feats[i]
                h, w = f.shape[-2:]
                y = tokens_to_map(F.linear(map_to_tokens(f), weights[i],
                                           bias if i == 0 else None), h, w)
                if (h, w) != size:
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                x = y if x is None else x.add_(y)
            feature = F.relu(x, inplace=True) if fold_bn else F.relu(self.bn(x), inplace=True)
        else:
            ups = []
            for f, lin in zip(feats, self.linear_c):
                h, w = f.shape[-2:]
                y = tokens_to_map(lin(map_to_tokens(f)), h, w)
                if (h, w) != size:
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                ups.append(y)
            feature = F.relu(self.bn(self.linear_fuse(torch.cat(ups, dim=1))), inplace=True)
        return self.classifier(self.dropout(feature)), feature
