"""Measure the annotation tool in headless Chromium: click -> overlay drawn, against the
predictor's own time, on a 480x854 image; and the first click after the tool starts.

    python scripts/measure_demo.py --checkpoint cv_grabcut --clicks 10
    python scripts/measure_demo.py --untrained mit_b0 --clicks 10      # IGLR B0 architecture
    python scripts/measure_demo.py --image photo.jpg --screenshot assets/demo.png

Start: model loading + warm-up (`Segmenter.warm_up`, as scripts/demo.py does) until the server
answers. Then the page is opened, the image uploaded and `--clicks` real mouse clicks made;
per click the page records mousedown -> overlay PNG decoded and drawn on the canvas
(`window.demo.lastLatencyMs`), and the server reports the predictor's time inside the session
(`predict_ms`). After each browser click, the same click is timed on a fresh predictor driven
exactly as the evaluator drives it (`get_prediction` per click, no server): the predictor's
own time, under the same load. Both run in worker threads (the server's endpoints run in its
thread pool). Printed: medians over clicks 2.. (the first click separately), and the round
trip's overhead over the predictor, paired click by click.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from isegm.demo.browser import click_pixel, headless_chromium, upload, wait_until  # noqa: E402
from isegm.demo.images import read_image_file  # noqa: E402
from isegm.demo.server import BackgroundServer, create_app  # noqa: E402
from isegm.inference.clicker import Click, Clicker  # noqa: E402
from isegm.inference.session import Segmenter  # noqa: E402

# click positions as fractions of (width, height), and their polarity
PATTERN = [(0.50, 0.50, True), (0.10, 0.10, False), (0.62, 0.42, True), (0.30, 0.80, False),
           (0.45, 0.62, True), (0.85, 0.20, False), (0.55, 0.35, True), (0.20, 0.50, False),
           (0.40, 0.45, True), (0.75, 0.75, False), (0.52, 0.58, True), (0.90, 0.90, False)]


def test_image(path: str | None, height: int, width: int) -> np.ndarray:
    """The image to click on, resized to height x width (a synthetic scene without --image)."""
    if path is not None:
        return cv2.resize(read_image_file(path), (width, height), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 4)) ** 2 < 1
    rng = np.random.default_rng(0)
    image = np.where(inside[..., None], [190, 70, 50], [40, 100, 150]).astype(np.float32)
    return (image + rng.normal(0, 12, image.shape)).clip(0, 255).astype(np.uint8)


def load(args) -> Segmenter:
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    if args.untrained:
        from isegm.model import IGLRModel, save_is_model

        torch.manual_seed(0)
        path = Path(tempfile.mkdtemp(prefix="measure-demo-")) / f"untrained_{args.untrained}.pth"
        save_is_model(IGLRModel(args.untrained, infer_size=256, refine_size=256), path)
        return Segmenter.from_checkpoint(path, device)
    return Segmenter.from_checkpoint(args.checkpoint, device)


class PredictorAlone:
    """A fresh predictor driven as the evaluator drives it (one `get_prediction` per click), in
    one worker thread as the server runs it; `click` times one click, interleaved with the
    browser's so that both see the same machine load. (On a loaded CPU, PyTorch's OpenMP team
    of the main thread was measured 7-10x slower than the same work in a worker thread.)"""

    def __init__(self, segmenter: Segmenter, image: np.ndarray):
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.predictor = self.pool.submit(segmenter.new_predictor).result()
        self.clicker = Clicker()
        self.pool.submit(self._set_image, image).result()

    def _set_image(self, image: np.ndarray) -> None:
        with torch.no_grad():
            self.predictor.set_image(image)

    def _click(self, x: int, y: int, positive: bool) -> float:
        self.clicker.add_click(Click(is_positive=positive, coords=(y, x)))
        with torch.no_grad():
            start = time.perf_counter()
            self.predictor.get_prediction(self.clicker)
            return time.perf_counter() - start

    def click(self, x: int, y: int, positive: bool) -> float:
        return self.pool.submit(self._click, x, y, positive).result()

    def close(self) -> None:
        self.pool.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="cv_grabcut")
    parser.add_argument("--untrained", default=None, metavar="BACKBONE",
                        help="time an untrained IGLR model of this backbone (e.g. mit_b0) at "
                             "infer/refine size 256 instead of --checkpoint")
    parser.add_argument("--image", default=None, help="image to use (resized to --size)")
    parser.add_argument("--size", default="480x854", help="HxW of the test image")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--screenshot", default=None, help="save a screenshot of the page here")
    parser.add_argument("--json", default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    clicks = [(int(fx * (width - 1)), int(fy * (height - 1)), p)
              for fx, fy, p in (PATTERN * (args.clicks // len(PATTERN) + 1))[:args.clicks]]

    with tempfile.TemporaryDirectory(prefix="measure-demo-") as tmp:
        tmp = Path(tmp)
        image = test_image(args.image, height, width)
        image_path = tmp / "image.png"
        cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

        start = time.perf_counter()
        segmenter = load(args)
        warm_s = segmenter.warm_up()
        app = create_app(segmenter, tmp / "out")
        with BackgroundServer(app) as url:
            ready_s = time.perf_counter() - start
            driver = headless_chromium(tmp / "profile", window=(width + 300, height + 140))
            try:
                driver.get(url)
                wait_until(driver, lambda d: d.find_element("id", "model").text != "…", "the page")
                upload(driver, image_path)
                round_trip, in_server, server, alone = [], [], [], []
                standalone = PredictorAlone(segmenter, image)
                for x, y, positive in clicks:
                    click_pixel(driver, x, y, "left" if positive else "right")
                    stats = driver.execute_script(
                        "return [window.demo.lastLatencyMs, window.demo.lastPredictMs, "
                        "window.demo.lastServerMs]")
                    round_trip.append(stats[0])
                    in_server.append(stats[1])
                    server.append(stats[2])
                    alone.append(1000 * standalone.click(x, y, positive))
                standalone.close()
                if args.screenshot:
                    driver.save_screenshot(args.screenshot)
            finally:
                driver.quit()

    def med(values):
        return statistics.median(values[1:]) if len(values) > 1 else values[0]

    figures = {
        "model": segmenter.label, "device": str(segmenter.device), "image": f"{height}x{width}",
        "clicks": len(clicks), "threads": torch.get_num_threads(),
        "start_to_ready_s": round(ready_s, 3), "warm_up_s": round(warm_s, 3),
        "first_click_round_trip_ms": round(round_trip[0], 1),
        "first_click_predictor_ms": round(in_server[0], 1),
        "median_round_trip_ms": round(med(round_trip), 1),
        "median_server_ms": round(med(server), 1),
        "median_predictor_in_session_ms": round(med(in_server), 1),
        "median_predictor_alone_ms": round(med(alone), 1),
        "median_overhead_ms": round(statistics.median(
            [r - p for r, p in zip(round_trip[1:], in_server[1:])] or [0.0]), 1),
        "median_overhead_vs_alone_ms": round(statistics.median(
            [r - a for r, a in zip(round_trip[1:], alone[1:])] or [0.0]), 1),
        "round_trip_ms": [round(v, 1) for v in round_trip],
        "predictor_in_session_ms": [round(v, 1) for v in in_server],
        "predictor_alone_ms": [round(v, 1) for v in alone],
    }
    print(f"model {figures['model']} on {figures['device']}, {figures['image']} image, "
          f"{figures['clicks']} clicks, {figures['threads']} threads")
    print(f"start -> ready (load + warm-up): {ready_s:.2f} s (warm-up {warm_s:.2f} s)")
    print(f"first click after start: round trip {round_trip[0]:.0f} ms "
          f"(predictor {in_server[0]:.0f} ms)")
    print(f"clicks 2..{len(clicks)}, medians: round trip {figures['median_round_trip_ms']} ms, "
          f"server {figures['median_server_ms']} ms, predictor in session "
          f"{figures['median_predictor_in_session_ms']} ms, predictor alone "
          f"{figures['median_predictor_alone_ms']} ms; round trip - predictor: "
          f"{figures['median_overhead_ms']} ms (in session), "
          f"{figures['median_overhead_vs_alone_ms']} ms (alone)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
