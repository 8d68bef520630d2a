"""Device selection: CPU always works, CUDA is used when present and asked for."""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def parse_gpus(gpus: Optional[str]) -> list[int]:
    """'0,1' -> [0, 1]; '' or None -> []."""
    if gpus is None or str(gpus).strip() == "":
        return []
    try:
        return [int(g) for g in str(gpus).split(",") if g.strip() != ""]
    except ValueError:
        raise ValueError(f"--gpus expects comma-separated integer ids like '0,1', got '{gpus}'") from None


def select_device(cpu: bool = False, gpus: Optional[Sequence[int]] = None) -> torch.device:
    """CPU if asked or if CUDA is absent; otherwise the first requested (or the first) GPU."""
    if cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    gpus = list(gpus or [0])
    count = torch.cuda.device_count()
    bad = [g for g in gpus if g < 0 or g >= count]
    if bad:
        raise ValueError(f"GPU ids {bad} requested but only {count} CUDA device(s) are present")
    return torch.device(f"cuda:{gpus[0]}")
