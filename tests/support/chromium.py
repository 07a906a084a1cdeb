"""Headless Chromium for the page tests (Debian chromium + chromium-driver, installed by `make setup`).

with headless_chromium(tmp_path / "profile") as driver:    # selenium WebDriver; quits on exit
    driver.get(url)
"""

from __future__ import annotations

import contextlib
import shutil

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MISSING = "needs Debian chromium + chromium-driver (make setup)"


def available() -> bool:
    return bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))


@contextlib.contextmanager
def headless_chromium(profile_dir, *, script_timeout_s: float = 30):
    """A headless Chromium driven by chromedriver, with its own profile folder; audio may start without a gesture
    (the live panel's AudioWorklet)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile_dir}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(script_timeout_s)
    try:
        yield driver
    finally:
        driver.quit()
