"""Network predictors (NoBRS): the IGLR two-stage predictor and the coarse-only predictor.

Coarse stage (both): the FocalClick/IGLR target crop (protocol rules 31-32; `crop_mode='target'`)
or RITM's ZoomIn (rules 28-29; `crop_mode='zoom_in'`, coarse predictor), optional horizontal
flip averaging of logits (rule 27), the previous returned probabilities as the fourth input
(rule 26), probabilities pasted into a zero map (0 outside the crop). Clicks are mapped into
the target crop as its align_corners=True resize moves pixels (`map_clicks(align_corners=True)`)
and into the refiner's crop as its roi_align samples it (`ops.box_coord`, as in training), not
by the released new/old scaling (rules 32, 36), which at the target crop's zooms (up to ~25x)
misplaces a click by more than its radius (issue 15).

Refinement (IGLR, rules 34-36): the coarse logits l = log(p / (1 - p)), the focus box of the
chosen strategy, the refiner on ROI-sampled crops (image from full resolution; coarse logits
and decoder feature from the network's target-crop frame), its logits resized into the box and
pasted into l (into logit(previous final) after more than 10 clicks); final = sigmoid.

Speed (scripts/benchmark.py; tests/test_speed_equivalence.py checks every point against the
straightforward full-image computation): per click, only the target crop is touched at full
resolution (ROI from the previous mask's known support, thresholded once per previous map
for both the target crop and the focus rule; logits, focus rule and paste-back on the crop).
The coarse crop is interpolated straight into the HxW output map, whose memory is that of an
earlier output nobody holds any more (only its stale support outside the crop is cleared;
`reused_outputs` counts them) or a new zero map; the refiner's crops come from
`roi_align_box` (window only, no device synchronisation), the network runs under
`torch.inference_mode()`, optionally in `autocast_dtype` (bf16 on CPU, fp16/bf16 on CUDA) and
with `compile_model` (torch.compile of backbone, head and refiner, whose input shapes are fixed).
Only the thresholded coarse crop (for the host-side connected components of the focus rule) and
the final crop cross from the device to the host. `timer` (default: a no-op) records stages.

On the CPU with numba (`kernels.ENABLED`), the IGLR predictor takes `_predict_compiled`: the
previous mask thresholded with its bbox in one pass, the focus rule's masks computed from the
coarse crop's row-resized form without writing the coarse map, the coarse values written only
outside the refined box, and large crops sampled from the uint8 image (the network's target
crop from 1 MP, the refiner's focus box from 0.26 MP). The straightforward path above stays for
CUDA, for runs without numba (`IGLR_NUMBA=0`) and as the tests' reference.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ...model.is_model import with_autocast_weights
from ...model.ops import box_coord, roi_align_box
from ...utils.timing import NULL_TIMER
from ..clicker import Click, Clicker
from .. import kernels
from ..transforms import (FOCUS_STRATEGIES, ZoomIn, _linear_taps, clamp_bbox, expand_bbox,
                          focus_box, focus_crop, map_clicks, resize_bilinear, resize_rows)
from ..utils import get_bbox_from_mask
from .base import BasePredictor, clicks_to_points, flip_clicks

Box = Tuple[int, int, int, int]
# the focus rule thresholds logits at 0.49 (rule 35a), i.e. probabilities at sigmoid(0.49)
LOGIT_049_AS_PROB = float(torch.sigmoid(torch.tensor(0.49, dtype=torch.float32)))

CROP_MODES = ("target", "zoom_in")


class CoarsePredictor(BasePredictor):
    """Coarse-only predictor (the "no LRR" ablation, or any model's first stage).

    infer_size / target_crop_r default to the model's stored values; `min_crop_size` 10 and
    threshold 0.49 as in FocalClick. `zoom_in`: a `ZoomIn` used when crop_mode='zoom_in'.
    `autocast_dtype`: run the network under `torch.autocast` in this dtype (None: fp32);
    `compile_model`: `torch.compile` the backbone, head and refiner (in place, same weights).
    """

    requires_model = True

    def __init__(self, model: torch.nn.Module, device: Union[torch.device, str] = "cpu",
                 clicks_limit: Optional[int] = None, with_flip: bool = True,
                 infer_size: Optional[int] = None, target_crop_r: Optional[float] = None,
                 min_crop_size: int = 10, crop_mode: str = "target",
                 zoom_in: Optional[ZoomIn] = None, autocast_dtype: Optional[torch.dtype] = None,
                 compile_model: bool = False):
        if model is None:
            raise ValueError(f"{type(self).__name__} needs a model")
        if crop_mode not in CROP_MODES:
            raise KeyError(f"unknown crop mode '{crop_mode}'; known: {', '.join(CROP_MODES)}")
        super().__init__(model.to(device).eval(), device, clicks_limit)
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
        self.timer = NULL_TIMER
        self._support: Optional[Box] = None  # half-open box outside which prev is 0
        self._support_of: Optional[np.ndarray] = None  # the prev map `_support` describes
        self._prev_mask_cache: Optional[Tuple[np.ndarray, np.ndarray, Box, Optional[Box]]] = None
        # earlier outputs (map, support) whose memory is reused once nobody else holds them
        self._pool: List[Tuple[np.ndarray, Box]] = []
        probe = [(np.zeros(1, np.float32), (0, 0, 0, 0))]
        self._pool_refs = sys.getrefcount(probe[0][0])  # references of an unheld pool entry
        self.reused_outputs = 0  # how many outputs were built in recycled memory

    def set_image(self, image: np.ndarray) -> None:
        super().set_image(image)
        image_u8 = np.ascontiguousarray(self.image)
        # for the compiled ROI sampling of large focus boxes (uint8 HxWx3 only)
        self._image_u8 = image_u8 if image_u8.dtype == np.uint8 and image_u8.ndim == 3 else None
        tensor = torch.from_numpy(image_u8).to(self.device)
        self.image_nd = tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        self.zoom_in.reset()
        self._set_support(self.prev_prediction, (0, 0, 0, 0))
        h, w = self.prev_prediction.shape
        self.last_target_roi: Box = (0, h - 1, 0, w - 1)  # inclusive; for inspection

    def set_prev_prediction(self, prob: np.ndarray, support: Optional[Box] = None,
                            above: Optional[np.ndarray] = None) -> None:
        """Make `prob` (HxW probabilities) the previous prediction; `support`: a half-open box
        (y1, y2, x1, x2) outside which it is 0, if known (else found by one scan); `above`:
        `prob > 0.49` over that box (bool), if known — what the predictor keeps of its own
        outputs (else thresholded when a click needs it)."""
        self.prev_prediction = np.asarray(prob, dtype=np.float32)
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

    def _set_support(self, prob: np.ndarray, support: Optional[Box]) -> None:
        if support is None:
            nonzero = prob != 0
            bbox = get_bbox_from_mask(nonzero)
            support = (0, 0, 0, 0) if bbox is None else (bbox[0], bbox[1] + 1,
                                                          bbox[2], bbox[3] + 1)
        self._support, self._support_of = support, prob

    def _prev_support(self) -> Box:
        """Support of the current previous prediction (rescanned when it was replaced, e.g.
        through `get_prediction(prev_mask=...)`)."""
        if self._support_of is not self.prev_prediction:
            self._set_support(self.prev_prediction, None)
        return self._support  # type: ignore[return-value]

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _target_roi(self, clicks: List[Click]) -> Box:
        """`target_crop_roi` (inclusive roi) computed on the previous mask's support only."""
        h, w = self.prev_prediction.shape
        full = (0, h - 1, 0, w - 1)
        if len(clicks) <= 1:
            return full
        _, (y1, y2, x1, x2), bbox = self._prev_mask()
        if bbox is None:
            return full
        rmin, rmax, cmin, cmax = bbox[0] + y1, bbox[1] + y1, bbox[2] + x1, bbox[3] + x1
        for click in clicks:
            if click.is_positive:
                cy, cx = int(click.coords[0]), int(click.coords[1])
                rmin, rmax = min(rmin, cy), max(rmax, cy)
                cmin, cmax = min(cmin, cx), max(cmax, cx)
        box = expand_bbox((rmin, rmax, cmin, cmax), self.target_crop_r, self.min_crop_size)
        return clamp_bbox(box, 0, h - 1, 0, w - 1)

    def _prev_mask(self) -> Tuple[np.ndarray, Box, Optional[Box]]:
        """(previous probabilities > 0.49 over their support, the half-open support box, the
        mask's inclusive bbox in it or None): thresholded once per previous map, for the target
        crop and the focus rule; one compiled pass where available."""
        cache = self._prev_mask_cache
        if cache is None or cache[0] is not self.prev_prediction:
            prev = self.prev_prediction
            y1, y2, x1, x2 = support = self._prev_support()
            if self._compiled():
                mask, _, bbox = kernels.threshold_with_bbox(prev, support, 0.49)
            else:
                mask = prev[y1:y2, x1:x2] > 0.49
                bbox = get_bbox_from_mask(mask)
            cache = (prev, mask, support, bbox)
            self._prev_mask_cache = cache
        return cache[1], cache[2], cache[3]

    def _compiled(self) -> bool:
        """Whether the per-click passes take the compiled kernels (numba present, CPU, a
        C-contiguous float32 previous map)."""
        prev = self.prev_prediction
        return (kernels.ENABLED and self.device.type == "cpu" and prev.dtype == np.float32
                and prev.flags.c_contiguous)

    def _prev_mask_window(self, roi: Box) -> np.ndarray:
        """Previous probabilities > 0.49 over an inclusive roi (bool)."""
        mask, (y1, y2, x1, x2), _ = self._prev_mask()
        r0, r1, c0, c1 = roi
        window = np.zeros((r1 - r0 + 1, c1 - c0 + 1), dtype=bool)
        a0, a1, b0, b1 = max(y1, r0), min(y2, r1 + 1), max(x1, c0), min(x2, c1 + 1)
        if a1 > a0 and b1 > b0:
            window[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = mask[a0 - y1:a1 - y1, b0 - x1:b1 - x1]
        return window

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

    def _prev_window(self, roi: Box) -> torch.Tensor:
        """(1, 1, h, w) previous probabilities over an inclusive roi, on the device (only the
        window is copied)."""
        r0, r1, c0, c1 = roi
        window = self.prev_prediction[r0:r1 + 1, c0:c1 + 1]  # a strided view, not copied
        return torch.from_numpy(window).to(self.device)[None, None]

    def _finish(self, out: np.ndarray, probs: torch.Tensor, roi: Box,
                window: Optional[torch.Tensor] = None) -> np.ndarray:
        """The output map `out` (0 outside the inclusive roi) with the (1, 1, h, w) crop
        `probs` written at the roi, unless it was computed there already (`window`, the view of
        `out` that `probs` is, on the CPU). Records its support for the next click."""
        r0, r1, c0, c1 = roi
        if window is None:
            out[r0:r1 + 1, c0:c1 + 1] = probs[0, 0].float().cpu().numpy()
        return self._pending(out, (r0, r1 + 1, c0, c1 + 1))

    def _pending(self, out: np.ndarray, support: Box) -> np.ndarray:
        self._pending_support = (out, support)
        return out

    def get_prediction(self, clicker: Clicker, prev_mask: Optional[np.ndarray] = None
                       ) -> np.ndarray:
        self._pending_support = None
        prob = super().get_prediction(clicker, prev_mask)
        pending, self._pending_support = self._pending_support, None
        if pending is not None and pending[0] is prob:
            self._set_support(prob, pending[1])
            self._keep_output(prob, pending[1])
        return prob

    # ----------------------------------------------------------------------------------------
    def _prev_nd(self) -> torch.Tensor:
        return torch.from_numpy(self.prev_prediction).to(self.device)[None, None]

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
            out = self.model.forward_coarse(image, points, prev if self.with_prev_mask else None)
        logits = resize_bilinear(out["instances"].float(), (h, w))
        if self.with_flip:
            logits = 0.5 * (logits[:1] + torch.flip(logits[1:], dims=[3]))
        feature = out.get("feature")
        return logits, (feature[:1].float() if feature is not None else None)

    def _coarse_target(self, clicks: List[Click]):
        """Coarse stage on the target crop: returns (probs (1,1,h,w) over the crop, inclusive
        roi, network logits (1,1,S,S), feature); the image outside the crop gets 0."""
        roi, logits, feature = self._coarse_network(clicks)
        r0, r1, c0, c1 = roi
        with self.timer.stage("coarse_paste"):
            # on the CPU the crop is interpolated straight into the output map's window
            out = self._output((r0, r1 + 1, c0, c1 + 1))
            window = None
            if self.device.type == "cpu":
                window = torch.from_numpy(out)[r0:r1 + 1, c0:c1 + 1][None, None]
            probs = resize_bilinear(torch.sigmoid(logits), (r1 - r0 + 1, c1 - c0 + 1),
                                    out=window)
        return probs, roi, logits, feature, out, window

    def _coarse_network(self, clicks: List[Click]):
        """The network on the target crop: (inclusive roi, logits (1,1,S,S), feature)."""
        with self.timer.stage("target_crop"):
            roi = self._target_roi(clicks)
            self.last_target_roi = roi
            r0, r1, c0, c1 = roi
            s = (self.infer_size, self.infer_size)
            if (self._image_u8 is not None and self._compiled()
                    and (r1 - r0 + 1) * (c1 - c0 + 1) >= kernels.RESIZE_IMAGE_MIN_PIXELS):
                image = kernels.resize_image(self._image_u8, (r0, r1 + 1, c0, c1 + 1),
                                             _linear_taps(r1 - r0 + 1, s[0]),
                                             _linear_taps(c1 - c0 + 1, s[1]))
            else:
                image = resize_bilinear(self.image_nd[:, :, r0:r1 + 1, c0:c1 + 1], s)
            prev = resize_bilinear(self._prev_window(roi), s)
            roi_clicks = map_clicks(clicks, roi, s, align_corners=True)
        logits, feature = self._network_coarse(image, prev, roi_clicks)
        return roi, logits, feature

    def _coarse_zoom_in(self, clicks: List[Click]) -> torch.Tensor:
        full_size = tuple(self.image_nd.shape[-2:])
        inputs = torch.cat((self.image_nd, self._prev_nd()), dim=1)
        roi_inputs, tclicks = self.zoom_in.transform(inputs, clicks)
        logits, _ = self._network_coarse(roi_inputs[:, :3], roi_inputs[:, 3:], tclicks)
        return self.zoom_in.inv_transform(torch.sigmoid(logits), full_size)

    @torch.inference_mode()
    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        if self.crop_mode == "zoom_in":
            return self._coarse_zoom_in(clicks)[0, 0].cpu().numpy()
        probs, roi, _, _, out, window = self._coarse_target(clicks)
        with self.timer.stage("paste_back"):
            return self._finish(out, probs, roi, window)


class IGLRPredictor(CoarsePredictor):
    """The two-stage IGLR predictor: target crop -> coarse -> focus crop -> refine -> paste.

    focus_strategy ('diff', 'click_square', 'whole_object'), focus_crop_r and refine_size
    default to the model's stored values. The coarse stage always uses the target crop.
    """

    def __init__(self, model: torch.nn.Module, device: Union[torch.device, str] = "cpu",
                 clicks_limit: Optional[int] = None, with_flip: bool = True,
                 infer_size: Optional[int] = None, target_crop_r: Optional[float] = None,
                 min_crop_size: int = 10, focus_strategy: Optional[str] = None,
                 focus_crop_r: Optional[float] = None, refine_size: Optional[int] = None,
                 refine_after_clicks: int = 10, autocast_dtype: Optional[torch.dtype] = None,
                 compile_model: bool = False):
        super().__init__(model, device, clicks_limit, with_flip, infer_size, target_crop_r,
                         min_crop_size, crop_mode="target", autocast_dtype=autocast_dtype,
                         compile_model=compile_model)
        if not getattr(model, "use_refiner", False) or getattr(model, "refiner", 1) is None:
            raise ValueError("the IGLR predictor needs a model with use_refiner=True; "
                             "use the 'coarse' predictor for models without the refiner")
        self.focus_strategy = focus_strategy or getattr(model, "focus_strategy", "diff")
        if self.focus_strategy not in FOCUS_STRATEGIES:
            raise KeyError(f"unknown focus strategy '{self.focus_strategy}'; known: "
                           f"{', '.join(FOCUS_STRATEGIES)}")
        self.focus_crop_r = float(focus_crop_r or getattr(model, "focus_crop_r", 1.4))
        self.refine_size = int(refine_size or getattr(model, "refine_size", 256))
        self.refine_after_clicks = refine_after_clicks

    @torch.inference_mode()
    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        if self._compiled():
            return self._predict_compiled(clicks)
        probs, roi, net_logits, feature, out, window = self._coarse_target(clicks)
        r0, r1, c0, c1 = roi
        # The rule's logits l = log(p / (1 - p)) are never materialised: l > 0.49 is
        # p > sigmoid(0.49), and sigmoid(l) = p where nothing is pasted.
        with self.timer.stage("focus_crop"):
            # the focus rule runs on the host (connected components): send the thresholded
            # crop only; coarse and previous masks are empty outside the target crop
            if probs.device.type == "cpu":
                coarse_mask = probs[0, 0].numpy() > LOGIT_049_AS_PROB
            else:
                coarse_mask = (probs[0, 0] > LOGIT_049_AS_PROB).cpu().numpy()
            prev = self._prev_mask_window(roi)
            box = focus_crop(coarse_mask, prev, (r0, r1 + 1, c0, c1 + 1), clicks[-1].coords,
                             self.focus_strategy, self.focus_crop_r, origin=(r0, c0),
                             image_size=self.prev_prediction.shape)
        if box is not None and feature is not None:
            refined = self._refine(box, roi, clicks, net_logits, feature)
            y1, y2, x1, x2 = box
            with self.timer.stage("paste_back"):
                if len(clicks) > self.refine_after_clicks:
                    # pasted into logit(previous final): sigmoid(logit(p)) = p elsewhere
                    refined = torch.sigmoid(resize_bilinear(refined, (y2 - y1, x2 - x1)))
                    return self._paste_on_previous(out, (r0, r1 + 1, c0, c1 + 1), refined, box)
                # resized straight into the map's window, then sigmoid in place: no temporaries
                window_box = probs[:, :, y1 - r0:y2 - r0, x1 - c0:x2 - c0]
                resize_bilinear(refined, (y2 - y1, x2 - x1), out=window_box).sigmoid_()
        with self.timer.stage("paste_back"):
            return self._finish(out, probs, roi, window)

    def _predict_compiled(self, clicks: List[Click]) -> np.ndarray:
        """`_predict` with the compiled kernels (same result to float rounding; tested against
        the full-image computation). The coarse crop is kept as the rows of a separable resize
        (along the rows: S x w); one pass computes the focus rule's coarse mask from them,
        its count and bbox, and its XOR with the previous mask, without writing the coarse
        map; the coarse values are then written only where the refined box does not cover
        them. At 4K, where the box is often most of the crop, that is one full-resolution pass
        instead of five (paste, threshold, window of the previous mask, XOR, bbox)."""
        roi, net_logits, feature = self._coarse_network(clicks)
        r0, r1, c0, c1 = roi
        window = (r0, r1 + 1, c0, c1 + 1)
        with self.timer.stage("coarse_paste"):
            rows = resize_rows(torch.sigmoid(net_logits), c1 - c0 + 1)
            taps = _linear_taps(rows.shape[0], r1 - r0 + 1)
        with self.timer.stage("focus_crop"):
            prev_mask, (y1, _, x1, _), prev_bbox = self._prev_mask()
            diff, count, bbox, runs = kernels.blend_threshold_xor(
                rows, taps, LOGIT_049_AS_PROB, prev_mask, (y1 - r0, x1 - c0), runs=True)
            box = focus_box(self.focus_strategy, count, bbox, prev_bbox is not None, diff,
                            window, clicks[-1].coords, self.focus_crop_r, (r0, c0),
                            self.prev_prediction.shape, runs)
        out = self._output(window)
        mask = kernels.WindowMask(window, 0.49)  # the next click's previous mask, as written
        if box is None or feature is None:
            with self.timer.stage("coarse_paste"):
                kernels.blend_rows(rows, taps, out, window, mask=mask)
            return self._pending_with_mask(out, mask)
        refined = self._refine(box, roi, clicks, net_logits, feature)
        y1, y2, x1, x2 = box
        with self.timer.stage("paste_back"):
            if len(clicks) > self.refine_after_clicks:
                refined = torch.sigmoid(resize_bilinear(refined, (y2 - y1, x2 - x1)))
                return self._paste_on_previous(out, window, refined, box)
            for part in _window_minus_box(window, box):
                kernels.blend_rows(rows, taps, out, part, col0=part[2] - c0,
                                   first_row=part[0] - r0, mask=mask)
            # the refined logits' separable resize: the rows, then the row blend, the sigmoid
            # and the threshold in one pass straight into the box
            refined_rows = resize_rows(refined, x2 - x1)
            kernels.blend_rows(refined_rows, _linear_taps(refined_rows.shape[0], y2 - y1), out,
                               box, sigmoid=True, mask=mask)
        return self._pending_with_mask(out, mask)

    def _pending_with_mask(self, out: np.ndarray, mask: "kernels.WindowMask") -> np.ndarray:
        """`_pending` for an output whose threshold over its support (the mask's window) was
        built while it was written: kept as the next click's previous mask, so that map is
        not scanned again (`_prev_mask`; an array passed as `prev_mask` is)."""
        values, _, bbox = mask.result()
        self._prev_mask_cache = (out, values, mask.window, bbox)
        return self._pending(out, mask.window)

    def _paste_on_previous(self, out: np.ndarray, window: Box, probs: torch.Tensor, box: Box
                           ) -> np.ndarray:
        """The previous map with the (1, 1, h, w) `probs` written at the half-open box, built
        in `out` (0 outside the half-open `window`, whose coarse values are not used)."""
        y1, y2, x1, x2 = box
        s0, s1, s2, s3 = self._prev_support()
        _zero_outside(out, window, (s0, s1, s2, s3))
        out[s0:s1, s2:s3] = self.prev_prediction[s0:s1, s2:s3]
        out[y1:y2, x1:x2] = probs[0, 0].float().cpu().numpy()
        support = (box if s1 <= s0 or s3 <= s2 else
                   (min(s0, y1), max(s1, y2), min(s2, x1), max(s3, x2)))
        return self._pending(out, support)

    def _refine(self, box: Tuple[int, int, int, int], roi: Tuple[int, int, int, int],
                clicks: List[Click], net_logits: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """Refiner logits (1,1,R,R) over the half-open focus box (y1, y2, x1, x2)."""
        y1, y2, x1, x2 = box
        size = self.refine_size
        r0, r1, c0, c1 = roi
        sy = self.infer_size / (r1 - r0 + 1)
        sx = self.infer_size / (c1 - c0 + 1)
        net_box = ((x1 - c0) * sx, (y1 - r0) * sy, (x2 - c0) * sx, (y2 - r0) * sy)
        with self.timed_model("sampling_time"), self.timer.stage("roi_sampling"):
            if (self._image_u8 is not None and self._compiled()
                    and (y2 - y1) * (x2 - x1) >= kernels.ROI_ALIGN_MIN_PIXELS):
                image_crop = kernels.roi_align_image(self._image_u8, (x1, y1, x2, y2), size)
            else:
                image_crop = roi_align_box(self.image_nd, (x1, y1, x2, y2), size)
            coarse_crop = roi_align_box(net_logits, net_box, size)
            feature_size = max(1, size // 4)
            feature_scale = feature.shape[-1] / self.infer_size
            if self._compiled() and feature.dtype == torch.float32:
                feature_crop = kernels.roi_align_features(feature, net_box, feature_size,
                                                          feature_scale)
            else:
                feature_crop = roi_align_box(feature, net_box, feature_size,
                                             spatial_scale=feature_scale)
            crop_clicks = [c.copy(coords=(box_coord(c.coords[0], y1, y2, size),
                                          box_coord(c.coords[1], x1, x2, size))) for c in clicks]
            points = clicks_to_points([crop_clicks], order=0, device=self.device)
        with self.timed_model(), self.timer.stage("refiner"), self._autocast():
            out = self.model.forward_refine(image_crop, points, coarse_crop, feature_crop)
        return out["refined"].float()


def _window_minus_box(window: Box, box: Box) -> List[Box]:
    """The half-open `window` minus the half-open `box` inside it, as up to four half-open
    boxes (the rows above and below the box, then left and right of it in its rows)."""
    w0, w1, w2, w3 = window
    b0, b1, b2, b3 = box
    parts = [(w0, b0, w2, w3), (b1, w1, w2, w3), (b0, b1, w2, b2), (b0, b1, b3, w3)]
    return [p for p in parts if p[1] > p[0] and p[3] > p[2]]


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
