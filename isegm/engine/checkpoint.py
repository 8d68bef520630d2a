"""Training checkpoints: the model (arch, constructor config, weights) plus the training state.

    {'arch': 'iglr', 'config': {'class', 'params'}, 'state_dict': ...,      # what load_is_model reads
     'optimizer', 'lr_scheduler', 'grad_scaler', 'epoch', 'step', 'best_metric', 'rng_states',
     'run': {...resolved run settings...}}

Files are written atomically and load with `torch.load(weights_only=True)` (RNG states are stored
as tensors and plain Python values).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from isegm.utils.serialization import CheckpointError, load_torch_file

ARCH = "iglr"


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def get_rng_states(generator: Optional[np.random.Generator] = None) -> dict[str, Any]:
    """Python, numpy (global and an optional Generator) and torch (CPU and CUDA) RNG states."""
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        states["generator"] = generator.bit_generator.state
    return states


def set_rng_states(states: dict[str, Any], generator: Optional[np.random.Generator] = None) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    if generator is not None and "generator" in states:
        generator.bit_generator.state = states["generator"]


def save_checkpoint(path: Path, model: nn.Module, **extras: Any) -> Path:
    """Atomically write the model (arch, config, state_dict; `save_is_model`) and `extras`."""
    from isegm.model import save_is_model
    save_is_model(unwrap(model), path, **extras)
    return Path(path)


def read_checkpoint(path: Path, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (raises CheckpointError naming the file).

    `trust=True` (--trust-checkpoint) also accepts a file that needs full unpickling."""
    state = load_torch_file(path, trust=trust)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"checkpoint '{path}' holds no 'state_dict' (not an IGLR checkpoint)")
    if state.get("arch", ARCH) != ARCH:
        raise CheckpointError(f"checkpoint '{path}' is of architecture '{state.get('arch')}', "
                              f"expected '{ARCH}'")
    return state


def _listed(keys: list[str], limit: int = 8) -> str:
    return f"{keys[:limit]}{'...' if len(keys) > limit else ''}"


def check_weights_fit(model: nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """Raise CheckpointError naming `source` unless `state_dict` has exactly the keys of `model`
    with the same shapes (what a strict `load_state_dict` needs)."""
    own = unwrap(model).state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"weights in '{source}' do not fit this model: missing "
                              f"{_listed(missing)}, unexpected {_listed(unexpected)}")
    shapes = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})"
              for k, v in state_dict.items() if tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise CheckpointError(f"weights in '{source}' do not fit this model: {len(shapes)} "
                              f"tensor(s) differ in shape, e.g. {_listed(shapes, 3)} "
                              f"(another backbone or head configuration?)")


def load_model_weights(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """Load `state['state_dict']` strictly into `model`; mismatches raise naming the file."""
    check_weights_fit(model, state["state_dict"], source)
    unwrap(model).load_state_dict(state["state_dict"], strict=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files `.<name>.*.tmp` that an interrupted atomic write (a killed
    process) left in `folder`; returns them. Call it only where no other process writes."""
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp")):
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed
