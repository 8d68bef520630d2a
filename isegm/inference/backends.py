"""The per-click operations of the network predictors, in two implementations chosen once per
predictor (`select_backend`, at construction):

- `TorchBackend`: PyTorch / NumPy. What CUDA runs, and the CPU without numba (`IGLR_NUMBA=0`).
- `NumbaBackend`: the CPU with numba (`isegm.utils.jit.ENABLED`): the compiled kernels
  (`kernels/`, `model.roi_sampling.roi_align_image/_features`) where they pay off, the PyTorch
  operations elsewhere. The coarse crop is kept as the rows of a separable resize (S x w); one
  pass computes the focus rule's masks from them without writing the coarse map, and the
  paste writes the coarse values only outside the refined box, thresholding the written map in
  the same pass (the next click's previous mask). At 4K, where the box is often most of the
  crop, that is one full-resolution pass instead of five.

Both give the same results to float rounding; tests/test_speed_equivalence.py runs the whole
predictor with each on the CPU and compares them with the full-image computation.

The operations, in the order of a click (`predictors/iglr.py`):

    threshold(values, window, thresh)          -> (mask over the window, its inclusive bbox)
    resize_image(image_nd, image_u8, window, size)       the target crop's network input
    coarse(probs, out, window)                 -> the coarse probabilities over the crop
    focus_masks(coarse, prev_mask, prev_at)    -> the focus rule's mask statistics (rule 35a)
    roi_image(image_nd, image_u8, box, size)   -> the refiner's image crop (RoIAlign)
    roi_features(feature, box, size, scale)    -> the refiner's feature crop (RoIAlign)
    paste(out, coarse, window, box, refined)   -> the output map written over the crop

Windows and boxes are half-open (y1, y2, x1, x2); RoIAlign boxes are (x1, y1, x2, y2).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch

from ..model.roi_sampling import roi_align_box, roi_align_features, roi_align_image
from ..utils import jit
from .kernels import image, maps
from .focus import COARSE_PROB_THRESH, PREV_MASK_THRESHOLD, coarse_mask_of_probs
from .resize import linear_taps, resize_bilinear
from .utils import get_bbox_from_mask

Box = Tuple[int, int, int, int]
# (mask as bool, its inclusive bbox in its window or None): the next click's previous mask
MaskWithBox = Tuple[np.ndarray, Optional[Box]]
# (the XOR of the coarse and previous masks over the crop as uint8, or a function computing
# it; the coarse mask's pixel count; its inclusive bbox in the crop or None; the XOR's row
# runs or None)
FocusMasks = Tuple[Union[np.ndarray, Callable[[], np.ndarray]], int, Optional[Box], object]

# From this many window pixels the numba backend resizes the target crop from the uint8 image
# (measured at 4K inside a click: ATen's kernel on the float image's strided 2160x3435 window
# 2.8 ms, its four taps per output scattered over 89 MB; the kernel reads two rows of the
# 22 MB uint8 image per output row).
RESIZE_IMAGE_MIN_PIXELS = 1 << 20
# From this many box pixels the numba backend samples the refiner's image crop from the uint8
# image (measured, 2 threads, 256x256 output from a 4K image, ms sparse passes -> kernel:
# 400 px square 2.1 -> 1.8, 1000 px 4.4 -> 2.8, 2160x3435 15.2 -> 6.6; below ~300 px the
# fixed cost of the taps makes it slower).
ROI_ALIGN_MIN_PIXELS = 1 << 18


def _area(window: Box) -> int:
    return (window[1] - window[0]) * (window[3] - window[2])


def _crop(window: Box) -> Tuple[slice, slice]:
    return slice(window[0], window[1]), slice(window[2], window[3])


class TorchBackend:
    """PyTorch / NumPy operations; the coarse crop is a (1, 1, h, w) tensor, on the CPU a view
    of the output map's window (interpolated straight into it), on CUDA a device tensor."""

    name = "torch"

    def __init__(self, device: torch.device):
        self.device = device
        self.in_place = device.type == "cpu"  # the coarse crop is written into the output map

    def threshold(self, values: np.ndarray, window: Box, thresh: float) -> MaskWithBox:
        mask = values[_crop(window)] > thresh
        return mask, get_bbox_from_mask(mask)

    def resize_image(self, image_nd: torch.Tensor, image_u8: Optional[np.ndarray], window: Box,
                     size: Tuple[int, int]) -> torch.Tensor:
        """(1, 3, *size) float image crop (bilinear, align_corners) of the half-open window."""
        return resize_bilinear(image_nd[(slice(None), slice(None)) + _crop(window)], size)

    def coarse(self, probs: torch.Tensor, out: np.ndarray, window: Box) -> torch.Tensor:
        """The network's (1, 1, S, S) probabilities resized to the window."""
        size = (window[1] - window[0], window[3] - window[2])
        if not self.in_place:
            return resize_bilinear(probs, size)
        return resize_bilinear(probs, size, out=torch.from_numpy(out)[_crop(window)][None, None])

    def focus_masks(self, coarse: torch.Tensor, prev_mask: np.ndarray,
                    prev_at: Tuple[int, int]) -> FocusMasks:
        """The coarse mask (`coarse_mask_of_probs`, rule 35a) over the crop, thresholded on the
        device and sent to the host, and its XOR with `prev_mask` placed at `prev_at` (crop
        coordinates; clipped), computed only if the rule asks for it."""
        if coarse.device.type == "cpu":
            pred = coarse_mask_of_probs(coarse[0, 0].numpy())
        else:
            pred = coarse_mask_of_probs(coarse[0, 0]).cpu().numpy()
        count = int(np.count_nonzero(pred))

        def xor() -> np.ndarray:
            prev = np.zeros_like(pred)
            (oy, ox), (ph, pw), (h, w) = prev_at, prev_mask.shape, pred.shape
            a0, a1, b0, b1 = max(0, oy), min(h, oy + ph), max(0, ox), min(w, ox + pw)
            if a1 > a0 and b1 > b0:
                prev[a0:a1, b0:b1] = prev_mask[a0 - oy:a1 - oy, b0 - ox:b1 - ox]
            return np.not_equal(pred, prev).view(np.uint8)

        return xor, count, get_bbox_from_mask(pred) if count else None, None

    def roi_image(self, image_nd: torch.Tensor, image_u8: Optional[np.ndarray],
                  box: Tuple[float, float, float, float], size: int) -> torch.Tensor:
        return roi_align_box(image_nd, box, size)

    def roi_features(self, feature: torch.Tensor, box: Tuple[float, float, float, float],
                     size: int, scale: float) -> torch.Tensor:
        return roi_align_box(feature, box, size, spatial_scale=scale)

    def paste(self, out: np.ndarray, coarse: torch.Tensor, window: Box,
              box: Optional[Box] = None, refined: Optional[torch.Tensor] = None
              ) -> Optional[MaskWithBox]:
        """Write the crop into `out[window]`: the coarse probabilities, with sigmoid(refined
        logits (1, 1, R, R) resized to the box) over `box` (inside the window). Returns None:
        the output's threshold is computed when the next click needs it."""
        if box is not None:
            y1, y2, x1, x2 = box
            r0, c0 = window[0], window[2]
            target = coarse[:, :, y1 - r0:y2 - r0, x1 - c0:x2 - c0]
            resize_bilinear(refined, (y2 - y1, x2 - x1), out=target).sigmoid_()
        if not self.in_place:
            out[_crop(window)] = coarse[0, 0].float().cpu().numpy()
        return None


class NumbaBackend(TorchBackend):
    """The compiled kernels on the CPU; the coarse crop is (rows, taps): the network's
    probabilities resized along the rows only (S x w, float32) and the taps of the resize
    across them (`kernels.maps`)."""

    name = "numba"

    def __init__(self, device: torch.device):
        if device.type != "cpu":
            raise ValueError(f"the numba backend runs on the CPU, not on {device}")
        if not jit.ENABLED:
            raise ValueError(f"the numba backend needs numba: {jit.DISABLED_REASON}")
        super().__init__(device)

    def threshold(self, values: np.ndarray, window: Box, thresh: float) -> MaskWithBox:
        mask, _, bbox = maps.threshold_with_bbox(values, window, thresh)
        return mask, bbox

    def resize_image(self, image_nd: torch.Tensor, image_u8: Optional[np.ndarray], window: Box,
                     size: Tuple[int, int]) -> torch.Tensor:
        if image_u8 is None or _area(window) < RESIZE_IMAGE_MIN_PIXELS:
            return super().resize_image(image_nd, image_u8, window, size)
        return image.resize_image(image_u8, window,
                                        linear_taps(window[1] - window[0], size[0]),
                                        linear_taps(window[3] - window[2], size[1]))

    def coarse(self, probs: torch.Tensor, out: np.ndarray, window: Box
               ) -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]:
        rows = self._resize_rows(probs, window[3] - window[2])
        return rows, linear_taps(rows.shape[0], window[1] - window[0])

    def focus_masks(self, coarse: Tuple[np.ndarray, Tuple[np.ndarray, ...]],
                    prev_mask: np.ndarray, prev_at: Tuple[int, int]) -> FocusMasks:
        """One pass over the crop: the coarse mask's count and bbox, and the XOR's row runs
        (the XOR itself computed only if a row has more runs than are kept)."""
        rows, taps = coarse
        return maps.blend_threshold_xor(rows, taps, COARSE_PROB_THRESH, prev_mask,
                                              prev_at, runs=True)

    def roi_image(self, image_nd: torch.Tensor, image_u8: Optional[np.ndarray],
                  box: Tuple[float, float, float, float], size: int) -> torch.Tensor:
        x1, y1, x2, y2 = box
        if image_u8 is None or (y2 - y1) * (x2 - x1) < ROI_ALIGN_MIN_PIXELS:
            return roi_align_box(image_nd, box, size)
        return roi_align_image(image_u8, box, size)

    def roi_features(self, feature: torch.Tensor, box: Tuple[float, float, float, float],
                     size: int, scale: float) -> torch.Tensor:
        return roi_align_features(feature, box, size, scale)

    def paste(self, out: np.ndarray, coarse: Tuple[np.ndarray, Tuple[np.ndarray, ...]],
              window: Box, box: Optional[Box] = None, refined: Optional[torch.Tensor] = None
              ) -> MaskWithBox:
        """The coarse values written only outside the box, the refined logits' separable
        resize, sigmoid and threshold in one pass straight into the box; returns the written
        map's threshold over the window (> PREV_MASK_THRESHOLD) with its bbox."""
        rows, taps = coarse
        r0, c0 = window[0], window[2]
        mask = maps.WindowMask(window, PREV_MASK_THRESHOLD)
        for part in ([window] if box is None else _window_minus_box(window, box)):
            maps.blend_rows(rows, taps, out, part, col0=part[2] - c0,
                                  first_row=part[0] - r0, mask=mask)
        if box is not None:
            y1, y2, x1, x2 = box
            refined_rows = self._resize_rows(refined, x2 - x1)
            maps.blend_rows(refined_rows, linear_taps(refined_rows.shape[0], y2 - y1),
                                  out, box, sigmoid=True, mask=mask)
        values, _, bbox = mask.result()
        return values, bbox

    def _resize_rows(self, tensor: torch.Tensor, width: int) -> np.ndarray:
        """A (1, 1, h, w) float32 CPU map resized along its rows to `width`: (h, width)."""
        src = tensor[0, 0].contiguous().numpy()
        return maps.resize_rows(src, linear_taps(src.shape[1], int(width)))


def _window_minus_box(window: Box, box: Box) -> List[Box]:
    """The half-open `window` minus the half-open `box` inside it, as up to four half-open
    boxes (the rows above and below the box, then left and right of it in its rows)."""
    w0, w1, w2, w3 = window
    b0, b1, b2, b3 = box
    parts = [(w0, b0, w2, w3), (b1, w1, w2, w3), (b0, b1, w2, b2), (b0, b1, b3, w3)]
    return [p for p in parts if p[1] > p[0] and p[3] > p[2]]


BACKENDS = {"torch": TorchBackend, "numba": NumbaBackend}


def select_backend(device: torch.device, name: Optional[str] = None) -> TorchBackend:
    """The backend `name` ('numba', 'torch'), or by default numba on the CPU where numba is
    present and torch otherwise (CUDA, `IGLR_NUMBA=0`)."""
    if name is None:
        name = "numba" if device.type == "cpu" and jit.ENABLED else "torch"
    if name not in BACKENDS:
        raise KeyError(f"unknown predictor backend '{name}'; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](device)
