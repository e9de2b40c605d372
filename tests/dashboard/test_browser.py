"""The real dashboard in headless Chromium: log in, open every page, no error, a screenshot each.

Runs ``streamlit run dashboard/app.py`` on a free localhost port with a seeded release
store and a live consent service, and drives Debian's Chromium with Playwright (the
Python package only; no downloaded browsers), through ``dashboard.screenshot``. Every
wait is on a condition in the page, never a fixed time. Screenshots go to a temporary
folder (or ``MOODFED_SCREENSHOT_DIR``), never into the tree: ``docs/dashboard.png`` is
updated by ``moodfed dashboard screenshot``, which is tested here too.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dashboard import screenshot
from dashboard.cli import app as dashboard_cli
from dashboard.serve import serve_dashboard
from tests.conftest import ConsentServer
from tests.consent.signing import Signer

from .conftest import PASSWORD, ROOT, USER

playwright_api = pytest.importorskip("playwright.sync_api")

PAGES = [
    ("Overview", "Population mood at a glance"),
    ("Population mood", "Population mood"),
    ("Cohorts", "Cohorts"),
    ("Model", "Shared model"),
    ("Privacy", "Privacy"),
    ("Consent", "Consent"),
]
ERROR_TEXT = ("Traceback", "Error:", "Exception:")
TRACKED_SCREENSHOT = ROOT / "docs" / "dashboard.png"

pytestmark = [
    pytest.mark.slow,
    # Skips on a developer machine without Chromium; in CI (.ci/run installs it) it must run.
    pytest.mark.skipif(
        not screenshot.CHROMIUM.exists() and not os.environ.get("CI"),
        reason=f"no Chromium at {screenshot.CHROMIUM}: apt-get install chromium",
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
    env = {
        **os.environ,
        **dashboard_env,
        "MOODFED_CONSENT_URL": sqlite_consent_server.url,
        "MOODFED_CONSENT_LOG_KEY": key,
    }
    log = tmp_path / "streamlit.log"
    with serve_dashboard(env=env, log_path=log, cwd=tmp_path) as served:
        yield served.url
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MOODFED_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tracked_state() -> tuple[int, int] | None:
    """The tracked screenshot's (size, mtime), to show that no test rewrote it."""
    if not TRACKED_SCREENSHOT.exists():
        return None
    stat = TRACKED_SCREENSHOT.stat()
    return stat.st_size, stat.st_mtime_ns


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_an_analyst_can_open_every_page_without_an_error(
    dashboard_url: str, screenshot_dir: Path
) -> None:
    tracked = _tracked_state()
    with playwright_api.sync_playwright() as playwright:
        browser = screenshot.launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": screenshot.WIDTH, "height": 900})
            for path in ("population", "cohorts", "model", "privacy", "consent"):
                page.goto(f"{dashboard_url}/{path}")  # straight to a page, not logged in
                page.get_by_role("textbox", name="Password").wait_for(timeout=60_000)
                screenshot.wait_until_settled(page)
                assert page.locator("[data-testid='stVegaLiteChart']").count() == 0, path
                assert page.locator("[data-testid='stMetric']").count() == 0, path
            screenshot.log_in(page, dashboard_url, user=USER, password=PASSWORD)
            shots = []
            for link, title in PAGES:
                if link != "Overview":
                    page.get_by_role("link", name=link).click()
                page.get_by_role("heading", name=title, exact=True).wait_for(timeout=60_000)
                screenshot.wait_until_settled(page)
                assert page.locator("[data-testid='stException']").count() == 0, link
                body = page.inner_text("body")
                assert not [text for text in ERROR_TEXT if text in body], (link, body[:2000])
                if link != "Consent":
                    assert page.locator("[data-testid='stVegaLiteChart']").count() > 0, link
                shot = screenshot_dir / f"{link.lower().replace(' ', '-')}.png"
                shots.append(screenshot.screenshot_page(page, shot))
            assert "verified" in body  # the Consent page checked the log
        finally:
            browser.close()
    assert all(shot.stat().st_size > 10_000 for shot in shots)
    assert all(_png_size(shot)[0] == screenshot.WIDTH for shot in shots)
    assert _tracked_state() == tracked  # docs/dashboard.png is not the test's to rewrite


def test_the_screenshot_command_saves_the_overview_where_it_is_told(
    seeded_url: str, screenshot_dir: Path
) -> None:
    tracked = _tracked_state()
    output = screenshot_dir / "command" / "dashboard.png"

    result = CliRunner().invoke(
        dashboard_cli, ["screenshot", "--output", str(output), "--releases-url", seeded_url]
    )

    assert result.exit_code == 0, result.output
    assert str(output) in result.output
    width, height = _png_size(output)
    assert width == screenshot.WIDTH and height >= 900
    assert output.stat().st_size > 10_000
    assert _tracked_state() == tracked


def test_the_screenshot_command_without_chromium_fails_clearly_and_writes_nothing(
    seeded_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "dashboard.png"

    result = CliRunner().invoke(
        dashboard_cli,
        [
            "screenshot",
            "--output",
            str(output),
            "--releases-url",
            seeded_url,
            "--chromium",
            str(tmp_path / "no-chromium"),
        ],
    )

    assert result.exit_code != 0
    assert "no Chromium at" in result.output
    assert not output.exists()
