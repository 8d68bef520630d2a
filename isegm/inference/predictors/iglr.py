"""Network predictors (NoBRS): the IGLR two-stage predictor and the coarse-only predictor.

One click (`CoarsePredictor._predict`, the same flow for both; the coarse predictor stops
after step 2):

1. the target crop (rules 31-32: the previous mask's box with the positive clicks, expanded;
   after an empty previous mask the whole image, its output squeezed into the stored ROI,
   rule 28f) resized to S x S with the previous probabilities as the fourth input (rule 26),
   the network on it, with horizontal flip averaging of the logits (rule 27);
2. the coarse probabilities resized to the crop (0 outside it, rule 34);
3. the focus box around the latest click (rule 35, `inference/focus.py`);
4. the refiner on RoIAlign crops of the box (image from full resolution; coarse logits and
   decoder feature from the network's target-crop frame);
5. its logits resized into the box and pasted (rule 36): sigmoid over the coarse map, or over
   the previous final map after more than `refine_after_clicks` clicks.

`crop_mode='zoom_in'` (coarse predictor only) replaces 1-2 by RITM's ZoomIn (rules 28-29).

Each operation runs in the backend chosen at construction (`inference/backends.py`: the
compiled numba kernels on the CPU, PyTorch on CUDA or with `IGLR_NUMBA=0`). Per click only the
target crop is touched at full resolution: the previous mask is thresholded once per previous
map over its known support (for both the target crop and the focus rule), and the output map
reuses the memory of an earlier output nobody holds any more (`reused_outputs` counts them).
The network runs under `torch.inference_mode()`, optionally in `autocast_dtype` and with
`compile_model`. `timer` (default: a no-op) records the stages.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ...model.is_model import with_autocast_weights
from ...model.ops import box_coord
from ...model.roi_sampling import roi_align_box
from ...utils.log import logger
from ...utils.timing import NULL_TIMER
from ..backends import MaskWithBox, select_backend
from ..clicker import Click, Clicker
from ..crops import ZoomIn, map_clicks, target_crop_roi
from ..focus import FOCUS_STRATEGIES, PREV_MASK_THRESHOLD, focus_box
from ..resize import resize_bilinear
from ..utils import get_bbox_from_mask, half_open_bbox
from .base import BasePredictor, clicks_to_points, flip_clicks

Box = Tuple[int, int, int, int]

CROP_MODES = ("target", "zoom_in")
# the target crop when the previous mask (> 0.49) is empty from click 2 on: 'stored', the ROI an
# earlier click stored (the released predictors, rule 28f: the network sees the whole image and
# its output is squeezed into that ROI, the focus box clamped to it); 'full', the whole image
EMPTY_MASK_ROIS = ("stored", "full")
# how clicks enter the resized crops: 'aligned', where the crops' own resampling moves the
# clicked pixel (the target crop's align_corners=True resize, the refiner's roi_align), as the
# model is trained (issue 15); 'released', the released scaling y' = S (y - y1) / h (rules 32,
# 36), which at the target crop's larger zooms misplaces a click by more than its radius
CLICK_MAPPINGS = ("aligned", "released")


class CoarsePredictor(BasePredictor):
    """Coarse-only predictor (the "no LRR" ablation, or any model's first stage).

    infer_size / target_crop_r default to the model's stored values; `min_crop_size` 10 and
    threshold 0.49 as in FocalClick. `zoom_in`: a `ZoomIn` used when crop_mode='zoom_in'.
    `autocast_dtype`: run the network under `torch.autocast` in this dtype (None: fp32);
    `compile_model`: `torch.compile` the backbone, head and refiner (in place, same weights);
    `empty_mask_roi`: the target crop after an empty previous mask (`EMPTY_MASK_ROIS`;
    'stored' as released, rule 28f; 'full' the whole image, output unsqueezed);
    `backend`: 'numba' or 'torch' (default: numba on the CPU where present, else torch);
    `click_mapping`: `CLICK_MAPPINGS` ('aligned' as trained, 'released' rules 32 and 36);
    `network`: what runs the two network calls, an object with the model's `forward_coarse` /
    `forward_refine` (default: the model itself; `onnx_backend.build_network` gives
    onnxruntime sessions of an export, for one stage or both), chosen once like `backend`.
    """

    requires_model = True
    refines = False

    def __init__(self, model: torch.nn.Module, device: Union[torch.device, str] = "cpu",
                 clicks_limit: Optional[int] = None, with_flip: bool = True,
                 infer_size: Optional[int] = None, target_crop_r: Optional[float] = None,
                 min_crop_size: int = 10, crop_mode: str = "target",
                 zoom_in: Optional[ZoomIn] = None, autocast_dtype: Optional[torch.dtype] = None,
                 compile_model: bool = False, empty_mask_roi: str = "stored",
                 backend: Optional[str] = None, click_mapping: str = "aligned",
                 network: Optional[object] = None):
        if model is None:
            raise ValueError(f"{type(self).__name__} needs a model")
        if network is not None and network is not model and (autocast_dtype is not None
                                                              or compile_model):
            if not getattr(network, "auto", False):
                raise ValueError("autocast_dtype and compile_model apply to the PyTorch model, "
                                 "not to another network backend")
            logger.info("network backend: PyTorch (autocast_dtype / compile_model asked for)")
            network = model  # the 'auto' backend's choice gives way to the caller's
        if crop_mode not in CROP_MODES:
            raise KeyError(f"unknown crop mode '{crop_mode}'; known: {', '.join(CROP_MODES)}")
        if empty_mask_roi not in EMPTY_MASK_ROIS:
            raise KeyError(f"unknown empty_mask_roi '{empty_mask_roi}'; known: "
                           f"{', '.join(EMPTY_MASK_ROIS)}")
        if click_mapping not in CLICK_MAPPINGS:
            raise KeyError(f"unknown click_mapping '{click_mapping}'; known: "
                           f"{', '.join(CLICK_MAPPINGS)}")
        self.empty_mask_roi = empty_mask_roi
        self.click_mapping = click_mapping
        super().__init__(model.to(device).eval(), device, clicks_limit)
        self.backend = select_backend(self.device, backend)
        self.with_flip = with_flip
        self.infer_size = int(infer_size or getattr(model, "infer_size", 256))
        self.target_crop_r = float(target_crop_r or getattr(model, "target_crop_r", 1.4))
        self.min_crop_size = min_crop_size
        self.crop_mode = crop_mode
        self.zoom_in = zoom_in if zoom_in is not None else ZoomIn()
        self.with_prev_mask = bool(getattr(model, "with_prev_mask", True))
        self.autocast_dtype = autocast_dtype
        if autocast_dtype is not None:  # the backbone's weights cast once, not every call
            self.model = with_autocast_weights(self.model, autocast_dtype)
        if compile_model:
            for name in ("backbone", "head", "refiner"):
                module = getattr(self.model, name, None)
                if module is not None:
                    module.compile()
        self.network = self.model if network is None or network is model else network
        self._check_network_size("coarse", self.infer_size)
        self.timer = NULL_TIMER
        self._support: Optional[Box] = None  # half-open box outside which prev is 0
        self._support_of: Optional[np.ndarray] = None  # the prev map `_support` describes
        self._prev_mask_cache: Optional[Tuple[np.ndarray, np.ndarray, Box, Optional[Box]]] = None
        # earlier outputs (map, support) whose memory is reused once nobody else holds them
        self._pool: List[Tuple[np.ndarray, Box]] = []
        probe = [(np.zeros(1, np.float32), (0, 0, 0, 0))]
        self._pool_refs = sys.getrefcount(probe[0][0])  # references of an unheld pool entry
        self.reused_outputs = 0  # how many outputs were built in recycled memory

    # ---------------------------------------------------------------------------------------
    # one click

    @torch.inference_mode()
    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        if self.crop_mode == "zoom_in":
            return self._predict_zoom_in(clicks)
        backend, timer = self.backend, self.timer
        # 1. the network on the target crop
        roi, logits, feature, probs = self._coarse_network(clicks)
        r0, r1, c0, c1 = roi
        window = (r0, r1 + 1, c0, c1 + 1)
        # 2. the coarse probabilities over the crop, in an output map that is 0 outside it
        with timer.stage("coarse_paste"):
            out = self._output(window)
            coarse = backend.coarse(probs, out, window)
        box = None
        if self.refines and feature is not None:
            # 3. the focus box (rule 35) from the coarse and previous masks over the crop
            with timer.stage("focus_crop"):
                prev_mask, (py, _, px, _), prev_bbox = self._prev_mask()
                xor, count, bbox, runs = backend.focus_masks(coarse, prev_mask,
                                                             (py - r0, px - c0))
                box = focus_box(self.focus_strategy, count, bbox, prev_bbox is not None, xor,
                                window, clicks[-1].coords, self.focus_crop_r, (r0, c0),
                                self.prev_prediction.shape, runs)
                self.last_focus_box = box
        if box is None:
            with timer.stage("paste_back"):
                return self._pending(out, window, backend.paste(out, coarse, window))
        # 4. the refiner on the box
        refined = self._refine(box, roi, clicks, logits, feature)
        # 5. its logits pasted into the coarse map (or, late, into the previous final map)
        with timer.stage("paste_back"):
            if len(clicks) > self.refine_after_clicks:
                return self._paste_on_previous(out, window, refined, box)
            return self._pending(out, window, backend.paste(out, coarse, window, box, refined))

    def _coarse_network(self, clicks: List[Click]
                        ) -> Tuple[Box, torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """The network on the target crop: (inclusive roi of the output, logits (1,1,S,S),
        feature, the probabilities to resize into the roi: sigmoid(logits), or after rule 28f's
        whole-image pass their resize to the image first, as released)."""
        with self.timer.stage("target_crop"):
            roi, out_roi = self._target_roi(clicks)
            self.last_target_roi = out_roi
            r0, r1, c0, c1 = roi
            s = (self.infer_size, self.infer_size)
            image = self.backend.resize_image(self.image_nd, self._image_u8,
                                              (r0, r1 + 1, c0, c1 + 1), s)
            prev = resize_bilinear(self._prev_window(roi), s)
            roi_clicks = map_clicks(clicks, roi, s,
                                    align_corners=self.click_mapping == "aligned")
        logits, feature = self._network_coarse(image, prev, roi_clicks)
        probs = torch.sigmoid(logits)
        if out_roi != roi:  # squeezed: the whole-image map resized into the stored roi
            probs = resize_bilinear(probs, (r1 - r0 + 1, c1 - c0 + 1))
        return out_roi, logits, feature, probs

    def _network_coarse(self, image: torch.Tensor, prev: Optional[torch.Tensor],
                        clicks: List[Click]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """image (1,3,h,w), prev (1,1,h,w), clicks in its frame -> (logits (1,1,h,w) averaged
        over the flip, feature (1,C,h/4,w/4) of the unflipped pass)."""
        h, w = image.shape[-2:]
        clicks_lists = [clicks]
        if self.with_flip:
            image = torch.cat((image, torch.flip(image, dims=[3])), dim=0)
            if prev is not None:
                prev = torch.cat((prev, torch.flip(prev, dims=[3])), dim=0)
            clicks_lists.append(flip_clicks(clicks, w))
        points = clicks_to_points(clicks_lists, device=self.device)
        with self.timed_model(), self.timer.stage("coarse_net"), self._autocast():
            out = self.network.forward_coarse(image, points,
                                              prev if self.with_prev_mask else None)
        logits = resize_bilinear(out["instances"].float(), (h, w))
        if self.with_flip:
            logits = 0.5 * (logits[:1] + torch.flip(logits[1:], dims=[3]))
        feature = out.get("feature")
        return logits, (feature[:1].float() if feature is not None else None)

    def _predict_zoom_in(self, clicks: List[Click]) -> np.ndarray:
        """RITM's ZoomIn crop (rules 28-29) instead of the target crop, no refinement."""
        full_size = tuple(self.image_nd.shape[-2:])
        inputs = torch.cat((self.image_nd, self._prev_nd()), dim=1)
        roi_inputs, tclicks = self.zoom_in.transform(inputs, clicks)
        logits, _ = self._network_coarse(roi_inputs[:, :3], roi_inputs[:, 3:], tclicks)
        probs = self.zoom_in.inv_transform(torch.sigmoid(logits), full_size)
        return probs[0, 0].cpu().numpy()

    # ---------------------------------------------------------------------------------------
    # state across clicks: the image, the previous prediction, its support and its mask

    def set_image(self, image: np.ndarray) -> None:
        super().set_image(image)
        image_u8 = np.ascontiguousarray(self.image)
        # for the compiled sampling of large crops (uint8 HxWx3 only)
        self._image_u8 = image_u8 if image_u8.dtype == np.uint8 and image_u8.ndim == 3 else None
        tensor = torch.from_numpy(image_u8).to(self.device)
        self.image_nd = tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        self.zoom_in.reset()
        self._set_support(self.prev_prediction, (0, 0, 0, 0))
        h, w = self.prev_prediction.shape
        self.last_target_roi: Box = (0, h - 1, 0, w - 1)  # inclusive; for inspection
        self.last_focus_box: Optional[Box] = None  # half-open, None if empty; for inspection
        self._stored_roi: Optional[Box] = None  # the last ROI from a non-empty mask (rule 28f)

    def set_prev_prediction(self, prob: np.ndarray, support: Optional[Box] = None,
                            above: Optional[np.ndarray] = None) -> None:
        """Make `prob` (HxW probabilities) the previous prediction; `support`: a half-open box
        (y1, y2, x1, x2) outside which it is 0, if known (else found by one scan); `above`:
        `prob > 0.49` over that box (bool), if known — what the predictor keeps of its own
        outputs (else thresholded when a click needs it)."""
        self.prev_prediction = np.ascontiguousarray(prob, dtype=np.float32)
        self._set_support(self.prev_prediction, support)
        if above is None:
            return
        if support is None:
            raise ValueError("set_prev_prediction: `above` needs the `support` box it covers")
        y1, y2, x1, x2 = support
        if above.dtype != bool or above.shape != (max(0, y2 - y1), max(0, x2 - x1)):
            raise ValueError(f"set_prev_prediction: `above` must be a bool mask of the support "
                             f"box {support}, got {above.dtype} {above.shape}")
        above = np.ascontiguousarray(above)
        self._prev_mask_cache = (self.prev_prediction, above, tuple(support),
                                 get_bbox_from_mask(above))

    def get_prediction(self, clicker: Clicker, prev_mask: Optional[np.ndarray] = None
                       ) -> np.ndarray:
        self._pending_support = None
        prob = super().get_prediction(clicker, prev_mask)
        pending, self._pending_support = self._pending_support, None
        if pending is not None and pending[0] is prob:
            self._set_support(prob, pending[1])
            self._keep_output(prob, pending[1])
        return prob

    def _pending(self, out: np.ndarray, support: Box, mask: Optional[MaskWithBox] = None
                 ) -> np.ndarray:
        """Return the output `out` (0 outside the half-open `support`), remembering its support
        for the next click and, when the backend built it while writing, its threshold over the
        support (kept as the next click's previous mask, so that map is not scanned again)."""
        self._pending_support = (out, support)
        if mask is not None:
            self._prev_mask_cache = (out, mask[0], support, mask[1])
        return out

    def _set_support(self, prob: np.ndarray, support: Optional[Box]) -> None:
        if support is None:
            support = half_open_bbox(prob != 0) or (0, 0, 0, 0)
        self._support, self._support_of = support, prob

    def _prev_support(self) -> Box:
        """Support of the current previous prediction (rescanned when it was replaced, e.g.
        through `get_prediction(prev_mask=...)`)."""
        if self._support_of is not self.prev_prediction:
            self._set_support(self.prev_prediction, None)
        return self._support  # type: ignore[return-value]

    def _prev_mask(self) -> Tuple[np.ndarray, Box, Optional[Box]]:
        """(previous probabilities > 0.49 over their support, the half-open support box, the
        mask's inclusive bbox in it or None): thresholded once per previous map, for the target
        crop and the focus rule."""
        cache = self._prev_mask_cache
        if cache is None or cache[0] is not self.prev_prediction:
            support = self._prev_support()
            mask, bbox = self.backend.threshold(self.prev_prediction, support,
                                                PREV_MASK_THRESHOLD)
            cache = (self.prev_prediction, mask, support, bbox)
            self._prev_mask_cache = cache
        return cache[1], cache[2], cache[3]

    def _target_roi(self, clicks: List[Click]) -> Tuple[Box, Box]:
        """(inclusive roi the network sees, inclusive roi its output goes to):
        `crops.target_crop_roi` from the previous mask's cached bbox. They differ only after an
        empty previous mask with a stored ROI (rule 28f, `empty_mask_roi='stored'`): the whole
        image, and the ROI of the last non-empty mask."""
        if len(clicks) <= 1:
            roi = target_crop_roi(None, clicks, self.prev_prediction.shape)
            return roi, roi
        _, (y1, _, x1, _), bbox = self._prev_mask()
        prev_bbox = None if bbox is None else (bbox[0] + y1, bbox[1] + y1,
                                               bbox[2] + x1, bbox[3] + x1)
        roi = target_crop_roi(prev_bbox, clicks, self.prev_prediction.shape,
                              self.target_crop_r, self.min_crop_size)
        if prev_bbox is None:
            stored = self._stored_roi if self.empty_mask_roi == "stored" else None
            return roi, stored or roi
        self._stored_roi = roi
        return roi, roi

    def _prev_window(self, roi: Box) -> torch.Tensor:
        """(1, 1, h, w) previous probabilities over an inclusive roi, on the device (only the
        window is copied)."""
        r0, r1, c0, c1 = roi
        window = self.prev_prediction[r0:r1 + 1, c0:c1 + 1]  # a strided view, not copied
        return torch.from_numpy(window).to(self.device)[None, None]

    def _prev_nd(self) -> torch.Tensor:
        return torch.from_numpy(self.prev_prediction).to(self.device)[None, None]

    def _output(self, window: Box) -> np.ndarray:
        """An HxW float32 map that is 0 outside the half-open `window` (the caller writes all
        of the window): the memory of an earlier output that nobody holds any more (only the
        part of its support outside the window is cleared), else a new zero map. At 4K this
        spares a 33 MB allocation, its page faults and a copy per click."""
        shape = self.prev_prediction.shape
        for i in range(len(self._pool)):
            if (self._pool[i][0].shape == shape
                    and sys.getrefcount(self._pool[i][0]) == self._pool_refs):
                out, support = self._pool.pop(i)
                _zero_outside(out, support, window)
                self.reused_outputs += 1
                return out
        return np.zeros(shape, dtype=np.float32)

    def _keep_output(self, out: np.ndarray, support: Box) -> None:
        """Remember an output for reuse: the previous map and the one before it are enough for
        the evaluator (which holds the last) and for callers that hold one more."""
        self._pool.append((out, support))
        del self._pool[:-2]

    def _check_network_size(self, stage: str, size: int) -> None:
        """A network with a fixed input size for `stage` (an ONNX export) must get that size;
        the coarse stage's ZoomIn crops have free sizes. A network the 'auto' backend chose
        gives the stage to PyTorch instead of failing."""
        fixed = getattr(self.network, "fixed_sizes", {}).get(stage)
        if fixed is None:
            return
        if stage == "coarse" and self.crop_mode == "zoom_in":
            reason = ("crop_mode='zoom_in' feeds the network crops of any size; the network "
                      f"backend's coarse stage takes only {fixed}x{fixed} inputs (use "
                      f"crop_mode='target')")
        elif size != fixed:
            reason = (f"the network backend's {stage} stage takes {fixed}x{fixed} inputs (its "
                      f"export's size), the predictor is set to {size}")
        else:
            return
        if not getattr(self.network, "auto", False):
            raise ValueError(reason)
        from ..onnx_backend import with_pytorch_stage
        logger.info(f"network backend: PyTorch for the {stage} stage ({reason})")
        self.network = with_pytorch_stage(self.network, self.model, stage)

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


class IGLRPredictor(CoarsePredictor):
    """The two-stage IGLR predictor: target crop -> coarse -> focus crop -> refine -> paste.

    focus_strategy ('diff', 'click_square', 'whole_object'), focus_crop_r and refine_size
    default to the model's stored values. The coarse stage always uses the target crop.
    """

    refines = True

    def __init__(self, model: torch.nn.Module, device: Union[torch.device, str] = "cpu",
                 clicks_limit: Optional[int] = None, with_flip: bool = True,
                 infer_size: Optional[int] = None, target_crop_r: Optional[float] = None,
                 min_crop_size: int = 10, focus_strategy: Optional[str] = None,
                 focus_crop_r: Optional[float] = None, refine_size: Optional[int] = None,
                 refine_after_clicks: int = 10, autocast_dtype: Optional[torch.dtype] = None,
                 compile_model: bool = False, empty_mask_roi: str = "stored",
                 backend: Optional[str] = None, click_mapping: str = "aligned",
                 network: Optional[object] = None):
        super().__init__(model, device, clicks_limit, with_flip, infer_size, target_crop_r,
                         min_crop_size, crop_mode="target", autocast_dtype=autocast_dtype,
                         compile_model=compile_model, empty_mask_roi=empty_mask_roi,
                         backend=backend, click_mapping=click_mapping, network=network)
        if not getattr(model, "use_refiner", False) or getattr(model, "refiner", 1) is None:
            raise ValueError("the IGLR predictor needs a model with use_refiner=True; "
                             "use the 'coarse' predictor for models without the refiner")
        self.focus_strategy = focus_strategy or getattr(model, "focus_strategy", "diff")
        if self.focus_strategy not in FOCUS_STRATEGIES:
            raise KeyError(f"unknown focus strategy '{self.focus_strategy}'; known: "
                           f"{', '.join(FOCUS_STRATEGIES)}")
        self.focus_crop_r = float(focus_crop_r or getattr(model, "focus_crop_r", 1.4))
        self.refine_size = int(refine_size or getattr(model, "refine_size", 256))
        self._check_network_size("refiner", self.refine_size)
        self.refine_after_clicks = refine_after_clicks

    def _refine(self, box: Box, roi: Box, clicks: List[Click], net_logits: torch.Tensor,
                feature: torch.Tensor) -> torch.Tensor:
        """Refiner logits (1,1,R,R) over the half-open focus box (y1, y2, x1, x2)."""
        y1, y2, x1, x2 = box
        size = self.refine_size
        r0, r1, c0, c1 = roi
        sy = self.infer_size / (r1 - r0 + 1)
        sx = self.infer_size / (c1 - c0 + 1)
        net_box = ((x1 - c0) * sx, (y1 - r0) * sy, (x2 - c0) * sx, (y2 - r0) * sy)
        with self.timed_model("sampling_time"), self.timer.stage("roi_sampling"):
            image_crop = self.backend.roi_image(self.image_nd, self._image_u8,
                                                (x1, y1, x2, y2), size)
            coarse_crop = roi_align_box(net_logits, net_box, size)
            feature_crop = self.backend.roi_features(feature, net_box, max(1, size // 4),
                                                     feature.shape[-1] / self.infer_size)
            if self.click_mapping == "aligned":  # where roi_align(aligned=True) samples them
                crop_clicks = [c.copy(coords=(box_coord(c.coords[0], y1, y2, size),
                                              box_coord(c.coords[1], x1, x2, size)))
                               for c in clicks]
            else:
                crop_clicks = [c.copy(coords=((c.coords[0] - y1) * size / (y2 - y1),
                                              (c.coords[1] - x1) * size / (x2 - x1)))
                               for c in clicks]
            points = clicks_to_points([crop_clicks], order=0, device=self.device)
        with self.timed_model(), self.timer.stage("refiner"), self._autocast():
            out = self.network.forward_refine(image_crop, points, coarse_crop, feature_crop)
        return out["refined"].float()

    def _paste_on_previous(self, out: np.ndarray, window: Box, refined: torch.Tensor, box: Box
                           ) -> np.ndarray:
        """The previous map with sigmoid(refined logits (1, 1, R, R) resized to the half-open
        box) written there (rule 36: sigmoid(logit(p)) = p elsewhere), built in `out` (0 outside
        the half-open `window`, whose coarse values are not used)."""
        y1, y2, x1, x2 = box
        probs = torch.sigmoid(resize_bilinear(refined, (y2 - y1, x2 - x1)))
        s0, s1, s2, s3 = self._prev_support()
        _zero_outside(out, window, (s0, s1, s2, s3))
        out[s0:s1, s2:s3] = self.prev_prediction[s0:s1, s2:s3]
        out[y1:y2, x1:x2] = probs[0, 0].float().cpu().numpy()
        support = (box if s1 <= s0 or s3 <= s2 else
                   (min(s0, y1), max(s1, y2), min(s2, x1), max(s3, x2)))
        return self._pending(out, support)


def _zero_outside(out: np.ndarray, support: Box, window: Box) -> None:
    """Zero the part of the half-open `support` box of `out` outside the half-open `window`
    (the map is 0 outside its support already)."""
    s0, s1, s2, s3 = support
    w0, w1, w2, w3 = window
    if s1 <= s0 or s3 <= s2:
        return
    out[s0:min(s1, w0), s2:s3] = 0  # rows above the window
    out[max(s0, w1):s1, s2:s3] = 0  # rows below
    a0, a1 = max(s0, w0), min(s1, w1)
    if a1 > a0:
        out[a0:a1, s2:min(s3, w2)] = 0  # left of the window
        out[a0:a1, max(s2, w3):s3] = 0  # right of the window
