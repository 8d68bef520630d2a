"""Reading images and masks from disk, with errors that name the file.

    image = read_image("data_GT/flower.jpg")          # HxWx3 uint8 RGB
    mask = read_mask("boundary_GT/flower.bmp")        # HxW uint8, channel 0 of the file
    ids = read_mask("SegmentationObject/x.png", mode="gray_from_color")  # VOC gray levels
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

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
    data = cv2.imdecode(buf, flags) if buf.size else None
    if data is None:
        raise DatasetError(f"cannot decode '{path}': the file is empty, corrupt or not an image")
    return data


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
