"""Reading images and masks from disk, with errors that name the file.

    image = read_image("data_GT/flower.jpg")          # HxWx3 uint8 RGB
    mask = read_mask("boundary_GT/flower.bmp")        # HxW uint8, channel 0 of the file
    ids = read_mask("SegmentationObject/x.png", mode="gray_from_color")  # VOC gray levels
    height, width = image_size("data_GT/flower.jpg")  # from the file's header, not decoded
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class DatasetError(Exception):
    """A dataset file or folder is missing, unreadable or inconsistent; the message names it."""


def _imread(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"file '{path}' does not exist")
    # np.fromfile + imdecode copes with any file name (spaces, non-ASCII) on every platform.
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"cannot read file '{path}': {e}") from e
    missing = truncated(buf)
    if missing:
        raise DatasetError(f"cannot decode '{path}': {missing}")
    data = cv2.imdecode(buf, flags) if buf.size else None
    if data is None:
        raise DatasetError(f"cannot decode '{path}': the file is empty, corrupt or not an image")
    return data


def truncated(buf: np.ndarray) -> Optional[str]:
    """What is missing from a JPEG or PNG file (uint8 bytes) that was cut short, else None.
    JPEG: an end-of-image marker (FF D9) after its last start-of-scan (FF DA); libjpeg decodes
    such a file with only a warning on stderr, the missing rows gray (entropy-coded data never
    holds FF D9: FF is stuffed). PNG: the IEND chunk; libpng prints an error line."""
    if buf.size >= 4 and buf[0] == 0xFF and buf[1] == 0xD8:
        data = buf.tobytes()
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            return "the JPEG data is truncated (no end-of-image marker after its last scan)"
    elif buf.size >= 8 and buf[:8].tobytes() == b"\x89PNG\r\n\x1a\n":
        if buf.tobytes().rfind(b"IEND") < 0:
            return "the PNG data is truncated (no IEND chunk)"
    return None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB (OpenCV decoding, BGR->RGB; gray files are expanded)."""
    path = Path(path)
    image = _imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike, mode: str = "channel0") -> np.ndarray:
    """Read a mask file as an HxW array.

    mode:
      - 'channel0': channel 0 of the decoded file (GrabCut/Berkeley/COCO_MVal in IGLR), uint8.
      - 'max': max over channels (DAVIS loader), uint8.
      - 'gray_from_color': read in colour, then BGR->GRAY (PascalVOC SegmentationObject ids).
      - 'unchanged': the stored values (e.g. 16-bit label PNGs); first channel if several.
    """
    path = Path(path)
    if mode == "gray_from_color":
        return cv2.cvtColor(_imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    if mode not in ("channel0", "max", "unchanged"):
        raise ValueError(f"read_mask: unknown mode '{mode}' (channel0, max, gray_from_color, unchanged)")
    data = _imread(path, cv2.IMREAD_UNCHANGED)
    if data.ndim == 3:
        if mode == "max":
            return data.max(axis=2)
        return np.ascontiguousarray(data[:, :, 0])
    return data


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file read from its header (Pillow opens lazily: the pixels
    are not decoded, so this is cheap; a file truncated after its header passes here and fails
    in `read_image`). Raises DatasetError naming the file when it is missing or its header is
    not an image's."""
    from PIL import Image, UnidentifiedImageError  # deferred: only the up-front checks use it
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"file '{path}' does not exist")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"cannot read the header of '{path}': not an image file "
                           f"({type(e).__name__})") from e
    return int(height), int(width)


def check_file_sizes(image_path: str | os.PathLike,
                     mask_paths: Iterable[str | os.PathLike]) -> None:
    """Raise DatasetError naming the file if the image or a mask is missing or not an image, or
    if a mask's size (from its header) differs from its image's."""
    h, w = image_size(image_path)
    for mask_path in mask_paths:
        mh, mw = image_size(mask_path)
        if (mh, mw) != (h, w):
            raise DatasetError(f"mask '{mask_path}' is {mw}x{mh} (WxH) but its image "
                               f"'{image_path}' is {w}x{h}; expected the image's size")


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str | os.PathLike,
                    mask_path: str | os.PathLike) -> None:
    """Raise DatasetError naming both files if the mask is not the image's height and width."""
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetError(
            f"mask '{mask_path}' is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"'{image_path}' is {image.shape[1]}x{image.shape[0]}")


def list_files(folder: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS,
               what: str = "images") -> list[Path]:
    """Sorted files of `folder` whose suffix (case-insensitive) is in `extensions`.

    Raises DatasetError naming the folder when it is missing or holds no such file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"folder '{folder}' does not exist (expected {what} there)")
    exts = {e.lower() for e in extensions}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise DatasetError(f"folder '{folder}' holds no {what} "
                           f"(looked for files ending in {', '.join(sorted(exts))})")
    return files


def find_with_stem(folder: Path, stem: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Path:
    """The file `folder/<stem><ext>` for the first extension that exists (any letter case)."""
    for ext in extensions:
        for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    raise DatasetError(f"no file '{folder / stem}.*' (tried {', '.join(extensions)})")
