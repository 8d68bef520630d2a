"""Compiled resize of an image window read from the uint8 HxWxC image (a quarter of the float
image's bytes): the network's input of a large target crop (the predictor's numba backend)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ...utils.jit import njit_parallel, prange

@njit_parallel
def _resize_image_kernel(image, channels, r0, c0, y_low, y_high, y_wl, y_wh, x_low, x_high,
                         x_wl, x_wh, scale, out):
    oh = len(y_low)
    ow = len(x_low)
    for i in prange(oh):
        top = image[r0 + y_low[i]]
        bottom = image[r0 + y_high[i]]
        u = y_wl[i]
        v = y_wh[i]
        for j in range(ow):
            a = (c0 + x_low[j]) * channels
            b = (c0 + x_high[j]) * channels
            p = x_wl[j]
            q = x_wh[j]
            for ch in range(channels):
                out[ch, i, j] = (u * (p * np.float32(top[a + ch]) + q * np.float32(top[b + ch]))
                                 + v * (p * np.float32(bottom[a + ch])
                                        + q * np.float32(bottom[b + ch]))) * scale


# From this many window pixels the predictor resizes the target crop from the uint8 image
# (measured at 4K inside a click: ATen's kernel on the float image's strided 2160x3435 window
# 2.8 ms, its four taps per output scattered over 89 MB; this kernel reads two rows of the

def resize_image(image: np.ndarray, window: Tuple[int, int, int, int], taps_y, taps_x,
                 scale: float = 1.0 / 255.0):
    """align_corners=True bilinear resize of image[r0:r1, c0:c1] * `scale` (uint8 H x W x C,
    C-contiguous; `window` half-open) to (len(taps_y[0]), len(taps_x[0])) with the taps of
    `resize.linear_taps` (window size -> output size): a (1, C, h, w) float32 tensor,
    ATen's bilinear kernel on the float image to float rounding."""
    if image.ndim != 3 or image.dtype != np.uint8 or not image.flags.c_contiguous:
        raise ValueError(f"resize_image: expected a C-contiguous HxWxC uint8 image, got "
                         f"{image.dtype} {image.shape}")
    h, w, c = image.shape
    r0, r1, c0, c1 = window
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        raise ValueError(f"resize_image: window {window} outside the {h}x{w} image")
    out = np.empty((c, len(taps_y[0]), len(taps_x[0])), np.float32)
    _resize_image_kernel(image.reshape(h, w * c), c, r0, c0, *taps_y, *taps_x,
                         np.float32(scale), out)
    return torch.from_numpy(out)[None]

