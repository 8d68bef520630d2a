"""The browser annotation tool (the body of `scripts/demo.py`): a FastAPI app and its page.

    python scripts/demo.py [--checkpoint CKPT] [--images DIR] [--output DIR] [--port 8000]

The page (static/index.html, static/app.js; no build step) shows the image on a canvas; left
click = positive, right click or shift-click = negative. Every click, undo, reset and finish
answers with the overlay as an RGBA PNG (objects coloured, white contours) and the session's
state in the `X-State` header (JSON: clicks, objects, predictor milliseconds).

HTTP API (JSON errors as {"detail": "..."}):
  GET  /api/info                          model, image folder, limits
  GET  /api/images                        [{"name", "done"}] of --images (done: its JSON saved)
  POST /api/sessions                      multipart `file`: a new session on an uploaded image
  POST /api/folder/open                   {"name": relative path in --images}: a new session
  GET  /api/sessions/{id}/image           the decoded image as JPEG
  GET  /api/sessions/{id}/overlay         the current overlay PNG (+ X-State)
  POST /api/sessions/{id}/click           {"x", "y", "positive"}: overlay PNG (+ X-State)
  POST /api/sessions/{id}/undo|reset|finish   overlay PNG (+ X-State)
  GET  /api/sessions/{id}/labels.png      the label map PNG
  POST /api/sessions/{id}/save            writes <key>.png and <key>.json to --output

Limits: images over `max_pixels` (default 16 MP; judged from the header before decoding) get
413, uploads over `max_upload_bytes` 413, non-images 415, truncated files 400, clicks outside
the image 422, unknown or evicted sessions 404, paths outside --images 403. At most
`max_sessions` sessions and `max_session_bytes` of their arrays are kept; the least recently
used are evicted first. Uploads are decoded in memory (the multipart parser may spool large
bodies to the system's temporary folder) and never reach torch.load.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel

from ..inference.onnx_backend import add_network_arguments, parse_stages
from ..inference.session import (MODEL_FREE, ClickOutsideImageError, Segmenter, Session, SessionClosedError,
                                 SessionError, clicks_xy)
from ..utils.log import logger
from ..utils.serialization import CheckpointError
from .annotations import object_record, objects_layer, overlay_indices, save_annotation
from .annotations import overlay_png as encode_overlay
from .images import (IMAGE_SUFFIXES, MAX_PIXELS, ImageError, decode_image, encode_jpeg,
                     encode_png, read_image_file)

STATIC = Path(__file__).resolve().parent / "static"
MAX_SESSIONS = 16
MAX_SESSION_BYTES = 2 << 30
MAX_UPLOAD_BYTES = 64 << 20


@dataclass
class Entry:
    """A served session: the image's display name and output key."""

    session: Session
    name: str
    key: str
    last_used: float = field(default_factory=time.monotonic)
    # the finished objects' overlay layer and the masks it was drawn from
    layer: Optional[np.ndarray] = None
    layer_masks: List[np.ndarray] = field(default_factory=list)

    def objects_layer(self) -> np.ndarray:
        """The overlay indices of the finished objects, redrawn only when they changed."""
        masks = [o.mask for o in self.session.objects]
        if self.layer is None or len(masks) != len(self.layer_masks) \
                or any(a is not b for a, b in zip(masks, self.layer_masks)):
            self.layer = objects_layer(masks, self.session.shape)
            self.layer_masks = masks
        return self.layer


class SessionStore:
    """Sessions by id, least recently used first; evicts past `max_sessions` or `max_bytes`."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, max_bytes: int = MAX_SESSION_BYTES):
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, session: Session, name: str, key: str) -> str:
        sid = uuid.uuid4().hex
        with self._lock:
            self._entries[sid] = Entry(session, name, key)
        self.enforce(keep=sid)
        return sid

    def get(self, sid: str) -> Entry:
        with self._lock:
            entry = self._entries.get(sid)
            if entry is None:
                raise HTTPException(404, f"unknown or expired session '{sid}' (at most "
                                         f"{self.max_sessions} sessions are kept; open the image "
                                         f"again)")
            self._entries.move_to_end(sid)
            entry.last_used = time.monotonic()
            return entry

    def enforce(self, keep: Optional[str] = None) -> None:
        """Evict the least recently used sessions (never `keep`) until within the limits."""
        with self._lock:
            while len(self._entries) > 1:
                total = sum(e.session.nbytes for e in self._entries.values())
                if len(self._entries) <= self.max_sessions and total <= self.max_bytes:
                    break
                sid = next(iter(self._entries))
                if sid == keep:
                    self._entries.move_to_end(sid)
                    sid = next(iter(self._entries))
                entry = self._entries.pop(sid)
                entry.session.close()
                logger.info("demo: evicted session %s (%s) to stay within %d sessions / %d MB",
                            sid[:8], entry.name, self.max_sessions, self.max_bytes >> 20)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.session.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


class ImageFolder:
    """The images under `root` (recursive), by relative POSIX path, and their output keys."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"--images '{root}' is not a folder")

    def names(self) -> List[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                      if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(self.root).parts))

    def path_of(self, name: str) -> Path:
        """The file of `name`; 403 for a path leaving the folder, 404 for a missing image."""
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or Path(name).is_absolute():
            raise HTTPException(403, f"'{name}' lies outside the --images folder")
        if name not in self.names():
            raise HTTPException(404, f"'{name}' is not an image of the --images folder")
        return path

    def key_of(self, name: str) -> str:
        """The output key: the relative path without suffix, or with '_<suffix>' when another
        image shares that stem (a.jpg and a.png -> a_jpg, a_png)."""
        stem = str(Path(name).with_suffix(""))
        twins = [n for n in self.names() if str(Path(n).with_suffix("")) == stem]
        return stem if len(twins) <= 1 else f"{stem}_{Path(name).suffix.lstrip('.').lower()}"


class ClickBody(BaseModel):
    x: float
    y: float
    positive: bool = True


class OpenBody(BaseModel):
    name: str


def _safe_stem(filename: str) -> str:
    stem = Path(filename.replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:60] or "image"


def create_app(segmenter: Segmenter, output_dir: Path, images_dir: Optional[Path] = None,
               model_note: str = "", max_sessions: int = MAX_SESSIONS,
               max_session_bytes: int = MAX_SESSION_BYTES, max_pixels: int = MAX_PIXELS,
               max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The app. `model_note` tells the page why this model is in use (e.g. the default)."""
    app = FastAPI(title="IGLR annotation tool", docs_url=None, redoc_url=None)
    store = SessionStore(max_sessions, max_session_bytes)
    folder = ImageFolder(images_dir) if images_dir is not None else None
    output_dir = Path(output_dir)
    app.state.store = store
    app.state.segmenter = segmenter

    @app.middleware("http")
    async def limit_upload_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length is not None and length.isdigit() \
                and int(length) > max_upload_bytes:
            return JSONResponse({"detail": f"upload of {int(length)} bytes exceeds the limit of "
                                           f"{max_upload_bytes} bytes"}, status_code=413)
        return await call_next(request)

    def state_response(entry: Entry, body: bytes, extra: Optional[Dict[str, Any]] = None
                       ) -> Response:
        session = entry.session
        state = {"clicks": clicks_xy(session.clicks),
                 "objects": len(session.objects),
                 "predict_ms": round(1000 * session.last_predict_s, 2)}
        state.update(extra or {})
        return Response(body, media_type="image/png",
                        headers={"X-State": json.dumps(state), "Cache-Control": "no-store"})

    def overlay_png(entry: Entry) -> bytes:
        session = entry.session
        return encode_overlay(overlay_indices([], session.current_mask(), session.shape,
                                              layer=entry.objects_layer()))

    def run(entry: Entry, action) -> Any:
        try:
            return action()
        except SessionClosedError as e:
            raise HTTPException(404, f"session expired ({e}); open the image again") from e
        except ClickOutsideImageError as e:
            raise HTTPException(422, str(e)) from e
        except SessionError as e:
            raise HTTPException(409, str(e)) from e

    def open_session(image: np.ndarray, name: str, key: str) -> Dict[str, Any]:
        session = segmenter.new_session()
        session.set_image(image)
        sid = store.add(session, name, key)
        return {"session": sid, "name": name, "key": key, "width": int(image.shape[1]),
                "height": int(image.shape[0])}

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/app.js")
    def script() -> FileResponse:
        return FileResponse(STATIC / "app.js", media_type="text/javascript")

    @app.get("/api/info")
    def info() -> Dict[str, Any]:
        return {"model": segmenter.label, "predictor": segmenter.name, "note": model_note,
                "device": str(segmenter.device), "folder": folder is not None,
                "output": str(output_dir), "max_pixels": max_pixels,
                "max_upload_bytes": max_upload_bytes}

    @app.get("/api/images")
    def images() -> List[Dict[str, Any]]:
        if folder is None:
            raise HTTPException(404, "no image folder: start the tool with --images DIR")
        return [{"name": n, "done": (output_dir / f"{folder.key_of(n)}.json").is_file()}
                for n in folder.names()]

    @app.post("/api/sessions")
    def upload(file: UploadFile = File(...)) -> Dict[str, Any]:
        data = file.file.read(max_upload_bytes + 1)
        name = file.filename or "upload"
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"'{name}' exceeds the upload limit of {max_upload_bytes} "
                                     f"bytes")
        try:
            image = decode_image(data, name, max_pixels)
        except ImageError as e:
            raise HTTPException(e.status, str(e)) from e
        key = f"upload_{_safe_stem(name)}_{hashlib.sha1(data).hexdigest()[:8]}"
        return open_session(image, name, key)

    @app.post("/api/folder/open")
    def open_folder_image(body: OpenBody) -> Dict[str, Any]:
        if folder is None:
            raise HTTPException(404, "no image folder: start the tool with --images DIR")
        path = folder.path_of(body.name)
        try:
            image = read_image_file(path, max_pixels)
        except ImageError as e:
            raise HTTPException(e.status, str(e)) from e
        return open_session(image, body.name, folder.key_of(body.name))

    @app.get("/api/sessions/{sid}/image")
    def image(sid: str) -> Response:
        entry = store.get(sid)
        img = run(entry, lambda: entry.session.image)
        if img is None:
            raise HTTPException(404, f"session '{sid}' has expired; open the image again")
        return Response(encode_jpeg(img), media_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})

    @app.get("/api/sessions/{sid}/overlay")
    def overlay(sid: str) -> Response:
        entry = store.get(sid)
        return state_response(entry, run(entry, lambda: overlay_png(entry)))

    @app.post("/api/sessions/{sid}/click")
    def click(sid: str, body: ClickBody) -> Response:
        entry = store.get(sid)
        start = time.perf_counter()

        def action():
            entry.session.add_click(body.x, body.y, body.positive)
            return overlay_png(entry)

        png = run(entry, action)
        store.enforce(keep=sid)
        return state_response(entry, png, {"server_ms": round(1000 * (time.perf_counter() - start), 2)})

    def simple_action(name: str):
        def endpoint(sid: str) -> Response:
            entry = store.get(sid)

            def action():
                getattr(entry.session, name)()
                return overlay_png(entry)

            return state_response(entry, run(entry, action))

        endpoint.__name__ = f"session_{name}"
        return endpoint

    for action_name, method in (("undo", "undo"), ("reset", "reset"), ("finish", "finish_object")):
        app.post(f"/api/sessions/{{sid}}/{action_name}")(simple_action(method))

    @app.get("/api/sessions/{sid}/labels.png")
    def labels(sid: str) -> Response:
        entry = store.get(sid)
        return Response(encode_png(run(entry, entry.session.label_map)), media_type="image/png")

    @app.post("/api/sessions/{sid}/save")
    def save(sid: str) -> Dict[str, Any]:
        entry = store.get(sid)
        session = entry.session

        def collect() -> Tuple[np.ndarray, List[Dict[str, Any]]]:
            label_map, objects = session.export()
            return label_map, [object_record(k, o.mask, o.clicks_xy())
                               for k, o in enumerate(objects, start=1)]

        label_map, records = run(entry, collect)
        try:
            paths = save_annotation(output_dir, entry.key, entry.name, label_map, records,
                                    segmenter.label)
        except OSError as e:
            raise HTTPException(500, f"cannot write to --output '{output_dir}': "
                                     f"{e.strerror or e}") from e
        logger.info("demo: saved %d objects of '%s' to %s", len(records), entry.name, paths[0])
        return {"files": [str(p) for p in paths], "objects": len(records), "key": entry.key}

    return app


def find_default_checkpoint(exps_root: Path) -> Optional[Path]:
    """The newest (by modification time) *.pth under `exps_root`, or None."""
    if not exps_root.is_dir():
        return None
    found = [p for p in exps_root.rglob("*.pth") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class BackgroundServer:
    """uvicorn serving `app` from a thread on `host`, on a free port (or `port`); a context
    manager that stops it on exit.

        with BackgroundServer(app) as url:      # e.g. http://127.0.0.1:41237
            ...
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 30.0):
        import socket

        import uvicorn

        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.start_timeout = start_timeout

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the demo server did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.sock.close()

    def __exit__(self, *exc) -> None:
        self.stop()


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str) -> Optional[str]:
    """The log warning for a listening address other than loopback, else None."""
    if host in LOOPBACK:
        return None
    return (f"demo: listening on {host}, not on loopback: anyone who can reach this address can "
            f"upload images and write masks to --output (there is no authentication)")


def parse_args(argv: Optional[List[str]] = None):
    import argparse

    parser = argparse.ArgumentParser(
        description="Browser annotation tool: click objects, save PNG label maps + JSON (COCO RLE).")
    parser.add_argument("--checkpoint", default=None,
                        help="an IGLR checkpoint file or 'cv_grabcut' (classical, no weights); "
                             "default: the newest *.pth under EXPS_PATH (experiments/), else "
                             "cv_grabcut")
    parser.add_argument("--images", default=None, help="a folder of images to walk through")
    parser.add_argument("--output", default=None,
                        help="where masks are saved (default: EXPS_PATH/annotations)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default loopback only; anything else exposes "
                             "the tool, without authentication, to the network)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is present")
    parser.add_argument("--max-sessions", type=int, default=MAX_SESSIONS,
                        help=f"sessions (images) kept open, least recently used evicted "
                             f"(default {MAX_SESSIONS})")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"largest image accepted, in pixels (default {MAX_PIXELS})")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle the --checkpoint file in full if it needs it (it can run "
                             "code): only for files from a source you trust; never applies to "
                             "the default checkpoint or to anything uploaded")
    add_network_arguments(parser)
    args = parser.parse_args(argv)
    if (args.backend == "onnx" or args.onnx_dir) and args.checkpoint is None:
        parser.error(f"--backend {args.backend} with an export folder needs --checkpoint (the "
                     f"model of --onnx-dir)")
    return args


def build(args) -> Tuple[FastAPI, Segmenter]:
    """Load the model (or pick the default), warm it up and create the app."""
    from ..utils.config import load_config
    from ..utils.device import select_device

    cfg = load_config()
    exps = cfg.resolve("EXPS_PATH")
    device = select_device(cpu=args.cpu)
    if args.checkpoint is not None:
        segmenter = Segmenter.from_checkpoint(args.checkpoint, device,
                                              trust=args.trust_checkpoint,
                                              backend=args.backend, onnx_dir=args.onnx_dir,
                                              onnx_stages=parse_stages(args.onnx_stages))
        note = "chosen with --checkpoint"
    else:
        newest = find_default_checkpoint(exps)
        segmenter, note = None, f"no trained checkpoint under {exps}"
        if newest is not None:
            try:
                segmenter = Segmenter.from_checkpoint(newest, device, backend=args.backend)
                note = f"the newest checkpoint under {exps}"
            except CheckpointError as e:
                logger.warning("demo: the newest checkpoint is not usable (%s); using the "
                               "classical predictor", e)
                note = f"the newest checkpoint under {exps} is not an IGLR checkpoint"
        if segmenter is None:
            segmenter = Segmenter.from_checkpoint(MODEL_FREE)
    logger.info("demo: model %s (%s) on %s", segmenter.label, note, segmenter.device)
    seconds = segmenter.warm_up()
    logger.info("demo: warm-up (two clicks on a 480x854 image) took %.2f s", seconds)
    output = Path(args.output) if args.output else exps / "annotations"
    app = create_app(segmenter, output, Path(args.images) if args.images else None, note,
                     max_sessions=args.max_sessions, max_pixels=args.max_pixels)
    return app, segmenter


def main(argv: Optional[List[str]] = None) -> int:
    import sys

    import uvicorn

    from ..utils.log import setup_logging

    args = parse_args(argv)
    setup_logging()
    try:
        app, _ = build(args)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 2
    warning = exposure_warning(args.host)
    if warning:
        logger.warning(warning)
    logger.info("demo: open http://%s:%d/ in a browser", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


__all__ = ["BackgroundServer", "ImageFolder", "exposure_warning", "MAX_SESSIONS", "MAX_SESSION_BYTES", "MAX_UPLOAD_BYTES", "SessionStore",
           "build", "create_app", "find_default_checkpoint", "main", "parse_args"]
