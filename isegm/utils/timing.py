"""Optional per-stage wall-clock timing for the predictors (used by scripts/benchmark.py).

    timer = StageTimer(device)                 # synchronises CUDA around every stage
    predictor.timer = timer
    with timer.click():                        # one click: stage times are grouped per click
        predictor.get_prediction(clicker)
    timer.clicks[-1]                           # {'target_crop': s, 'backbone': s, ...}

Predictors hold `NULL_TIMER` by default: its `stage(name)` returns one shared no-op context
manager, so an uninstrumented click pays a method call and nothing else (no clock reads, no
device synchronisation).
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Dict, Iterator, List, Optional, Union

import torch

_NULL = nullcontext()


class NullTimer:
    """The default timer: every stage is a shared `nullcontext` (zero cost when off)."""

    enabled = False

    def stage(self, name: str) -> ContextManager[None]:
        return _NULL


NULL_TIMER = NullTimer()


class StageTimer:
    """Accumulates seconds per named stage; `click()` opens a new per-click record.

    device: stages are bracketed by `torch.cuda.synchronize` when it is a CUDA device, so
    asynchronous kernels are charged to the stage that launched them.
    """

    enabled = True

    def __init__(self, device: Union[torch.device, str, None] = None):
        device = torch.device(device) if device is not None else torch.device("cpu")
        self._sync = device.type == "cuda"
        self._device = device
        self.clicks: List[Dict[str, float]] = []
        self._current: Optional[Dict[str, float]] = None
        self._open: Dict[str, float] = {}

    def _synchronize(self) -> None:
        if self._sync:
            torch.cuda.synchronize(self._device)

    @contextmanager
    def click(self) -> Iterator[Dict[str, float]]:
        """Time one whole click; the record gets the stage times and 'total'."""
        record: Dict[str, float] = {}
        self._current = record
        self._synchronize()
        start = time.perf_counter()
        try:
            yield record
        finally:
            self._synchronize()
            record["total"] = time.perf_counter() - start
            self._current = None
            self.clicks.append(record)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the enclosed (synchronised) wall time to `name` of the open click record."""
        self._synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._synchronize()
            if self._current is not None:
                self._current[name] = self._current.get(name, 0.0) + time.perf_counter() - start

    def start(self, name: str) -> None:
        """Open stage `name` (for module hooks; pair with `stop`). Ignored outside a click."""
        if self._current is None:
            return
        self._synchronize()
        self._open[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        """Close stage `name` opened by `start` and add its time to the click record."""
        begin = self._open.pop(name, None)
        if begin is None or self._current is None:
            return
        self._synchronize()
        self._current[name] = self._current.get(name, 0.0) + time.perf_counter() - begin
