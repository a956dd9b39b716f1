"""Open a page in headless Chromium (Debian's chromium + chromedriver, driven by selenium) and return what a
reader would see: title, first <h1>, every image's load state, the browser console, optionally a screenshot.
Used by tests/hwsim/test_report_browser.py and scripts/report_screenshot.py."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def binaries() -> tuple[str | None, str | None]:
    """(browser, chromedriver) paths, None where absent."""
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    return browser, shutil.which("chromedriver")


@dataclass
class Page:
    title: str
    h1: str
    images: list[dict] = field(default_factory=list)  # {"src", "complete", "naturalWidth"}, in document order
    console: list[dict] = field(default_factory=list)  # chromedriver's browser log entries: level, message, ...
    png: bytes | None = None

    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not (i["complete"] and i["naturalWidth"] > 0)]

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.console if e["level"] == "SEVERE"]


def open_page(path: Path, width: int = 1280, screenshot: bool = False, max_height: int = 16000) -> Page:
    """Load the local file `path` and collect its state once the load event has fired (driver.get waits for
    it, and a data: or file: image has either decoded or failed by then). With screenshot, the window is
    resized to the page's full height (at most max_height) and the PNG taken at device scale 1."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_bin = binaries()
    if not (browser and driver_bin):
        raise RuntimeError(f"headless browser check needs chromium and chromedriver (found {browser}, {driver_bin}); "
                           "apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--force-device-scale-factor=1",
              "--hide-scrollbars", f"--window-size={width},900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    try:
        driver.get(Path(path).resolve().as_uri())
        h1 = driver.execute_script("const h = document.querySelector('h1'); return h ? h.textContent : ''")
        images = driver.execute_script(
            "return Array.from(document.images, i => ({src: i.getAttribute('src'), complete: i.complete, naturalWidth: i.naturalWidth}))")
        png = None
        if screenshot:
            full = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
            # the window's outer size includes whatever is not viewport; add that so the viewport holds the page
            extra = driver.execute_script("return window.outerHeight - window.innerHeight")
            driver.set_window_size(width, min(full, max_height) + max(extra, 0))
            png = driver.get_screenshot_as_png()
        return Page(title=driver.title, h1=h1, images=images, console=driver.get_log("browser"), png=png)
    finally:
        driver.quit()
