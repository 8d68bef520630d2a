"""The annotation server (isegm/demo/server.py) through FastAPI's TestClient: real PNG/JPEG
bytes, real files in tmp_path, the classical predictor."""
import io
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from isegm.demo.annotations import mask_to_rle, rle_to_mask
from isegm.demo.images import encode_png
from isegm.demo.server import (build, create_app, exposure_warning, find_default_checkpoint,
                               parse_args)
from isegm.inference.session import Segmenter
from tests.test_session import two_objects_image

DISK = (30, 45)      # (x, y) inside the red disk
SQUARE = (92, 45)    # inside the green square


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter("cv_grabcut")


def _client(segmenter, tmp_path, **kwargs):
    return TestClient(create_app(segmenter, tmp_path / "out", **kwargs))


def _png(image):
    return encode_png(image)


def _upload(client, data, name="two.png"):
    return client.post("/api/sessions", files={"file": (name, data, "application/octet-stream")})


def _overlay(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    rgba = np.array(Image.open(io.BytesIO(response.content)).convert("RGBA"))
    return rgba, json.loads(response.headers["X-State"])


def test_page_and_info(segmenter, tmp_path):
    client = _client(segmenter, tmp_path, model_note="chosen in a test")
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for element in ('id="image-canvas"', 'id="overlay-canvas"', 'id="undo"', 'id="opacity"',
                    'id="latency"', 'src="/app.js"'):
        assert element in page.text
    assert "createImageBitmap" in client.get("/app.js").text
    info = client.get("/api/info").json()
    assert info["model"] == "classical OpenCV GrabCut (no weights)"
    assert info["note"] == "chosen in a test" and info["folder"] is False
    assert client.get("/api/images").status_code == 404


def test_click_undo_finish_save(segmenter, tmp_path):
    client = _client(segmenter, tmp_path)
    opened = _upload(client, _png(two_objects_image()), "my photo.png").json()
    assert (opened["width"], opened["height"]) == (120, 90)
    sid = opened["session"]
    jpeg = client.get(f"/api/sessions/{sid}/image")
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(jpeg.content, np.uint8), cv2.IMREAD_COLOR).shape == (90, 120, 3)
    empty, state = _overlay(client.get(f"/api/sessions/{sid}/overlay"))
    assert empty.shape == (90, 120, 4) and not empty[..., 3].any() and state["clicks"] == []

    first, state = _overlay(client.post(f"/api/sessions/{sid}/click",
                                        json={"x": DISK[0], "y": DISK[1], "positive": True}))
    assert state["clicks"] == [{"x": 30, "y": 45, "positive": True}] and state["objects"] == 0
    assert first[45, 30, 3] > 0 and first[45, 92, 3] == 0 and first[5, 5, 3] == 0
    assert (first[..., 3] == 255).any()  # the contour is opaque
    # a click outside: a clear 422, and the session goes on
    bad = client.post(f"/api/sessions/{sid}/click", json={"x": 500, "y": 10, "positive": True})
    assert bad.status_code == 422 and "outside the 120x90 image" in bad.json()["detail"]
    second, state = _overlay(client.post(f"/api/sessions/{sid}/click",
                                         json={"x": SQUARE[0], "y": SQUARE[1], "positive": True}))
    assert second[45, 92, 3] > 0 and len(state["clicks"]) == 2
    undone, state = _overlay(client.post(f"/api/sessions/{sid}/undo"))
    np.testing.assert_array_equal(undone, first)
    assert len(state["clicks"]) == 1

    _, state = _overlay(client.post(f"/api/sessions/{sid}/finish"))
    assert state == {"clicks": [], "objects": 1, "predict_ms": state["predict_ms"]}
    assert client.post(f"/api/sessions/{sid}/finish").status_code == 409
    _overlay(client.post(f"/api/sessions/{sid}/click", json={"x": SQUARE[0], "y": SQUARE[1]}))
    third, _ = _overlay(client.post(f"/api/sessions/{sid}/click",
                                    json={"x": 10, "y": 80, "positive": False}))
    assert third[45, 30, 3] > 0 and third[45, 92, 3] > 0
    assert tuple(third[45, 30, :3]) != tuple(third[45, 92, :3])  # two objects, two colours

    saved = client.post(f"/api/sessions/{sid}/save").json()
    assert saved["objects"] == 2 and saved["key"].startswith("upload_my_photo_")
    png_path, json_path = map(lambda p: __import__("pathlib").Path(p), saved["files"])
    assert png_path.parent == tmp_path / "out" and png_path.suffix == ".png"
    labels = cv2.imread(str(png_path), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and labels.shape == (90, 120)
    assert labels[45, 30] == 1 and labels[45, 92] == 2 and labels[5, 5] == 0
    served = cv2.imdecode(np.frombuffer(client.get(f"/api/sessions/{sid}/labels.png").content,
                                        np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(served, labels)
    record = json.loads(json_path.read_text())
    assert record["image"] == "my photo.png" and (record["width"], record["height"]) == (120, 90)
    assert [o["id"] for o in record["objects"]] == [1, 2]
    assert record["objects"][0]["clicks"] == [{"x": 30, "y": 45, "positive": True}]
    assert record["objects"][1]["clicks"] == [{"x": 92, "y": 45, "positive": True},
                                              {"x": 10, "y": 80, "positive": False}]
    for obj in record["objects"]:
        mask = rle_to_mask(obj["segmentation"])
        np.testing.assert_array_equal(mask, labels == obj["id"])
        assert obj["area"] == int(mask.sum())
        x, y, w, h = obj["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_rle_round_trip_and_coco_order():
    mask = np.array([[0, 1, 1], [0, 1, 0]], bool)
    assert mask_to_rle(mask) == {"size": [2, 3], "counts": [2, 3, 1]}  # column-major
    assert mask_to_rle(np.ones((2, 2), bool))["counts"] == [0, 4]
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (40, 33)]:
        m = rng.random(shape) > 0.6
        np.testing.assert_array_equal(rle_to_mask(mask_to_rle(m)), m)


def _png_header_only(width, height):
    """A PNG whose header claims width x height (8-bit gray) with a tiny, wrong IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_bad_uploads_get_clear_errors_and_the_server_keeps_serving(segmenter, tmp_path):
    client = _client(segmenter, tmp_path, max_pixels=200 * 200, max_upload_bytes=200_000)
    not_image = _upload(client, b"%PDF-1.4 not an image", "doc.pdf")
    assert not_image.status_code == 415 and "'doc.pdf' is not an image" in not_image.json()["detail"]
    ok, jpeg = cv2.imencode(".jpg", np.full((150, 180, 3), 100, np.uint8))
    truncated = _upload(client, jpeg.tobytes()[: len(jpeg) // 2], "cut.jpg")
    assert truncated.status_code == 400 and "truncated or corrupt" in truncated.json()["detail"]
    big = _upload(client, _png(np.zeros((210, 200, 3), np.uint8)), "big.png")
    assert big.status_code == 413 and "210 = 42000 pixels" in big.json()["detail"]
    # decompression bombs: refused from the header, nothing decoded
    bomb = _upload(client, _png_header_only(10_000, 5_000), "bomb.png")
    assert bomb.status_code == 413 and "10000x5000 = 50000000 pixels" in bomb.json()["detail"]
    bomb = _upload(client, _png_header_only(100_000, 100_000), "bomb.png")
    assert bomb.status_code == 413 and "decompression bomb" in bomb.json()["detail"]
    huge = _upload(client, b"\x00" * 300_000, "huge.bin")
    assert huge.status_code == 413 and "exceeds" in huge.json()["detail"]
    assert _upload(client, b"", "empty.png").status_code == 400
    # still serving
    assert _upload(client, _png(two_objects_image()), "fine.png").status_code == 200


def test_unknown_expired_and_evicted_sessions(segmenter, tmp_path):
    client = _client(segmenter, tmp_path, max_sessions=2)
    unknown = client.post("/api/sessions/nope/click", json={"x": 1, "y": 1})
    assert unknown.status_code == 404 and "unknown or expired session 'nope'" in unknown.json()["detail"]
    ids = [_upload(client, _png(two_objects_image()), f"i{k}.png").json()["session"]
           for k in range(3)]
    assert len(client.app.state.store) == 2
    gone = client.post(f"/api/sessions/{ids[0]}/click", json={"x": 1, "y": 1})
    assert gone.status_code == 404
    for sid in ids[1:]:
        _overlay(client.post(f"/api/sessions/{sid}/click", json={"x": 30, "y": 45}))
    malformed = client.post(f"/api/sessions/{ids[1]}/click", json={"x": "left"})
    assert malformed.status_code == 422
    assert client.post(f"/api/sessions/{ids[2]}/undo").status_code == 200
    nothing = client.post(f"/api/sessions/{ids[2]}/undo")
    assert nothing.status_code == 409 and "nothing to undo" in nothing.json()["detail"]


def test_sessions_are_bounded_in_memory(segmenter, tmp_path):
    image = two_objects_image()
    one = 2 * image.nbytes + 90 * 120 * 4  # image (+ predictor copy) and one click's map
    client = _client(segmenter, tmp_path, max_session_bytes=int(1.5 * one))
    first = _upload(client, _png(image), "one.png").json()["session"]
    _overlay(client.post(f"/api/sessions/{first}/click", json={"x": 30, "y": 45}))
    assert client.app.state.store.total_bytes() == one
    # a second image would exceed the budget: the least recently used session goes
    second = _upload(client, _png(image), "two.png").json()["session"]
    assert client.get(f"/api/sessions/{first}/overlay").status_code == 404
    _overlay(client.post(f"/api/sessions/{second}/click", json={"x": 30, "y": 45}))
    assert len(client.app.state.store) == 1


def test_image_folder(segmenter, tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in ("a.png", "a.jpg", "b.png", "sub/c.png"):
        cv2.imwrite(str(images / name), cv2.cvtColor(two_objects_image(), cv2.COLOR_RGB2BGR))
    (images / "notes.txt").write_text("not listed")
    (tmp_path / "secret.png").write_bytes(_png(two_objects_image()))
    client = _client(segmenter, tmp_path, images_dir=images)
    listed = client.get("/api/images").json()
    assert listed == [{"name": n, "done": False} for n in ("a.jpg", "a.png", "b.png", "sub/c.png")]
    for name, code in (("../secret.png", 403), (str(tmp_path / "secret.png"), 403),
                       ("sub/../../secret.png", 403), ("missing.png", 404), ("notes.txt", 404)):
        response = client.post("/api/folder/open", json={"name": name})
        assert response.status_code == code, (name, response.text)
    assert "outside the --images folder" in client.post(
        "/api/folder/open", json={"name": "../secret.png"}).json()["detail"]
    for name, key in (("a.png", "a_png"), ("sub/c.png", "sub/c")):
        opened = client.post("/api/folder/open", json={"name": name}).json()
        assert opened["key"] == key
        _overlay(client.post(f"/api/sessions/{opened['session']}/click", json={"x": 30, "y": 45}))
        client.post(f"/api/sessions/{opened['session']}/save").raise_for_status()
    assert (tmp_path / "out" / "a_png.png").is_file() and (tmp_path / "out" / "sub" / "c.json").is_file()
    done = {item["name"]: item["done"] for item in client.get("/api/images").json()}
    assert done == {"a.jpg": False, "a.png": True, "b.png": False, "sub/c.png": True}
    # reopening the folder (a new server on the same output) shows the same
    again = _client(segmenter, tmp_path, images_dir=images)
    assert {i["name"]: i["done"] for i in again.get("/api/images").json()} == done


def test_default_checkpoint_and_fallback(tmp_path, monkeypatch):
    import os
    import time

    import torch
    from isegm.model import IGLRModel, save_is_model

    exps = tmp_path / "exps"
    monkeypatch.setenv("EXPS_PATH", str(exps))
    app, seg = build(parse_args(["--output", str(tmp_path / "out")]))
    assert seg.name == "cv_grabcut"
    info = TestClient(app).get("/api/info").json()
    assert info["note"] == f"no trained checkpoint under {exps}"
    run = exps / "tiny" / "000_x" / "checkpoints"
    run.mkdir(parents=True)
    save_is_model(IGLRModel("mit_b0", infer_size=64, refine_size=32), run / "old.pth")
    torch.save({"weights": torch.zeros(1)}, run / "foreign.pth")
    now = time.time()
    os.utime(run / "old.pth", (now - 100, now - 100))
    assert find_default_checkpoint(exps) == run / "foreign.pth"
    app, seg = build(parse_args(["--output", str(tmp_path / "out")]))
    assert seg.name == "cv_grabcut"
    assert "not an IGLR checkpoint" in TestClient(app).get("/api/info").json()["note"]
    (run / "foreign.pth").unlink()
    app, seg = build(parse_args(["--output", str(tmp_path / "out"), "--cpu"]))
    assert seg.name == "iglr" and seg.label == "iglr: 000_x/old.pth"
    info = TestClient(app).get("/api/info").json()
    assert info["model"] == "iglr: 000_x/old.pth" and info["note"].startswith("the newest checkpoint")


def test_listening_beyond_loopback_is_warned_about():
    assert exposure_warning("127.0.0.1") is None and exposure_warning("::1") is None
    assert "0.0.0.0, not on loopback" in exposure_warning("0.0.0.0")
    args = parse_args([])
    assert (args.host, args.port, args.checkpoint) == ("127.0.0.1", 8000, None)
