"""Training losses and the loss declaration format.

A loss term is declared in the config module as a `LossSpec`:

    LossSpec(name="instance", weight=1.0, loss=NormalizedFocalLoss(),
             output="instances", target="instances")

`output` names a key of the model's output dict ('instances', 'instances_lowres', 'refined',
'boundary'); `target` names a key of the training batch ('instances', or the refiner targets
'instances_crop', 'boundary_crop' that the trainer adds). Targets are float (B, 1, H, W) with
1 object / 0 background / -1 ignore. Every loss returns one value per sample, shape (B,); the
trainer averages over the batch and multiplies by the weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from isegm.utils.registry import Registry

LOSSES: Registry = Registry("loss")
_EPS = 1e-8


def _match_size(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize logits (B, 1, h, w) to the target's (H, W) when they differ."""
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=True)
    return pred


def boundary_band(mask: torch.Tensor, width: int) -> torch.Tensor:
    """dilate(mask) XOR erode(mask) with a square structuring element of half-size `width`.

    mask: (B, 1, H, W) in {0, 1} (float or bool). Returns float (B, 1, H, W) in {0, 1}.
    Pixels outside the image count as background for the erosion (objects touching the border
    keep a band there only where the object ends inside the image).
    """
    m = mask.float()
    if width <= 0:
        return torch.zeros_like(m)
    k = 2 * width + 1
    dilated = F.max_pool2d(m, kernel_size=k, stride=1, padding=width)
    # Erosion = 1 - dilate(1 - m); replicate padding so the image border is not an edge.
    inv = F.pad(1.0 - m, (width, width, width, width), mode="replicate")
    eroded = 1.0 - F.max_pool2d(inv, kernel_size=k, stride=1)
    return (dilated - eroded).clamp_(0, 1)


@LOSSES.register("NormalizedFocalLoss")
class NormalizedFocalLoss(nn.Module):
    """Normalised focal loss (RITM): focal loss whose modulating factors are rescaled so that they
    sum to the number of valid pixels of each sample, averaged over the valid pixels.

    pred: (B, 1, H, W) logits; target: (B, 1, H, W) 1/0/-1. Returns (B,).
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, ignore_label: float = -1,
                 detach_normalizer: bool = True, max_mult: float = -1.0):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.ignore_label = ignore_label
        self.detach_normalizer = detach_normalizer
        self.max_mult = max_mult

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = _match_size(pred, target).float()
        valid = (target != self.ignore_label).float()
        positive = (target > 0.5).float()
        prob = torch.sigmoid(pred)
        # pt: probability given to the true class (1 on ignored pixels, so they add nothing).
        pt = torch.where(valid > 0, 1.0 - (positive - prob).abs(), torch.ones_like(prob))
        alpha_t = (positive * self.alpha + (1 - positive) * (1 - self.alpha)) * valid
        beta = (1.0 - pt) ** self.gamma
        dims = tuple(range(1, pred.dim()))
        mult = valid.sum(dim=dims, keepdim=True) / (beta.sum(dim=dims, keepdim=True) + _EPS)
        if self.detach_normalizer:
            mult = mult.detach()
        if self.max_mult > 0:
            mult = mult.clamp(max=self.max_mult)
        # log(pt) computed from logits for stability: log(sigmoid(+-x)).
        log_pt = torch.where(positive > 0, F.logsigmoid(pred), F.logsigmoid(-pred))
        loss = -alpha_t * beta * mult * log_pt * valid
        return loss.sum(dim=dims) / (valid.sum(dim=dims) + _EPS)


@LOSSES.register("BoundaryWeightedFocalLoss")
class BoundaryWeightedFocalLoss(nn.Module):
    """Focal loss whose pixels inside the object's boundary band weigh `boundary_weight` times more.

    The band is dilate(gt) XOR erode(gt) of half-width `max(1, round(band_ratio * max(H, W)))`,
    so it scales with the crop. pred: (B, 1, H, W) logits; target 1/0/-1. Returns (B,).
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, boundary_weight: float = 4.0,
                 band_ratio: float = 0.02, ignore_label: float = -1):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.boundary_weight = boundary_weight
        self.band_ratio = band_ratio
        self.ignore_label = ignore_label

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = _match_size(pred, target).float()
        valid = (target != self.ignore_label).float()
        positive = (target > 0.5).float()
        width = max(1, int(round(self.band_ratio * max(target.shape[-2:]))))
        band = boundary_band(positive, width)
        weight = valid * (1.0 + (self.boundary_weight - 1.0) * band)
        prob = torch.sigmoid(pred)
        pt = positive * prob + (1 - positive) * (1 - prob)
        alpha_t = positive * self.alpha + (1 - positive) * (1 - self.alpha)
        log_pt = torch.where(positive > 0, F.logsigmoid(pred), F.logsigmoid(-pred))
        loss = -alpha_t * (1.0 - pt) ** self.gamma * log_pt * weight
        dims = tuple(range(1, pred.dim()))
        return loss.sum(dim=dims) / (weight.sum(dim=dims) + _EPS)


@LOSSES.register("SigmoidBinaryCrossEntropyLoss")
class SigmoidBinaryCrossEntropyLoss(nn.Module):
    """Binary cross-entropy on logits, averaged over valid pixels. Returns (B,)."""

    def __init__(self, ignore_label: float = -1, pos_weight: float = 1.0):
        super().__init__()
        self.ignore_label = ignore_label
        self.pos_weight = pos_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = _match_size(pred, target).float()
        valid = (target != self.ignore_label).float()
        positive = (target > 0.5).float()
        loss = -(self.pos_weight * positive * F.logsigmoid(pred)
                 + (1 - positive) * F.logsigmoid(-pred)) * valid
        dims = tuple(range(1, pred.dim()))
        return loss.sum(dim=dims) / (valid.sum(dim=dims) + _EPS)


@dataclass
class LossSpec:
    """One declared loss term: `weight * loss(outputs[output], batch[target]).mean()`."""
    name: str
    weight: float
    loss: nn.Module
    output: str
    target: str

    def __post_init__(self) -> None:
        if not callable(self.loss):
            raise TypeError(f"loss '{self.name}': `loss` must be callable, got {self.loss!r}")
        if self.weight < 0:
            raise ValueError(f"loss '{self.name}': weight must be >= 0, got {self.weight}")


def check_loss_specs(specs: Iterable[LossSpec]) -> list[LossSpec]:
    """Validate a declaration list: LossSpec items with unique names."""
    specs = list(specs)
    names: set[str] = set()
    for spec in specs:
        if not isinstance(spec, LossSpec):
            raise TypeError(f"loss declarations must be LossSpec objects, got {type(spec).__name__}")
        if spec.name in names:
            raise ValueError(f"loss name '{spec.name}' is declared twice")
        names.add(spec.name)
    if not specs:
        raise ValueError("no loss terms are declared")
    return specs


def compute_losses(specs: Sequence[LossSpec], outputs: Mapping[str, torch.Tensor],
                   batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the declared terms and each term's (unweighted, batch-mean) value."""
    total = None
    terms: dict[str, torch.Tensor] = {}
    for spec in specs:
        if spec.output not in outputs:
            raise KeyError(f"loss '{spec.name}' reads model output '{spec.output}', but the model "
                           f"returned only {sorted(outputs)}")
        if spec.target not in batch:
            raise KeyError(f"loss '{spec.name}' reads target '{spec.target}', but the batch holds "
                           f"only {sorted(batch)}")
        value = spec.loss(outputs[spec.output], batch[spec.target]).mean()
        terms[spec.name] = value
        weighted = spec.weight * value
        total = weighted if total is None else total + weighted
    assert total is not None
    return total, terms
