"""Screenshots of the running dashboard in Debian's Chromium, driven by Playwright.

``moodfed dashboard screenshot --output docs/dashboard.png`` is the one way the README's
picture is updated; the browser test drives the same functions and writes only to a
temporary folder. Playwright's Python package drives the system Chromium
(``/usr/bin/chromium``); no browser is ever downloaded (never ``playwright install``).
Every wait is on a condition in the page (Streamlit's script run finished, its
"running" indicator gone, each chart drawn at its container's size), never a fixed time.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dashboard.passwords import hash_password
from dashboard.serve import serve_dashboard

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "HEIGHT",
    "WIDTH",
    "launch_chromium",
    "log_in",
    "save_overview_screenshot",
    "screenshot_page",
    "seed_demo_store",
    "wait_until_settled",
]

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH: Final = 1400
HEIGHT: Final = 900
USER: Final = "analyst"
OVERVIEW_TITLE: Final = "Population mood at a glance"
_TIMEOUT_MS: Final = 60_000

# True once every chart on screen has been drawn by Vega at its container's current
# width (Streamlit sizes charts to their container and redraws them when it changes).
_CHARTS_DRAWN: Final = """() => {
  const charts = [...document.querySelectorAll('[data-testid=stVegaLiteChart]')]
    .filter(chart => chart.offsetParent !== null);
  return charts.every(chart => {
    const drawn = chart.querySelector('canvas, svg.marks');
    if (!drawn) return false;
    const box = drawn.getBoundingClientRect();
    const frame = chart.getBoundingClientRect();
    return box.width > 0 && box.height > 0 && Math.abs(box.width - frame.width) <= 2;
  });
}"""

# True once the viewport is as tall as the page's content (so nothing scrolls away).
_FITS: Final = """(height) => {
  const main = document.querySelector('[data-testid=stMainBlockContainer]');
  return window.innerHeight === height && main !== null
    && main.getBoundingClientRect().bottom <= window.innerHeight;
}"""


def launch_chromium(playwright: Playwright, *, executable: Path = CHROMIUM) -> Browser:
    """Debian's Chromium, headless, with no background traffic (never a downloaded one)."""
    if not executable.exists():
        raise FileNotFoundError(f"no Chromium at {executable}: apt-get install chromium")
    return playwright.chromium.launch(executable_path=str(executable), args=list(CHROMIUM_ARGS))


def wait_until_settled(page: Page) -> None:
    """Wait until Streamlit's script run is over and the page is fully drawn.

    In order: the run has finished (``stApp``'s script state, and the "running"
    indicator gone), no element is left over from the previous run (``data-stale``),
    every lazily loaded component has replaced its placeholder (``stSkeleton``), and
    every visible chart is drawn at its container's width.
    """
    from playwright.sync_api import expect

    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=_TIMEOUT_MS)
    expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0, timeout=_TIMEOUT_MS)
    expect(page.locator("[data-stale=true]")).to_have_count(0, timeout=_TIMEOUT_MS)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=_TIMEOUT_MS)
    page.wait_for_function(_CHARTS_DRAWN, timeout=_TIMEOUT_MS, polling="raf")


def log_in(page: Page, url: str, *, user: str, password: str) -> None:
    """Open the dashboard, log in with the password form, and wait for the Overview."""
    page.goto(url)
    page.get_by_role("textbox", name="User name").fill(user)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name=OVERVIEW_TITLE, exact=True).wait_for(timeout=_TIMEOUT_MS)
    wait_until_settled(page)


def screenshot_page(page: Page, path: Path) -> Path:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to it.

    After resizing, waits until the viewport has its new height, the content fits in it
    and the charts are redrawn at their new width; then restores the viewport.
    """
    height = page.evaluate(
        "() => document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight"
    )
    tall = max(HEIGHT, int(height) + 120)
    page.set_viewport_size({"width": WIDTH, "height": tall})
    page.wait_for_function(_FITS, arg=tall, timeout=_TIMEOUT_MS, polling="raf")
    wait_until_settled(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    return path


def seed_demo_store(folder: Path) -> str:
    """A release store made by the real pipeline over a synthetic population (as the tests')."""
    # Imported here: the dashboard never loads the simulation unless asked to seed.
    from server.sim.seed import seed_release_store

    url = f"sqlite:///{folder / 'releases.db'}"
    seed_release_store(url, weeks=12, cohorts=16, devices=900, training_rounds=6, seed=5)
    return url


def save_overview_screenshot(
    output: Path, *, releases_url: str | None = None, chromium: Path = CHROMIUM
) -> Path:
    """Start the dashboard over ``releases_url`` (or a freshly seeded demo store), log in
    with a one-off password, and save the Overview page's screenshot (PNG) to ``output``.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ImportError(
            "the screenshot needs Playwright's Python package (pip install playwright); "
            "it drives the system Chromium, so never run `playwright install`"
        ) from exc
    if not chromium.exists():  # before anything is seeded or started
        raise FileNotFoundError(f"no Chromium at {chromium}: apt-get install chromium")
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="moodfed-screenshot-") as tmp:
        folder = Path(tmp)
        url = releases_url if releases_url is not None else seed_demo_store(folder)
        password = secrets.token_urlsafe(16)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MOODFED_OIDC_")},
            "MOODFED_RELEASES_URL": url,
            "MOODFED_ANALYST_USER": USER,
            "MOODFED_ANALYST_PASSWORD_HASH": hash_password(password),
        }
        with (
            serve_dashboard(env=env, log_path=folder / "streamlit.log", cwd=folder) as served,
            sync_playwright() as playwright,
        ):
            browser = launch_chromium(playwright, executable=chromium)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                log_in(page, served.url, user=USER, password=password)
                screenshot_page(page, output)
            finally:
                browser.close()
    return output
