"""The real dashboard in headless Chromium: log in, open every page, no error, a screenshot each.

Runs ``streamlit run dashboard/app.py`` on a free localhost port with a seeded release
store and a live consent service, and drives Debian's Chromium with Playwright (the
Python package only; no downloaded browsers). Screenshots go to a temporary folder (or
``MOODFED_SCREENSHOT_DIR``); the Overview's is copied to ``docs/dashboard.png``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ConsentServer, free_port
from tests.consent.signing import Signer

from .conftest import APP, PASSWORD, ROOT, USER

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = [
    ("Overview", "Population mood at a glance"),
    ("Population mood", "Population mood"),
    ("Cohorts", "Cohorts"),
    ("Model", "Shared model"),
    ("Privacy", "Privacy"),
    ("Consent", "Consent"),
]
ERROR_TEXT = ("Traceback", "Error:", "Exception:")

pytestmark = [
    pytest.mark.slow,
    # Skips on a developer machine without Chromium; in CI (.ci/run installs it) it must run.
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"),
        reason=f"no Chromium at {CHROMIUM}: apt-get install chromium",
    ),
]


@pytest.fixture
def dashboard_url(
    dashboard_env: dict[str, str], sqlite_consent_server: ConsentServer, tmp_path: Path
) -> Iterator[str]:
    with sqlite_consent_server.client() as client:
        for _ in range(5):
            signer = Signer()
            for purpose in ("population-analytics", "model-training"):
                client.post("/v1/consents", json=signer.record("grant", purpose))
        key = client.get("/v1/log/key").text
    port = free_port()
    env = {
        **os.environ,
        **dashboard_env,
        "MOODFED_CONSENT_URL": sqlite_consent_server.url,
        "MOODFED_CONSENT_LOG_KEY": key,
    }
    log = tmp_path / "streamlit.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            APP,
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        env=env,
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited: {log.read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start: {log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    assert "Traceback" not in log.read_text(), log.read_text()


def _settled(page) -> None:  # type: ignore[no-untyped-def]
    """Wait until Streamlit has finished the script run and Vega has drawn the charts."""
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        timeout=60_000
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stVegaLiteChart]')]"
        ".every(chart => !chart.offsetParent || chart.querySelector('canvas, svg'))",
        timeout=30_000,
    )
    page.wait_for_timeout(500)


def _screenshot(page, path: Path) -> None:  # type: ignore[no-untyped-def]
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to it."""
    height = page.evaluate(
        "() => document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight"
    )
    page.set_viewport_size({"width": 1400, "height": max(900, int(height) + 120)})
    page.wait_for_timeout(700)  # charts re-layout to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})


def test_an_analyst_can_open_every_page_without_an_error(
    dashboard_url: str, tmp_path: Path
) -> None:
    folder = Path(os.environ.get("MOODFED_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            for path in ("population", "cohorts", "model", "privacy", "consent"):
                page.goto(f"{dashboard_url}/{path}")  # straight to a page, not logged in
                page.get_by_role("textbox", name="Password").wait_for(timeout=60_000)
                _settled(page)
                assert page.locator("[data-testid='stVegaLiteChart']").count() == 0, path
                assert page.locator("[data-testid='stMetric']").count() == 0, path
            page.goto(dashboard_url)
            page.get_by_role("textbox", name="User name").fill(USER)
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            shots = []
            for link, title in PAGES:
                if link != "Overview":
                    page.get_by_role("link", name=link).click()
                page.get_by_role("heading", name=title, exact=True).wait_for(timeout=60_000)
                _settled(page)
                assert page.locator("[data-testid='stException']").count() == 0, link
                body = page.inner_text("body")
                assert not [text for text in ERROR_TEXT if text in body], (link, body[:2000])
                if link not in ("Consent",):
                    assert page.locator("[data-testid='stVegaLiteChart']").count() > 0, link
                shot = folder / f"{link.lower().replace(' ', '-')}.png"
                _screenshot(page, shot)
                shots.append(shot)
            assert "verified" in body  # the Consent page checked the log
        finally:
            browser.close()
    (ROOT / "docs").mkdir(exist_ok=True)
    shutil.copyfile(shots[0], ROOT / "docs" / "dashboard.png")
    assert all(shot.stat().st_size > 10_000 for shot in shots)
