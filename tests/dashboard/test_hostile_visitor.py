"""The served dashboard against a visitor who never logs in: caches, memory and lockouts.

``streamlit run`` (through ``moodfed dashboard``'s own command line) in its own process on a
free port; the analyst drives Debian's Chromium with Playwright, the visitor speaks
Streamlit's websocket protocol itself (``streamlit_wire``). Addresses are real: uvicorn
trusts ``X-Forwarded-For`` from loopback, as it would from a reverse proxy on the same host,
so each browser context and the visitor come from an address of their own. Every wait is
on an answer or a condition in the page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from typer.testing import CliRunner

from dashboard import screenshot
from dashboard.auth import SESSION_KEY
from dashboard.cli import app as dashboard_cli
from dashboard.serve import ServedDashboard, serve_dashboard
from dashboard.session_guard import AUTHENTICATED_KEY

from .conftest import PASSWORD, USER
from .stores import WEEKS, write_another_week, write_private_store
from .streamlit_wire import wire_session

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not screenshot.CHROMIUM.exists() and not os.environ.get("CI"),
        reason=f"no Chromium at {screenshot.CHROMIUM}: apt-get install chromium",
    ),
]

ANALYST_ADDRESS = "198.51.100.9"
VISITOR_ADDRESS = "203.0.113.7"
LOCKED = "Too many failed logins"
WRONG = "Wrong user name or password."
LOGGED_IN = "logged in"


class Served:
    """The dashboard process, its store and the files it keeps."""

    def __init__(self, dashboard: ServedDashboard, folder: Path) -> None:
        self.url = dashboard.url
        self.store_url = f"sqlite:///{folder / 'releases.db'}"
        self.login_state_url = f"sqlite:///{folder / 'dashboard-logins.db'}"
        self.log = folder / "streamlit.log"

    def log_text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def served(tmp_path: Path, password_hash: str) -> Iterator[Served]:
    write_private_store(f"sqlite:///{tmp_path / 'releases.db'}")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MOODFED_")},
        "MOODFED_RELEASES_URL": f"sqlite:///{tmp_path / 'releases.db'}",
        "MOODFED_ANALYST_USER": USER,
        "MOODFED_ANALYST_PASSWORD_HASH": password_hash,
        "MOODFED_LOGIN_STATE_URL": f"sqlite:///{tmp_path / 'dashboard-logins.db'}",
        "MOODFED_CACHE_SECONDS": "3600",  # nothing expires during the test
        "MOODFED_LOGIN_FREE_ATTEMPTS": "2",
        "MOODFED_LOGIN_BACKOFF_SECONDS": "600",
    }
    with serve_dashboard(env=env, log_path=tmp_path / "streamlit.log", cwd=tmp_path) as dashboard:
        yield Served(dashboard, tmp_path)
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with playwright_api.sync_playwright() as playwright:
        launched = screenshot.launch_chromium(playwright)
        yield launched
        launched.close()


def _latest_week(page: Page) -> str:
    caption = page.get_by_text(re.compile(r"^Latest week: ")).inner_text()
    found = re.search(r"\d{4}-\d{2}-\d{2}", caption)
    assert found, caption
    return found.group()


def _open_overview_again(page: Page) -> None:
    """Run the Overview's script again in the same session (as an analyst clicking around)."""
    for link, title in (
        ("Population mood", "Population mood"),
        ("Overview", screenshot.OVERVIEW_TITLE),
    ):
        page.get_by_role("link", name=link).click()
        page.get_by_role("heading", name=title, exact=True).wait_for(timeout=60_000)
        screenshot.wait_until_settled(page)


def test_a_visitor_who_never_logged_in_cannot_clear_the_analysts_caches(
    served: Served, browser: Browser
) -> None:
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": ANALYST_ADDRESS})
    page = context.new_page()
    screenshot.log_in(page, served.url, user=USER, password=PASSWORD)
    cached = _latest_week(page)
    write_another_week(served.store_url, date(2026, 1, 19))  # the store changes meanwhile

    with wire_session(served.url, forwarded_for=VISITOR_ADDRESS) as visitor:
        visitor.run_script()  # the login page, as a browser loads it
        visitor.send(BackMsg(clear_cache=True))  # Streamlit's "Clear caches" request
        visitor.handled()
    _open_overview_again(page)

    assert cached == WEEKS[-1].isoformat()
    assert _latest_week(page) == cached  # still the cached figures: nothing was cleared
    assert (
        f"dropped a clear_cache request from {VISITOR_ADDRESS}, a session that has not "
        "logged in" in served.log_text()
    )


def test_claiming_the_login_keys_as_widget_values_logs_nobody_in_and_crashes_nothing(
    served: Served,
) -> None:
    forged = {
        SESSION_KEY: USER,
        AUTHENTICATED_KEY: USER,
        f"$$ID-0123456789abcdef-{SESSION_KEY}": USER,  # shaped like a real widget's id
    }

    with wire_session(served.url, forwarded_for=VISITOR_ADDRESS) as visitor:
        _, drawn = visitor.run_script_elements(forged)
        visitor.send(BackMsg(clear_cache=True))
        visitor.handled()

    assert drawn == ["heading", "markdown", "text_input", "text_input", "button"]  # login
    log = served.log_text()
    assert f"dropped 2 widget values with ids no widget has from {VISITOR_ADDRESS}" in log
    assert f"dropped a clear_cache request from {VISITOR_ADDRESS}" in log  # still a stranger
    # and no traceback in the log (checked by the fixture)


def test_a_visitor_cannot_keep_files_in_the_dashboards_memory(served: Served) -> None:
    with (
        wire_session(served.url, forwarded_for=VISITOR_ADDRESS) as visitor,
        httpx.Client(base_url=served.url, timeout=30) as http,
    ):
        session = visitor.run_script()
        http.get("/_stcore/health").raise_for_status()  # sets the XSRF cookie
        token = http.cookies["_streamlit_xsrf"]
        upload = http.put(
            f"/_stcore/upload_file/{session}/file-1",
            files={"file": ("big.bin", b"\0" * 65_536)},
            headers={"X-Xsrftoken": token},
        )
        forged = http.put(
            f"/_stcore/upload_file/{session}/file-2",
            files={"file": ("big.bin", b"\0" * 65_536)},
            headers={"X-Xsrftoken": "2|00000000|00000000000000000000000000000000|0"},
        )

    assert forged.status_code == 403  # the upload above was a well-formed request...
    assert upload.status_code == 413  # ...refused for its size: nothing is kept


def _attempt(browser: Browser, url: str, address: str, *, user: str, password: str) -> str:
    """One login from ``address`` in a fresh page: the error it shows, or LOGGED_IN."""
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": address})
    page = context.new_page()
    try:
        page.goto(url)
        page.get_by_role("textbox", name="User name").fill(user)
        page.get_by_role("textbox", name="Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        overview = page.get_by_role("heading", name=screenshot.OVERVIEW_TITLE, exact=True)
        alert = page.get_by_test_id("stAlert")
        overview.or_(alert).first.wait_for(timeout=60_000)
        return LOGGED_IN if overview.count() else alert.first.inner_text()
    finally:
        context.close()


def test_guesses_lock_their_source_and_user_name_and_the_operator_sees_and_clears_it(
    served: Served, browser: Browser
) -> None:
    def attempt(address: str, user: str, password: str) -> str:
        return _attempt(browser, served.url, address, user=user, password=password)

    guesses = [attempt(VISITOR_ADDRESS, "mallory", f"guess-{n}-xq") for n in (1, 2)]
    right_but_from_there = attempt(VISITOR_ADDRESS, USER, PASSWORD)
    from_elsewhere = attempt(ANALYST_ADDRESS, USER, PASSWORD)
    runner = CliRunner()
    listed = runner.invoke(dashboard_cli, ["lockouts", "--state-url", served.login_state_url])
    unlocked = runner.invoke(
        dashboard_cli,
        ["unlock", "--source", VISITOR_ADDRESS, "--state-url", served.login_state_url],
    )
    after_unlock = attempt(VISITOR_ADDRESS, USER, PASSWORD)

    assert guesses == [WRONG, WRONG]
    assert right_but_from_there.startswith(LOCKED)  # refused before argon2id ran
    assert from_elsewhere == LOGGED_IN  # another address, a user name nobody guessed
    locked = [line.split()[:2] for line in listed.output.splitlines() if "LOCKED" in line]
    assert locked == [["source", VISITOR_ADDRESS], ["user", "'mallory'"]]
    assert ANALYST_ADDRESS not in listed.output  # its success cleared it
    assert unlocked.exit_code == 0
    assert after_unlock == LOGGED_IN
    log = served.log_text()
    assert (
        f"dashboard login failed: user 'mallory' from {VISITOR_ADDRESS} (1 failures in a row "
        "for this user name, 1 from this source)" in log
    )
    assert log.count("dashboard login failed") == 1  # the second, within the minute: held back
    assert (
        f"dashboard login refused without checking the password: user '{USER}' from "
        f"{VISITOR_ADDRESS} (locked: source, " in log
    )
    assert "guess-1-xq" not in log and "guess-2-xq" not in log and PASSWORD not in log
