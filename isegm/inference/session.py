"""Interactive segmentation for people: one session per image on the evaluator's predictors.

    segmenter = Segmenter.from_checkpoint("cv_grabcut")        # or a checkpoint path
    session = segmenter.new_session()
    session.set_image(image)                                  # HxWx3 uint8 RGB
    mask, probs = session.add_click(x=120, y=45, positive=True)
    mask, probs = session.undo()
    session.finish_object()                                   # next object, same image
    labels = session.label_map()                              # HxW, 0 background, k = object k

Coordinates: `add_click(x, y, ...)` takes x = column and y = row, in pixels of the image given
to `set_image`, with (0, 0) the top-left pixel (the browser's order). Internally clicks are the
evaluator's `Click(coords=(y, x))`.

A `Segmenter` holds one loaded model (or none, for the classical predictor) and the predictor
options; every `Session` owns its own predictor over that shared model (predictors keep
per-image state between clicks), and model calls of all sessions are serialised by one lock.
One session is safe to call from several threads (its own lock).

Undo is exact: every click's probabilities are kept, so `undo()` returns the earlier arrays bit
for bit; the predictor's per-image state (previous mask, crops) is then rebuilt by replaying the
remaining clicks from `set_image` before the next click is predicted, exactly as the evaluator
drives a predictor (one `get_prediction` per click).
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..utils.log import logger
from .clicker import Click, Clicker
from .evaluation import PRED_THRESHOLD
from .predictors import BasePredictor, PREDICTORS, get_predictor, predictor_name_for_mode

MODEL_FREE = "cv_grabcut"
CLASSICAL_LABEL = "classical OpenCV GrabCut (no weights)"


class SessionError(RuntimeError):
    """A session call that its state does not allow (no image yet, closed, nothing to undo)."""


class SessionClosedError(SessionError):
    """The session was closed (or evicted by a server); start a new one."""


class ClickOutsideImageError(SessionError, ValueError):
    """A click whose (x, y) is not a pixel of the image."""


@dataclass
class SegmentedObject:
    """A finished object: its clicks (evaluator `Click`s, coords (y, x)), its final mask (HxW
    bool) and the probabilities after each click (K arrays HxW float32), for undo."""

    clicks: List[Click]
    mask: np.ndarray
    history: List[np.ndarray] = field(repr=False)

    def clicks_xy(self) -> List[Dict[str, Any]]:
        return clicks_xy(self.clicks)


def clicks_xy(clicks: List[Click]) -> List[Dict[str, Any]]:
    """[{'x': column, 'y': row, 'positive': bool}, ...] of evaluator clicks, in order."""
    return [{"x": int(c.coords[1]), "y": int(c.coords[0]), "positive": bool(c.is_positive)}
            for c in clicks]


class Segmenter:
    """One predictor configuration over one loaded model, shared by many sessions.

    name: a predictor of the registry ('iglr', 'coarse', 'cv_grabcut', ...); model: the network
    for the predictors that need one; options: the predictor's constructor options (those it
    does not take are dropped by `get_predictor`). `label` names the model for people.
    """

    def __init__(self, name: str, model: Optional[torch.nn.Module] = None,
                 device: Union[str, torch.device] = "cpu", label: Optional[str] = None,
                 **options: Any):
        PREDICTORS.get(name)  # unknown names raise listing the known ones
        self.name = name
        self.model = model
        self.device = torch.device(device)
        self.options = options
        self.label = label or (CLASSICAL_LABEL if name == MODEL_FREE else name)
        self.lock = threading.Lock()  # one model call at a time, across sessions

    @classmethod
    def from_checkpoint(cls, checkpoint: Union[str, os.PathLike],
                        device: Union[str, torch.device] = "cpu", trust: bool = False,
                        backend: str = "torch", onnx_dir: Optional[str] = None,
                        onnx_stages: Sequence[str] = ("coarse", "refiner"),
                        export_refiner: bool = True, **options: Any) -> "Segmenter":
        """'cv_grabcut' (no weights) or an IGLR checkpoint file: the evaluator's NoBRS
        predictor for it ('iglr' with a refiner, else 'coarse'). A foreign or unreadable file
        raises `isegm.utils.serialization.CheckpointError` naming it; a file that needs full
        unpickling raises `UntrustedCheckpointError` unless `trust=True` (see `load_is_model`).
        `backend='onnx'`: onnxruntime runs `onnx_stages` of the network from the checkpoint's
        export in `onnx_dir` (`onnx_backend.build_network`; ValueError if it is not of it);
        'auto': the faster backend per stage (`onnx_backend.auto_network`, which exports the
        refiner in the process unless `export_refiner` is False)."""
        if str(checkpoint) == MODEL_FREE:
            if backend == "onnx":
                raise ValueError(f"backend '{backend}' needs a checkpoint; '{MODEL_FREE}' has "
                                 f"no network")
            return cls(MODEL_FREE, None, "cpu", **options)
        from ..model import load_is_model  # model-free use needs no model code
        from .onnx_backend import build_network, network_label

        path = Path(checkpoint)
        model = load_is_model(path, device, trust=trust)
        name = predictor_name_for_mode("NoBRS", model)
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        label = f"{name}: {run.name}/{path.name}"
        if backend != "torch":
            network = build_network(model, backend, onnx_dir, onnx_stages, checkpoint=path,
                                    export_refiner=export_refiner)
            if network is not model:
                options["network"] = network
                label += f" ({network_label(network, model)})"
        return cls(name, model, device, label=label, **options)

    def new_predictor(self) -> BasePredictor:
        """A predictor over the shared model (built under the model lock: construction may
        touch the model, e.g. `.eval()`, while another session runs it)."""
        with self.lock:
            return get_predictor(self.name, self.model, self.device, **self.options)

    def new_session(self) -> "Session":
        return Session(self)

    def warm_up(self, height: int = 480, width: int = 854) -> float:
        """Run two clicks on a synthetic image (first forward, compiled kernels); returns the
        seconds it took."""
        yy, xx = np.mgrid[0:height, 0:width]
        inside = (yy - height / 2) ** 2 / (height / 4) ** 2 + (xx - width / 2) ** 2 / (width / 4) ** 2 < 1
        image = np.where(inside[..., None], np.array([200, 60, 40], np.uint8),
                         np.array([30, 90, 160], np.uint8)).astype(np.uint8)
        start = time.perf_counter()
        session = self.new_session()
        session.set_image(image)
        session.add_click(width // 2, height // 2, True)
        session.add_click(width // 20, height // 20, False)
        session.close()
        return time.perf_counter() - start


class Session:
    """The clicks, masks and objects of one image; see the module docstring for coordinates.

    Every returned array is a fresh copy owned by the caller. The threshold is the protocol's
    (probabilities > 0.49, as the evaluator).
    """

    threshold = PRED_THRESHOLD

    def __init__(self, segmenter: Segmenter):
        self.segmenter = segmenter
        self._lock = threading.RLock()
        self._predictor: Optional[BasePredictor] = segmenter.new_predictor()
        self._image: Optional[np.ndarray] = None
        self._clicker = Clicker()
        self._history: List[np.ndarray] = []  # probabilities after each click of the object
        self._objects: List[SegmentedObject] = []
        self._synced = False  # whether the predictor's state matches the current clicks
        self.closed = False
        self.last_predict_s = 0.0  # the predictor's own time for the last click (replay excluded)

    # -- state -------------------------------------------------------------------------------
    @property
    def image(self) -> Optional[np.ndarray]:
        return self._image

    @property
    def shape(self) -> Tuple[int, int]:
        self._check_ready()
        return self._image.shape[:2]

    @property
    def clicks(self) -> List[Click]:
        """The current object's clicks (evaluator `Click`s, coords (y, x))."""
        with self._lock:
            return self._clicker.get_clicks()

    @property
    def objects(self) -> List[SegmentedObject]:
        """The finished objects, in order (object k has label k + 1 in `label_map`)."""
        with self._lock:
            return list(self._objects)

    def current_probs(self) -> np.ndarray:
        """HxW float32 probabilities of the current object (zeros before its first click)."""
        with self._lock:
            self._check_ready()
            return self._current().copy()

    def current_mask(self) -> np.ndarray:
        """HxW bool mask of the current object (probabilities > 0.49)."""
        with self._lock:
            self._check_ready()
            return self._current() > self.threshold

    # -- calls -------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        """Start over on `image` (HxWx3 uint8 RGB): no clicks, no objects."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"set_image expects an HxWx3 uint8 RGB image, got {image.dtype} "
                             f"{image.shape}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"set_image: empty image {image.shape}")
        with self._lock:
            self._check_open()
            self._image = np.array(image, order="C", copy=True)  # the session's own copy
            self._clicker = Clicker()
            self._history = []
            self._objects = []
            self._synced = False

    def add_click(self, x: float, y: float, positive: bool) -> Tuple[np.ndarray, np.ndarray]:
        """Click at column `x`, row `y` (pixels; rounded to the nearest integer); returns
        (mask HxW bool, probabilities HxW float32) of the current object."""
        with self._lock:
            self._check_ready()
            h, w = self._image.shape[:2]
            if not (_finite(x) and _finite(y)):
                raise ClickOutsideImageError(f"click ({x}, {y}) is not a pair of finite numbers")
            col, row = int(round(float(x))), int(round(float(y)))
            if not (0 <= col < w and 0 <= row < h):
                raise ClickOutsideImageError(f"click (x={x}, y={y}) lies outside the {w}x{h} image "
                                             f"(x must be in [0, {w - 1}], y in [0, {h - 1}])")
            self._sync()
            self._clicker.add_click(Click(is_positive=bool(positive), coords=(row, col)))
            start = time.perf_counter()
            probs = self._predict()
            self.last_predict_s = time.perf_counter() - start
            self._history.append(probs)
            return probs > self.threshold, probs.copy()

    def undo(self) -> Tuple[np.ndarray, np.ndarray]:
        """Remove the last click (or, with no clicks on the current object, reopen the last
        finished object with its clicks); returns the earlier (mask, probabilities) exactly."""
        with self._lock:
            self._check_ready()
            if self._clicker.get_clicks():
                self._clicker.set_state(self._clicker.get_clicks()[:-1])
                self._history.pop()
            elif self._objects:
                last = self._objects.pop()
                self._clicker.set_state(last.clicks)
                self._history = list(last.history)
            else:
                raise SessionError("nothing to undo: no clicks and no finished objects")
            self._synced = False
            current = self._current()
            return current > self.threshold, current.copy()

    def reset(self) -> None:
        """Drop the current object's clicks (finished objects stay)."""
        with self._lock:
            self._check_ready()
            self._clicker = Clicker()
            self._history = []
            self._synced = False

    def finish_object(self) -> SegmentedObject:
        """Keep the current object and start the next one on the same image."""
        with self._lock:
            self._check_ready()
            clicks = self._clicker.get_clicks()
            if not clicks:
                raise SessionError("finish_object: the current object has no clicks")
            obj = SegmentedObject(clicks=clicks, mask=self._history[-1] > self.threshold,
                                  history=list(self._history))
            self._objects.append(obj)
            self._clicker = Clicker()
            self._history = []
            self._synced = False
            return obj

    def label_map(self, include_current: bool = True) -> np.ndarray:
        """HxW label map: 0 background, k for the k-th finished object (1-based), then the
        current object (if it has clicks and `include_current`); later objects are painted
        over earlier ones. uint8 up to 255 objects, else uint16."""
        with self._lock:
            self._check_ready()
            masks = [o.mask for o in self._objects]
            if include_current and self._history:
                masks.append(self._history[-1] > self.threshold)
            return paint_labels(masks, self._image.shape[:2])

    def export(self) -> Tuple[np.ndarray, List[SegmentedObject]]:
        """(label_map(), the finished objects plus the current one if it has clicks), taken
        together under the session's lock."""
        with self._lock:
            self._check_ready()
            objects = list(self._objects)
            if self._history:
                objects.append(SegmentedObject(self._clicker.get_clicks(),
                                               self._history[-1] > self.threshold, []))
            return self.label_map(), objects

    def close(self) -> None:
        """Release the image and the predictor; any later call raises `SessionClosedError`."""
        with self._lock:
            self.closed = True
            self._predictor = None
            self._image = None
            self._history = []
            self._objects = []

    @property
    def nbytes(self) -> int:
        """Memory held by the session's arrays (image, kept probabilities, object masks)."""
        with self._lock:
            total = 0 if self._image is None else self._image.nbytes * 2  # + predictor's copy
            total += sum(p.nbytes for p in self._history)
            for obj in self._objects:
                total += obj.mask.nbytes + sum(p.nbytes for p in obj.history)
            return total

    # -- internals ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosedError("the session is closed; start a new one")

    def _check_ready(self) -> None:
        self._check_open()
        if self._image is None:
            raise SessionError("no image: call set_image first")

    def _current(self) -> np.ndarray:
        if self._history:
            return self._history[-1]
        return np.zeros(self._image.shape[:2], dtype=np.float32)

    def _predict(self) -> np.ndarray:
        with self.segmenter.lock, torch.no_grad():
            probs = self._predictor.get_prediction(self._clicker)
        # the predictor may reuse the memory of its earlier outputs: keep our own copy
        return np.array(probs, dtype=np.float32, copy=True)

    def _sync(self) -> None:
        """Bring the predictor to the state after the current clicks (replay from set_image)."""
        if self._synced:
            return
        clicks = self._clicker.get_clicks()
        with self.segmenter.lock, torch.no_grad():
            self._predictor.set_image(self._image)
        if clicks:
            logger.debug("session: replaying %d clicks after undo", len(clicks))
        replay = Clicker()
        for click in clicks:
            replay.add_click(click)
            with self.segmenter.lock, torch.no_grad():
                self._predictor.get_prediction(replay)
        self._synced = True


def paint_labels(masks: List[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """HxW label map of `masks` (HxW bool each): 0 background, k for the k-th mask, later masks
    painted over earlier ones; uint8 up to 255 masks, else uint16."""
    labels = np.zeros(shape, dtype=np.uint8 if len(masks) <= 255 else np.uint16)
    for k, mask in enumerate(masks, start=1):
        labels[mask] = k
    return labels


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


__all__ = ["ClickOutsideImageError", "MODEL_FREE", "SegmentedObject", "Segmenter", "Session",
           "SessionClosedError", "SessionError", "clicks_xy", "paint_labels"]
