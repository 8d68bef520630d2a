"""One image from the command line (the body of `scripts/predict.py`).

    python scripts/predict.py --checkpoint cv_grabcut --image in.jpg \
        --clicks "120,45,+ 300,80,-" --output mask.png --overlay overlay.png

Clicks are "x,y,+" (positive) or "x,y,-" (negative), x = column and y = row in pixels, applied
in order to one object through the session API (`isegm.inference.session`). The mask is written
as an 8-bit PNG (255 object, 0 background).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2

from ..inference.onnx_backend import add_network_arguments, parse_stages
from ..inference.session import MODEL_FREE, ClickOutsideImageError, Segmenter
from ..utils.device import select_device
from ..utils.log import logger, setup_logging
from ..utils.serialization import CheckpointError
from .annotations import blend_overlay, draw_clicks, render_overlay
from .images import MAX_PIXELS, ImageError, read_image_file, write_atomic

_CLICK = re.compile(r"^(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?),([+-])$")


class PredictError(ValueError):
    """Bad command-line input; the message names the argument and what was expected."""


def parse_clicks(text: str) -> List[Tuple[float, float, bool]]:
    """'120,45,+ 300,80,-' -> [(120.0, 45.0, True), (300.0, 80.0, False)] as (x, y, positive)."""
    tokens = text.split()
    if not tokens:
        raise PredictError("--clicks is empty; expected e.g. \"120,45,+ 300,80,-\" "
                           "(x = column, y = row, + positive, - negative)")
    clicks = []
    for token in tokens:
        match = _CLICK.match(token)
        if match is None:
            raise PredictError(f"--clicks: '{token}' is not 'x,y,+' or 'x,y,-' (x = column, "
                               f"y = row in pixels; clicks separated by spaces)")
        clicks.append((float(match.group(1)), float(match.group(2)), match.group(3) == "+"))
    return clicks


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Segment one object of one image from clicks and write its mask as PNG.")
    parser.add_argument("--checkpoint", required=True,
                        help=f"an IGLR checkpoint file, or '{MODEL_FREE}' (classical OpenCV "
                             f"GrabCut, no weights)")
    parser.add_argument("--image", required=True, help="input image (PNG, JPEG, BMP, WebP, TIFF)")
    parser.add_argument("--clicks", required=True,
                        help="clicks in order, e.g. \"120,45,+ 300,80,-\": x (column), y (row), "
                             "+ positive or - negative")
    parser.add_argument("--output", required=True, help="mask PNG to write (255 object, 0 "
                                                        "background)")
    parser.add_argument("--overlay", default=None,
                        help="optional image (.png/.jpg) with the mask and clicks drawn over the "
                             "input")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is present")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse larger images (default {MAX_PIXELS})")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle a checkpoint that needs it in full (it can run code): only "
                             "for files from a source you trust")
    add_network_arguments(parser, export_refiner=False)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    clicks = parse_clicks(args.clicks)
    for name in ("output", "overlay"):
        path = getattr(args, name)
        if path is not None and cv2.haveImageWriter(path) is False:
            raise PredictError(f"--{name} '{path}': cannot write this image type (use .png or .jpg)")
    image = read_image_file(args.image, args.max_pixels)
    try:
        segmenter = Segmenter.from_checkpoint(args.checkpoint, select_device(cpu=args.cpu),
                                              trust=args.trust_checkpoint, backend=args.backend,
                                              onnx_dir=args.onnx_dir,
                                              onnx_stages=parse_stages(args.onnx_stages),
                                              # one image, a few clicks: exporting the refiner
                                              # (3 s) would cost more than it saves
                                              export_refiner=False)
    except (ValueError, FileNotFoundError) as e:
        raise PredictError(f"--backend {args.backend}: {e}") from e
    session = segmenter.new_session()
    session.set_image(image)
    h, w = image.shape[:2]
    for x, y, positive in clicks:
        try:
            mask, _ = session.add_click(x, y, positive)
        except ClickOutsideImageError as e:
            raise PredictError(f"--clicks: {e} ('{args.image}')") from e
    write_image(args.output, mask.astype("uint8") * 255)
    logger.info("%s: %d clicks, mask of %d pixels (%.1f%% of %dx%d) -> %s", segmenter.label,
                len(clicks), int(mask.sum()), 100.0 * mask.mean(), w, h, args.output)
    if args.overlay is not None:
        shown = blend_overlay(image, render_overlay([], mask))
        shown = draw_clicks(shown, [{"x": round(x), "y": round(y), "positive": p}
                                    for x, y, p in clicks])
        write_image(args.overlay, cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        logger.info("overlay -> %s", args.overlay)


def write_image(path: str, array) -> None:
    """Encode by the file's suffix (BGR or gray arrays, as OpenCV) and write atomically."""
    ok, buf = cv2.imencode(Path(path).suffix or ".png", array)
    if not ok:
        raise PredictError(f"cannot encode an image for '{path}' (use .png or .jpg)")
    try:
        write_atomic(path, buf.tobytes())
    except OSError as e:
        raise PredictError(f"cannot write '{path}': {e.strerror or e}") from e


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        run(args)
    except (PredictError, ImageError, CheckpointError) as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 2
    return 0
