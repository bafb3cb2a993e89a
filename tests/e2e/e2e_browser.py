"""A headless Chromium for the flow monitor's test, driven by Selenium through Debian's
chromium-driver (built from the same source package as the browser, so their versions match).

`scripts/browser.sh` installs both (and Graphviz, which the gateway draws diagrams with); a test
that finds one missing fails and says so, it never skips. Every wait is on a condition of the
page (`MonitorBrowser.until`), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

try:
    from selenium import webdriver
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as missing:  # a failure that says what to do, never a skip
    pytest.fail(
        f"the flow monitor's browser test needs Selenium ({missing}): "
        "pip install -e '.[dev]' (make install)",
        pytrace=False,
    )

REQUIRED = {
    "chromium": "the browser (Debian package chromium)",
    "chromedriver": "Selenium's driver for it (Debian package chromium-driver)",
    "dot": "Graphviz, which the gateway draws diagrams with (Debian package graphviz)",
}
WINDOW = (1400, 1000)
T = TypeVar("T")


def required_programs() -> dict[str, str]:
    """Each program's path; fails the test, naming what is missing and how to install it."""
    found = {name: shutil.which(name) for name in REQUIRED}
    missing = [f"{name}: {REQUIRED[name]}" for name, path in found.items() if path is None]
    if missing:
        pytest.fail(
            "the flow monitor's browser test needs:\n  "
            + "\n  ".join(missing)
            + "\ninstall them with: bash scripts/browser.sh (make test runs it)",
            pytrace=False,
        )
    return {name: str(path) for name, path in found.items()}


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    """A headless Chromium with a profile of its own under `profile`; quit at the end."""
    programs = required_programs()
    options = webdriver.ChromeOptions()
    options.binary_location = programs["chromium"]
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(programs["chromedriver"]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class MonitorBrowser:
    """The page, read and clicked the way a person would, with waits on what it shows."""

    def __init__(self, driver: WebDriver, *, diagnose: Callable[[], str] = str) -> None:
        self.driver = driver
        self.diagnose = diagnose

    def until(self, condition: Callable[[WebDriver], T | None], *, timeout: float, what: str) -> T:
        """Wait until `condition` returns something truthy; elements re-drawn by the page's
        polling meanwhile are looked up again."""
        wait = WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        try:
            return wait.until(condition)
        except TimeoutException:
            raise AssertionError(
                f"the page did not show {what} within {timeout:g} s\n"
                f"page text:\n{self.text('body')[:3000]}\n{self.diagnose()}"
            ) from None

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        try:
            return str(
                self.driver.execute_script(
                    "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                    css,
                )
            )
        except StaleElementReferenceException:
            return ""

    def shows(self, css: str) -> bool:
        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def click(self, css: str, *, timeout: float = 10) -> None:
        """Click the element, looking it up again if the page re-drew it."""

        def clicked(driver: WebDriver) -> bool:
            element = driver.find_element(By.CSS_SELECTOR, css)
            if not (element.is_displayed() and element.is_enabled()):
                return False
            element.click()
            return True

        self.until(clicked, timeout=timeout, what=f"a clickable {css}")

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        element.clear()
        element.send_keys(text)

    def script(self, source: str, *arguments: object) -> Any:
        return self.driver.execute_script(source, *arguments)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(path)):
            raise AssertionError(f"no screenshot could be saved to {path}")
        return path
