"""Images from untrusted bytes: the size is read from the header before anything is decoded.

    image = decode_image(data, "upload.jpg", max_pixels=MAX_PIXELS)    # HxWx3 uint8 RGB
    image = read_image_file(path)                                        # the same from a file
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image, ImageOps

# 16 megapixels (e.g. 4912x3264): larger images are refused, not decoded
MAX_PIXELS = 16_000_000
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """Bytes that are not a usable image; `status` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """HxWx3 uint8 RGB from encoded bytes (PNG, JPEG, BMP, WebP, TIFF), EXIF orientation
    applied. Raises `ImageError` for a non-image (415), a truncated or corrupt file (400) or
    one over `max_pixels` (413), judged from the header before the pixels are decoded."""
    if not data:
        raise ImageError(f"'{name}' is empty, expected an image file", 400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise ImageError(f"'{name}' is larger than allowed ({e})", 413) from e
        raise ImageError(f"'{name}' is not an image (expected one of "
                         f"{', '.join(IMAGE_FORMATS)})", 415) from e
    except (OSError, ValueError, SyntaxError) as e:  # a recognised header cut short
        raise ImageError(f"'{name}' could not be decoded (truncated or corrupt): {e}", 400) from e
    width, height = pil.size
    if width * height > max_pixels:
        raise ImageError(f"'{name}' has {width}x{height} = {width * height} pixels, more than the "
                         f"limit of {max_pixels}", 413)
    if width < 1 or height < 1:
        raise ImageError(f"'{name}' has no pixels ({width}x{height})", 400)
    try:
        pil.load()
        pil = ImageOps.exif_transpose(pil)
        rgb = np.array(pil.convert("RGB"), dtype=np.uint8)  # a writable copy
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"'{name}' could not be decoded (truncated or corrupt): {e}", 400) from e
    return rgb


def read_image_file(path: Union[str, os.PathLike], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`decode_image` of a file; a missing or unreadable file raises `ImageError` naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read image '{path}': {e.strerror or e}", 404) from e
    return decode_image(data, str(path), max_pixels)


def encode_png(array: np.ndarray, compression: int = 1) -> bytes:
    """PNG bytes of an HxW (uint8/uint16 gray), HxWx3 RGB or HxWx4 RGBA uint8 array."""
    array = np.asarray(array)
    if array.ndim == 3:
        code = cv2.COLOR_RGB2BGR if array.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        array = cv2.cvtColor(array, code)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {array.shape}")
    return buf.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    """JPEG bytes of an HxWx3 RGB uint8 image."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def write_atomic(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
