"""Headless Chromium for the console's browser tests and its screenshot: the system's own
Chromium and ChromeDriver (Debian's `chromium` and `chromium-driver`, which `make test`
installs when it can), driven by Selenium. Nothing is downloaded at run time: the driver's
path is given, so Selenium's own driver manager never runs.

    python -m local.console.browser http://127.0.0.1:8900/ docs/console.png

takes a screenshot of a page (the README's is one of the console under `make run`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
#: No background connections (the machine may have no network: Chromium would keep trying),
#: no sandbox (tests may run as root), a window large enough for the whole console.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1800",
)


def missing() -> str | None:
    """Why no browser can be started here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.exists(path) or shutil.which(path)):
            return f"{path} not found (Debian package {package}; `make test` installs it as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-dev.txt)"
    return None


def chromium() -> Any:
    """A new headless Chromium with a profile of its own (removed when it quits)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-browser-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    quit_driver = driver.quit

    def quit_and_clean() -> None:
        try:
            quit_driver()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver


def screenshot(url: str, path: str, settle_seconds: float = 2.0, height: int = 0) -> None:
    """A PNG of the page at `url`, as tall as the page (or `height` pixels)."""
    driver = chromium()
    try:
        driver.get(url)
        time.sleep(settle_seconds)
        tall = height or int(driver.execute_script("return document.body.scrollHeight")) + 20
        driver.set_window_size(1440, min(tall, 6000))
        time.sleep(0.3)
        driver.save_screenshot(path)
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A screenshot of a page in headless Chromium.")
    parser.add_argument("url")
    parser.add_argument("path")
    parser.add_argument("--height", type=int, default=0, help="pixels (default: the page's)")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    screenshot(args.url, args.path, height=args.height)
    print(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
