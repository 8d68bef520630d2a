"""Headless Chromium for the browser tests and `scripts/measure_demo.py` (Selenium).

Debian's `chromium` and `chromium-driver` packages (same version) are used as installed; the
driver is given by path, so Selenium Manager never downloads anything. The flags keep a
machine without internet quiet (no background networking, updates, sync or QUIC).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Tuple

CHROMIUM = Path(os.environ.get("IGLR_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("IGLR_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic", "--disable-dev-shm-usage", "--hide-scrollbars")


def headless_chromium(user_data_dir: Optional[Path] = None, window: Tuple[int, int] = (1400, 1000)):
    """A Selenium Chrome driver on Debian's headless Chromium with a fresh profile folder (a new
    temporary one unless `user_data_dir` is given). The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: install Debian's '{package}' package "
                                    f"(scripts/setup.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    profile = user_data_dir or Path(tempfile.mkdtemp(prefix="iglr-chromium-"))
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def wait_until(driver, condition, what: str, timeout: float = 120.0) -> None:
    """Poll `condition(driver)` every 50 ms until true; TimeoutException naming `what`."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def wait_idle(driver) -> None:
    """Until the page has no request in flight."""
    wait_until(driver, lambda d: d.execute_script("return window.demo && window.demo.busy === 0"),
               "the page's requests to finish")


def version(driver) -> int:
    """How many overlays the page has drawn."""
    return int(driver.execute_script("return window.demo.version"))


def click_pixel(driver, x: int, y: int, kind: str = "left") -> int:
    """Click image pixel (x = column, y = row) on the page's canvas with the real mouse; kind:
    'left', 'right' or 'shift' (shift + left). Waits until the page drew the answer; returns
    the overlay version."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    canvas = driver.find_element("id", "clicks-canvas")
    before = version(driver)
    width, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    w, h = driver.execute_script("return [window.demo.width, window.demo.height]")
    dx = int(round((x + 0.5) * width / w - width / 2))
    dy = int(round((y + 0.5) * height / h - height / 2))
    chain = ActionChains(driver).move_to_element_with_offset(canvas, dx, dy)
    if kind == "right":
        chain.context_click()
    elif kind == "shift":
        chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    elif kind == "left":
        chain.click()
    else:
        raise ValueError(f"click kind must be 'left', 'right' or 'shift', got '{kind}'")
    chain.perform()
    wait_until(driver, lambda d: version(d) > before, f"the overlay after the {kind} click at "
                                                      f"({x}, {y})")
    wait_idle(driver)
    return version(driver)


def upload(driver, path: Path) -> None:
    """Upload `path` through the page's file input; waits until the image is shown."""
    before = version(driver)
    driver.find_element("id", "file").send_keys(str(Path(path).resolve()))
    wait_until(driver, lambda d: version(d) > before
               and d.execute_script("return window.demo.session") is not None, "the upload")
    wait_idle(driver)


def canvas_rgba(driver, canvas_id: str = "overlay-canvas"):
    """The canvas' pixels as the page holds them: HxWx4 uint8 RGBA."""
    import base64

    import cv2
    import numpy as np

    url = driver.execute_script(
        f"return document.getElementById('{canvas_id}').toDataURL('image/png')")
    data = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
