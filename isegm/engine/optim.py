"""Optimizer groups (backbone, head, IGA coefficients), multi-step schedule with a linear warm-up,
gradient clipping."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from isegm.utils.log import logger

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def split_backbone_params(model: nn.Module, backbone_prefixes: Sequence[str] = ("backbone.",)
                          ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone parameters, other parameters) of the trainable parameters of `model`."""
    model = getattr(model, "module", model)
    backbone, rest = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (backbone if any(name.startswith(p) for p in backbone_prefixes) else rest).append(param)
    return backbone, rest


IGA_COEFFICIENTS = ("iga_pos", "iga_neg", "iga_feedback")


def build_optimizer(model: nn.Module, name: str = "adam",
                    params: Optional[Mapping[str, Any]] = None, backbone_lr_mult: float = 0.1,
                    backbone_prefixes: Sequence[str] = ("backbone.",),
                    iga_lr_mult: Optional[float] = None) -> torch.optim.Optimizer:
    """Optimizer over the groups 'backbone' at lr * backbone_lr_mult and 'head' at lr, and, when
    `iga_lr_mult` is given, 'iga' at lr * iga_lr_mult: the per-head IGA coefficients (parameters
    named iga_pos / iga_neg / iga_feedback), taken out of the backbone group. They start at zero
    and are a handful of scalars whose bias must reach O(1) to change attention, which the
    backbone's (often reduced) rate is too slow for in short schedules.

    Defaults follow spec §5: Adam, lr 5e-4, betas (0.9, 0.999), eps 1e-8.
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{name}'; known: {sorted(OPTIMIZERS)}")
    params = dict(params or {})
    if key == "adam":
        params.setdefault("betas", (0.9, 0.999))
        params.setdefault("eps", 1e-8)
    params.setdefault("lr", 5e-4)
    lr = float(params["lr"])
    backbone, rest = split_backbone_params(model, backbone_prefixes)
    iga: list[nn.Parameter] = []
    if iga_lr_mult is not None:
        if iga_lr_mult <= 0:
            raise ValueError(f"iga_lr_mult must be > 0, got {iga_lr_mult}")
        module = getattr(model, "module", model)
        ids = {id(p) for n, p in module.named_parameters()
               if p.requires_grad and n.rsplit(".", 1)[-1] in IGA_COEFFICIENTS}
        if not ids:
            logger.info(f"the model has no IGA coefficients ({', '.join(IGA_COEFFICIENTS)}): "
                        f"iga_lr_mult={iga_lr_mult} applies to nothing")
        iga = [p for p in backbone + rest if id(p) in ids]
        backbone = [p for p in backbone if id(p) not in ids]
        rest = [p for p in rest if id(p) not in ids]
    if not backbone and backbone_lr_mult != 1.0:
        logger.warning(f"no parameter name starts with {list(backbone_prefixes)}: the backbone "
                       f"learning-rate multiplier {backbone_lr_mult} applies to nothing")
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_mult, "name": "backbone"})
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "head"})
    if iga:
        groups.append({"params": iga, "lr": lr * float(iga_lr_mult), "name": "iga"})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return OPTIMIZERS[key](groups, **params)


def build_multistep_scheduler(optimizer: torch.optim.Optimizer, milestones: Iterable[int],
                              gamma: float = 0.1) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply every group's lr by `gamma` at each epoch in `milestones` (stepped per epoch)."""
    milestones = sorted(int(m) for m in milestones)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


def apply_warmup(optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.MultiStepLR, step: int,
                 warmup_steps: int) -> None:
    """Linear warm-up, called before optimisation step `step` (0-based): while
    step <= warmup_steps, every group's lr becomes its scheduled lr (initial lr x gamma per
    milestone passed, the closed form of `scheduler`) x min(1, (step + 1) / warmup_steps). From
    `warmup_steps` on the scheduled lr itself is left, so the scheduler's own steps continue from
    the exact values."""
    if warmup_steps <= 0 or step > warmup_steps:
        return
    factor = min(1.0, (step + 1) / warmup_steps)
    passed = sum(n for m, n in scheduler.milestones.items() if m <= scheduler.last_epoch)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * scheduler.gamma ** passed * factor


def clip_gradients(model: nn.Module, max_norm: Optional[float]) -> Optional[float]:
    """Clip the global gradient norm to `max_norm` (no-op if None); returns the norm before."""
    if max_norm is None or max_norm <= 0:
        return None
    params = [p for p in model.parameters() if p.grad is not None]
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
