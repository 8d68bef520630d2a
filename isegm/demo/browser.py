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
