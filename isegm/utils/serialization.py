"""Self-describing modules and atomic checkpoint files.

`@serialize` on a module's `__init__` records the class and its constructor arguments, so a
checkpoint can rebuild the exact model without the config module:

    class IGLRModel(nn.Module):
        @serialize
        def __init__(self, backbone="mit_b0", use_refiner=True): ...

    get_model_config(model)  # {'class': 'isegm.model.is_model.IGLRModel', 'params': {...}}
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import pickle
import pickletools
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict

import torch

from isegm.utils.log import logger


def serialize(init: Callable) -> Callable:
    """Decorator for `__init__` that stores `{'class', 'params'}` on the instance as `_config`."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        params = {k: v for k, v in bound.arguments.items() if k != "self"}
        for name, param in signature.parameters.items():
            if param.kind == inspect.Parameter.VAR_KEYWORD and name in params:
                params.update(params.pop(name))
            elif param.kind == inspect.Parameter.VAR_POSITIONAL and name in params:
                raise TypeError(f"@serialize does not support *{name} in {init.__qualname__}")
        init(self, *args, **kwargs)
        # The outermost decorated __init__ (the most derived class) wins.
        if not getattr(self, "_config_locked", False):
            self._config = {"class": f"{type(self).__module__}.{type(self).__qualname__}",
                            "params": _to_plain(params)}
            self._config_locked = True

    return wrapper


def _to_plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TypeError(f"@serialize can only store plain constructor arguments "
                    f"(str, int, float, bool, None, lists, dicts); got {type(value).__name__}")


def get_model_config(model: torch.nn.Module) -> Dict[str, Any]:
    model = getattr(model, "module", model)  # unwrap DDP
    config = getattr(model, "_config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no stored constructor arguments; "
                        f"decorate its __init__ with @serialize")
    return {"class": config["class"], "params": dict(config["params"])}


def build_from_config(config: Dict[str, Any], allowed_prefix: str = "isegm.") -> Any:
    """Instantiate `config['class']` with `config['params']` (only classes inside `isegm`)."""
    if not isinstance(config, dict) or "class" not in config or "params" not in config:
        raise ValueError(f"a model config must be a dict with 'class' and 'params', got {config!r}")
    path = config["class"]
    if not path.startswith(allowed_prefix):
        raise ValueError(f"refusing to build class '{path}': only classes under '{allowed_prefix}'")
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model class '{path}' from the checkpoint does not exist in this code") from e
    return cls(**config["params"])


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to a temporary file in the same folder, then rename: never a half-written file."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """`write(file)` into a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, or of another architecture."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint needs full unpickling (it may run code) and the caller did not opt in."""


TRUST_HINT = ("load it only if you trust its source: pass --trust-checkpoint (Python API: "
              "trust=True), which unpickles it in full")


def _weights_only_refusal(error: BaseException, path: Path) -> str | None:
    """What a `weights_only=True` load of `path` refused (e.g. "the Python global 'getattr'"),
    or None when `error` is not such a refusal (a corrupt, truncated or foreign file)."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    texts = [str(e) for e in (error.__cause__, error.__context__) if e is not None] + [str(error)]
    for text in texts:
        match = re.search(r"Unsupported global:?\s*(GLOBAL\s+)?(\S+)", text)
        if match:
            return f"the Python global '{match.group(2)}'"
    if not any("Weights only load failed" in t for t in texts):
        return None
    # An unknown opcode: a pickle that is not a torch tensor file, or bytes that are no pickle.
    return "pickle instructions that tensor files do not use" if _is_pickle(path) else None


def _is_pickle(path: Path) -> bool:
    """Whether `path` is a torch zip file or a complete pickle stream (parsed, never run)."""
    if zipfile.is_zipfile(path):
        return True
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
    except Exception:  # any parse failure: not a pickle
        return False
    return True


def load_torch_file(path: str | os.PathLike, map_location: Any = "cpu", trust: bool = False) -> Any:
    """`torch.load(weights_only=True)`: tensors, containers and plain Python values only, so
    loading never runs code stored in the file.

    A file that needs full unpickling raises `UntrustedCheckpointError` naming the file and what
    it needs; with `trust=True` it is unpickled in full after a warning
    naming the file. Other failures raise `CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        refused = _weights_only_refusal(e, path)
        if refused is None:
            # torch's own text for a weights_only failure advises a full load: keep only the
            # underlying reason.
            inner = (e.__cause__ or e.__context__ or e) if isinstance(e, pickle.UnpicklingError) \
                else e
            reason = (str(inner).strip().splitlines() or [""])[0]
            raise CheckpointError(f"checkpoint '{path}' could not be read (corrupt or not a "
                                  f"PyTorch file): {type(inner).__name__}: {reason}") from e
        if not trust:
            raise UntrustedCheckpointError(
                f"checkpoint '{path}' was refused: it needs {refused}, which only full "
                f"unpickling can rebuild, and unpickling can run any code stored in the file; "
                f"{TRUST_HINT}") from None
    logger.warning(f"--trust-checkpoint: unpickling '{path}' in full (it needs {refused}); "
                   f"any code stored in this file runs now")
    # The explicit opt-in (trust=True) is the only full unpickling of a torch file.
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint '{path}' could not be read even with "
                              f"--trust-checkpoint: {type(e).__name__}: {e}") from e
