"""Network predictors (NoBRS): the IGLR two-stage predictor and the coarse-only predictor.

Coarse stage (both): the FocalClick/IGLR target crop (protocol rules 31-32; `crop_mode='target'`)
or RITM's ZoomIn (rules 28-29; `crop_mode='zoom_in'`, coarse predictor), optional horizontal
flip averaging of logits (rule 27), the previous returned probabilities as the fourth input
(rule 26), probabilities pasted into a zero map (0 outside the crop).

Refinement (IGLR, rules 34-36): the coarse logits l = log(p / (1 - p)), the focus box of the
chosen strategy, the refiner on ROI-sampled crops (image from full resolution; coarse logits
and decoder feature from the network's target-crop frame), its logits resized into the box and
pasted into l (into logit(previous final) after more than 10 clicks); final = sigmoid.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ...model.ops import roi_align
from ..clicker import Click, Clicker
from ..transforms import (FOCUS_STRATEGIES, ZoomIn, focus_crop, map_clicks, resize_bilinear,
                          target_crop_roi)
from .base import BasePredictor, clicks_to_points, flip_clicks

CROP_MODES = ("target", "zoom_in")


class CoarsePredictor(BasePredictor):
    """Coarse-only predictor (the "no LRR" ablation, or any model's first stage).

    infer_size / target_crop_r default to the model's stored values; `min_crop_size` 10 and
    threshold 0.49 as in FocalClick. `zoom_in`: a `ZoomIn` used when crop_mode='zoom_in'.
    """

    requires_model = True

    def __init__(self, model: torch.nn.Module, device: Union[torch.device, str] = "cpu",
                 clicks_limit: Optional[int] = None, with_flip: bool = True,
                 infer_size: Optional[int] = None, target_crop_r: Optional[float] = None,
                 min_crop_size: int = 10, crop_mode: str = "target",
                 zoom_in: Optional[ZoomIn] = None):
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

    def set_image(self, image: np.ndarray) -> None:
        super().set_image(image)
        tensor = torch.from_numpy(np.ascontiguousarray(self.image)).to(self.device)
        self.image_nd = tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        self.zoom_in.reset()

    # ----------------------------------------------------------------------------------------
    def _prev_nd(self) -> torch.Tensor:
        return torch.from_numpy(self.prev_prediction).to(self.device)[None, None]

    @torch.no_grad()
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
        with self.timed_model():
            out = self.model.forward_coarse(image, points, prev if self.with_prev_mask else None)
        logits = resize_bilinear(out["instances"], (h, w))
        if self.with_flip:
            logits = 0.5 * (logits[:1] + torch.flip(logits[1:], dims=[3]))
        feature = out.get("feature")
        return logits, (feature[:1] if feature is not None else None)

    def _coarse_target(self, clicks: List[Click]):
        """Coarse stage on the target crop: returns (probs (1,1,H,W) zero outside the crop,
        inclusive roi, network logits (1,1,S,S), feature)."""
        _, _, full_h, full_w = self.image_nd.shape
        roi = target_crop_roi(self.prev_prediction, clicks, (full_h, full_w), self.target_crop_r,
                              self.min_crop_size, 0.49)
        r0, r1, c0, c1 = roi
        s = (self.infer_size, self.infer_size)
        image = resize_bilinear(self.image_nd[:, :, r0:r1 + 1, c0:c1 + 1], s)
        prev = resize_bilinear(self._prev_nd()[:, :, r0:r1 + 1, c0:c1 + 1], s)
        logits, feature = self._network_coarse(image, prev, map_clicks(clicks, roi, s))
        probs = resize_bilinear(torch.sigmoid(logits), (r1 - r0 + 1, c1 - c0 + 1))
        full = torch.zeros((1, 1, full_h, full_w), dtype=probs.dtype, device=probs.device)
        full[:, :, r0:r1 + 1, c0:c1 + 1] = probs
        return full, roi, logits, feature

    def _coarse_zoom_in(self, clicks: List[Click]) -> torch.Tensor:
        full_size = tuple(self.image_nd.shape[-2:])
        inputs = torch.cat((self.image_nd, self._prev_nd()), dim=1)
        roi_inputs, tclicks = self.zoom_in.transform(inputs, clicks)
        logits, _ = self._network_coarse(roi_inputs[:, :3], roi_inputs[:, 3:], tclicks)
        return self.zoom_in.inv_transform(torch.sigmoid(logits), full_size)

    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        if self.crop_mode == "zoom_in":
            probs = self._coarse_zoom_in(clicks)
        else:
            probs = self._coarse_target(clicks)[0]
        return probs[0, 0].cpu().numpy()


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
                 refine_after_clicks: int = 10):
        super().__init__(model, device, clicks_limit, with_flip, infer_size, target_crop_r,
                         min_crop_size, crop_mode="target")
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

    @torch.no_grad()
    def _predict(self, clicks: List[Click], clicker: Clicker) -> np.ndarray:
        coarse_probs, roi, net_logits, feature = self._coarse_target(clicks)
        logits = torch.log(coarse_probs / (1 - coarse_probs))  # -inf outside the target crop
        r0, r1, c0, c1 = roi
        target_box = (r0, r1 + 1, c0, c1 + 1)
        last = clicks[-1].coords
        box = focus_crop(logits[0, 0].cpu().numpy(), self.prev_prediction, target_box, last,
                         self.focus_strategy, self.focus_crop_r)
        if box is not None and feature is not None:
            refined = self._refine(box, roi, clicks, net_logits, feature)
            y1, y2, x1, x2 = box
            if len(clicks) > self.refine_after_clicks:
                prev = torch.from_numpy(self.prev_prediction).to(self.device)[None, None]
                logits = torch.log(prev / (1 - prev))
            logits[:, :, y1:y2, x1:x2] = resize_bilinear(refined, (y2 - y1, x2 - x1))
        return torch.sigmoid(logits)[0, 0].cpu().numpy()

    def _refine(self, box: Tuple[int, int, int, int], roi: Tuple[int, int, int, int],
                clicks: List[Click], net_logits: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """Refiner logits (1,1,R,R) over the half-open focus box (y1, y2, x1, x2)."""
        y1, y2, x1, x2 = box
        size = self.refine_size
        r0, r1, c0, c1 = roi
        sy = self.infer_size / (r1 - r0 + 1)
        sx = self.infer_size / (c1 - c0 + 1)
        img_box = torch.tensor([[0, x1, y1, x2, y2]], dtype=torch.float32, device=self.device)
        net_box = torch.tensor([[0, (x1 - c0) * sx, (y1 - r0) * sy, (x2 - c0) * sx,
                                 (y2 - r0) * sy]], dtype=torch.float32, device=self.device)
        with self.timed_model("sampling_time"):
            image_crop = roi_align(self.image_nd, img_box, size)
            coarse_crop = roi_align(net_logits, net_box, size)
            feature_crop = roi_align(feature, net_box, max(1, size // 4),
                                     spatial_scale=feature.shape[-1] / self.infer_size)
        crop_clicks = [c.copy(coords=((c.coords[0] - y1) * size / (y2 - y1),
                                      (c.coords[1] - x1) * size / (x2 - x1))) for c in clicks]
        points = clicks_to_points([crop_clicks], order=0, device=self.device)
        with self.timed_model():
            out = self.model.forward_refine(image_crop, points, coarse_crop, feature_crop)
        return out["refined"]
