"""The annotation tool end to end in headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium): upload, clicks (left, right, shift), overlay drawn and changed, undo,
finish, save, the folder walk. Real models: the classical predictor and an IGLR checkpoint
trained for a few steps here. Screenshots stay in the test's tmp_path."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from isegm.demo.browser import (CHROMIUM, canvas_rgba, click_pixel, headless_chromium, upload,
                                 wait_idle, wait_until)
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
    d = headless_chromium(tmp_path_factory.mktemp("chromium-profile"))
    d.set_page_load_timeout(60)
    d.set_script_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """An IGLR checkpoint trained for 4 steps (B0 at 64x64) by the real training entry point."""
    from isegm.engine import launch

    exps = tmp_path_factory.mktemp("exps")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPS_PATH", str(exps))
        rc = launch.main([str(REPO / "tests" / "test_train_configs" / "tiny_synthetic.py"), "--cpu",
                          "--workers=0", "--exp-name=demo", "--seed=1"])
    assert rc == 0
    (path,) = exps.rglob("last_checkpoint.pth")
    return path


def _wait(driver, condition, what):
    wait_until(driver, condition, what, WAIT_S)


def _status(driver):
    return driver.find_element("id", "status")


def _click(driver, x, y, kind="left"):
    click_pixel(driver, x, y, kind)
    assert "error" not in _status(driver).get_attribute("class"), _status(driver).text


def _press(driver, key_or_button):
    """A keyboard shortcut (one character or a Keys value) or a button id prefixed with '#'."""
    from selenium.webdriver.common.action_chains import ActionChains

    version = driver.execute_script("return window.demo.version")
    if key_or_button.startswith("#"):
        driver.find_element("id", key_or_button[1:]).click()
    else:
        ActionChains(driver).send_keys(key_or_button).perform()
    return version


def _serve(segmenter, out, **kwargs):
    return BackgroundServer(create_app(segmenter, out, **kwargs))


def _annotate(driver, url, image_path, out, shots, label, strict):
    """The whole flow on one page; `strict`: assert where the overlay must appear (classical
    predictor, whose masks on this image are known)."""
    driver.get(url)
    _wait(driver, lambda d: d.find_element("id", "model").text == label, "the model name")
    upload(driver, image_path)
    empty = canvas_rgba(driver)
    assert empty.shape == (321, 481, 4) and not empty[..., 3].any()
    assert np.abs(canvas_rgba(driver, "image-canvas")[..., :3].astype(int)
                  - cv2.imread(str(image_path))[..., ::-1]).mean() < 3  # the image is shown

    _click(driver, *INSIDE)
    first = canvas_rgba(driver)
    assert first[..., 3].any(), "no overlay after the first click"
    latency = driver.execute_script("return window.demo.lastLatencyMs")
    assert latency > 0 and driver.find_element("id", "latency").text.endswith(" ms)")
    clicks = canvas_rgba(driver, "clicks-canvas")
    assert tuple(clicks[INSIDE[1], INSIDE[0]]) == (34, 221, 34, 255)  # the green click disk
    _click(driver, *OUTSIDE)
    second = canvas_rgba(driver)
    assert not np.array_equal(second, first), "the overlay did not change"
    _click(driver, *OUTSIDE, kind="right" if strict else "shift")
    third = canvas_rgba(driver)
    assert not np.array_equal(third, second)
    clicks = canvas_rgba(driver, "clicks-canvas")
    assert tuple(clicks[OUTSIDE[1], OUTSIDE[0]]) == (238, 34, 34, 255)  # red: negative
    if strict:
        assert first[INSIDE[1], INSIDE[0], 3] > 0 and first[SKY[1], SKY[0], 3] == 0
        assert first[OUTSIDE[1], OUTSIDE[0], 3] == 0 and second[OUTSIDE[1], OUTSIDE[0], 3] > 0
        assert third[OUTSIDE[1], OUTSIDE[0], 3] == 0 and third[INSIDE[1], INSIDE[0], 3] > 0
    driver.save_screenshot(str(shots / "three_clicks.png"))

    version = _press(driver, "z")  # undo by keyboard
    _wait(driver, lambda d: d.execute_script("return window.demo.version") > version, "undo")
    wait_idle(driver)
    np.testing.assert_array_equal(canvas_rgba(driver), second)
    version = _press(driver, "#undo")  # and by the button
    _wait(driver, lambda d: d.execute_script("return window.demo.version") > version, "undo")
    wait_idle(driver)
    np.testing.assert_array_equal(canvas_rgba(driver), first)
    assert driver.execute_script("return window.demo.clicks") == [
        {"x": INSIDE[0], "y": INSIDE[1], "positive": True}]

    version = _press(driver, "f")  # finish the object, then a second one
    _wait(driver, lambda d: d.execute_script("return window.demo.objects") == 1, "finish")
    wait_idle(driver)
    finished = canvas_rgba(driver)
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
        wait_idle(driver)
        _click(driver, *INSIDE)
        from selenium.webdriver.common.keys import Keys
        _press(driver, Keys.ARROW_RIGHT)  # next image: the first one is saved on the way
        _wait(driver, lambda d: d.find_element("id", "image-name").text.startswith("124080.jpg"),
              "the next image")
        wait_idle(driver)
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
