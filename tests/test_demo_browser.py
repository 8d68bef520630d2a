"""The annotation tool end to end in headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium): upload, clicks (left, right, shift), overlay drawn and changed, undo,
finish, save, the folder walk. Real models: the classical predictor and an IGLR checkpoint
trained for a few steps here. Screenshots stay in the test's tmp_path."""
import base64
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from isegm.demo.browser import CHROMIUM, headless_chromium
from isegm.demo.server import BackgroundServer, create_app
from isegm.inference.session import Segmenter

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: install Debian's "
                       f"'chromium' and 'chromium-driver' (scripts/setup.sh does)"),
]

REPO = Path(__file__).resolve().parents[1]
PENGUIN = "106024.jpg"          # GrabCut: a penguin in the middle, 481x321
INSIDE = (230, 200)             # (x, y) on the penguin
OUTSIDE = (60, 290)             # on the rocks, left of it
SKY = (60, 40)
WAIT_S = 120


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: F401 (selenium present)

    d = headless_chromium(tmp_path_factory.mktemp("chromium-profile"))
    d.set_page_load_timeout(60)
    d.set_script_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """An IGLR checkpoint trained for 4 steps (B0 at 64x64) by the real training entry point."""
    import os

    from isegm.engine import launch

    exps = tmp_path_factory.mktemp("exps")
    old = os.environ.get("EXPS_PATH")
    os.environ["EXPS_PATH"] = str(exps)
    try:
        rc = launch.main([str(REPO / "tests" / "test_train_configs" / "tiny_synthetic.py"), "--cpu",
                          "--workers=0", "--exp-name=demo", "--seed=1"])
    finally:
        if old is None:
            del os.environ["EXPS_PATH"]
        else:
            os.environ["EXPS_PATH"] = old
    assert rc == 0
    (path,) = exps.rglob("last_checkpoint.pth")
    return path


def _wait(driver, condition, what):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def _idle(driver):
    _wait(driver, lambda d: d.execute_script("return window.demo && window.demo.busy === 0"),
          "the page's requests to finish")


def _status(driver):
    return driver.find_element("id", "status")


def _canvas_rgba(driver, canvas_id="overlay-canvas"):
    """The canvas' pixels (HxWx4 uint8) as the page holds them."""
    url = driver.execute_script(f"return document.getElementById('{canvas_id}').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED),
                        cv2.COLOR_BGRA2RGBA)


def _click(driver, x, y, kind="left"):
    """Click image pixel (x, y) on the page's canvas; kind: left, right or shift. Returns the
    overlay's version after the page drew the answer."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    canvas = driver.find_element("id", "clicks-canvas")
    version = driver.execute_script("return window.demo.version")
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 "return [r.width, r.height];", canvas)
    w, h = driver.execute_script("return [window.demo.width, window.demo.height]")
    dx = int(round((x + 0.5) * rect[0] / w - rect[0] / 2))
    dy = int(round((y + 0.5) * rect[1] / h - rect[1] / 2))
    chain = ActionChains(driver).move_to_element_with_offset(canvas, dx, dy)
    if kind == "right":
        chain.context_click()
    elif kind == "shift":
        chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    else:
        chain.click()
    chain.perform()
    _wait(driver, lambda d: d.execute_script("return window.demo.version") > version,
          f"the overlay after the {kind} click at ({x}, {y})")
    _idle(driver)
    assert "error" not in _status(driver).get_attribute("class"), _status(driver).text
    return driver.execute_script("return window.demo.version")


def _press(driver, key_or_button):
    """A keyboard shortcut (one character or a Keys value) or a button id prefixed with '#'."""
    from selenium.webdriver.common.action_chains import ActionChains

    version = driver.execute_script("return window.demo.version")
    if key_or_button.startswith("#"):
        driver.find_element("id", key_or_button[1:]).click()
    else:
        ActionChains(driver).send_keys(key_or_button).perform()
    return version


def _upload(driver, path):
    version = driver.execute_script("return window.demo.version")
    driver.find_element("id", "file").send_keys(str(path))
    _wait(driver, lambda d: d.execute_script("return window.demo.version") > version
          and d.execute_script("return window.demo.session") is not None, "the uploaded image")
    _idle(driver)


def _serve(segmenter, out, **kwargs):
    return BackgroundServer(create_app(segmenter, out, **kwargs))


def _annotate(driver, url, image_path, out, shots, label, strict):
    """The whole flow on one page; `strict`: assert where the overlay must appear (classical
    predictor, whose masks on this image are known)."""
    driver.get(url)
    _wait(driver, lambda d: d.find_element("id", "model").text == label, "the model name")
    _upload(driver, image_path)
    empty = _canvas_rgba(driver)
    assert empty.shape == (321, 481, 4) and not empty[..., 3].any()
    assert np.abs(_canvas_rgba(driver, "image-canvas")[..., :3].astype(int)
                  - cv2.imread(str(image_path))[..., ::-1]).mean() < 3  # the image is shown

    _click(driver, *INSIDE)
    first = _canvas_rgba(driver)
    assert first[..., 3].any(), "no overlay after the first click"
    latency = driver.execute_script("return window.demo.lastLatencyMs")
    assert latency > 0 and driver.find_element("id", "latency").text.endswith(" ms)")
    clicks = _canvas_rgba(driver, "clicks-canvas")
    assert tuple(clicks[INSIDE[1], INSIDE[0]]) == (34, 221, 34, 255)  # the green click disk
    _click(driver, *OUTSIDE)
    second = _canvas_rgba(driver)
    assert not np.array_equal(second, first), "the overlay did not change"
    _click(driver, *OUTSIDE, kind="right" if strict else "shift")
    third = _canvas_rgba(driver)
    assert not np.array_equal(third, second)
    clicks = _canvas_rgba(driver, "clicks-canvas")
    assert tuple(clicks[OUTSIDE[1], OUTSIDE[0]]) == (238, 34, 34, 255)  # red: negative
    if strict:
        assert first[INSIDE[1], INSIDE[0], 3] > 0 and first[SKY[1], SKY[0], 3] == 0
        assert first[OUTSIDE[1], OUTSIDE[0], 3] == 0 and second[OUTSIDE[1], OUTSIDE[0], 3] > 0
        assert third[OUTSIDE[1], OUTSIDE[0], 3] == 0 and third[INSIDE[1], INSIDE[0], 3] > 0
    driver.save_screenshot(str(shots / "three_clicks.png"))

    version = _press(driver, "z")  # undo by keyboard
    _wait(driver, lambda d: d.execute_script("return window.demo.version") > version, "undo")
    _idle(driver)
    np.testing.assert_array_equal(_canvas_rgba(driver), second)
    version = _press(driver, "#undo")  # and by the button
    _wait(driver, lambda d: d.execute_script("return window.demo.version") > version, "undo")
    _idle(driver)
    np.testing.assert_array_equal(_canvas_rgba(driver), first)
    assert driver.execute_script("return window.demo.clicks") == [
        {"x": INSIDE[0], "y": INSIDE[1], "positive": True}]

    version = _press(driver, "f")  # finish the object, then a second one
    _wait(driver, lambda d: d.execute_script("return window.demo.objects") == 1, "finish")
    _idle(driver)
    finished = _canvas_rgba(driver)
    np.testing.assert_array_equal(finished[..., 3], first[..., 3])  # same mask, object colour
    _click(driver, 400, 60)
    driver.save_screenshot(str(shots / "two_objects.png"))
    _press(driver, "#save")
    _wait(driver, lambda d: _status(d).text.startswith("Saved 2 objects"), "save")
    saved = sorted(p.name for p in out.iterdir())
    assert len(saved) == 2 and saved[0].endswith(".json") and saved[1].endswith(".png")
    record = json.loads((out / saved[0]).read_text())
    assert record["image"] == PENGUIN and len(record["objects"]) == 2
    assert record["objects"][0]["clicks"] == [{"x": INSIDE[0], "y": INSIDE[1], "positive": True}]
    assert record["objects"][1]["clicks"] == [{"x": 400, "y": 60, "positive": True}]
    labels = cv2.imread(str(out / saved[1]), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (321, 481)
    np.testing.assert_array_equal(labels == 1, (first[..., 3] > 0) & ~(labels == 2))
    return record


def test_classical_predictor_in_the_browser(driver, grabcut_root, tmp_path):
    out = tmp_path / "out"
    with _serve(Segmenter("cv_grabcut"), out) as url:
        _annotate(driver, url, grabcut_root / "data_GT" / PENGUIN, out, tmp_path,
                  "classical OpenCV GrabCut (no weights)", strict=True)
    assert (tmp_path / "two_objects.png").stat().st_size > 10_000


def test_trained_iglr_checkpoint_in_the_browser(driver, grabcut_root, tmp_path, trained_checkpoint):
    torch.manual_seed(0)
    segmenter = Segmenter.from_checkpoint(trained_checkpoint)
    segmenter.warm_up()
    out = tmp_path / "out"
    with _serve(segmenter, out) as url:
        _annotate(driver, url, grabcut_root / "data_GT" / PENGUIN, out, tmp_path,
                  "iglr: 000_demo/last_checkpoint.pth", strict=False)


def test_folder_walk_in_the_browser(driver, grabcut_root, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in (PENGUIN, "124080.jpg"):
        shutil.copy(grabcut_root / "data_GT" / name, images / name)
    out = tmp_path / "out"
    with _serve(Segmenter("cv_grabcut"), out, images_dir=images) as url:
        driver.get(url)
        _wait(driver, lambda d: len(d.find_elements("css selector", "#images li")) == 2,
              "the image list")
        assert [li.text for li in driver.find_elements("css selector", "#images li")] == \
            ["106024.jpg", "124080.jpg"]
        driver.find_elements("css selector", "#images li")[0].click()
        _wait(driver, lambda d: d.execute_script("return window.demo.session") is not None,
              "the first image")
        _idle(driver)
        _click(driver, *INSIDE)
        from selenium.webdriver.common.keys import Keys
        _press(driver, Keys.ARROW_RIGHT)  # next image: the first one is saved on the way
        _wait(driver, lambda d: d.find_element("id", "image-name").text.startswith("124080.jpg"),
              "the next image")
        _idle(driver)
        assert (out / "106024.json").is_file() and (out / "106024.png").is_file()
        items = driver.find_elements("css selector", "#images li")
        assert [i.get_attribute("class") for i in items] == ["done", "current"]
        assert driver.find_element("id", "done-count").text == "1"
    # reopening the folder shows which images are done
    with _serve(Segmenter("cv_grabcut"), out, images_dir=images) as url:
        driver.get(url)
        _wait(driver, lambda d: len(d.find_elements("css selector", "#images li")) == 2,
              "the image list")
        items = driver.find_elements("css selector", "#images li")
        assert [i.get_attribute("class") for i in items] == ["done", ""]
