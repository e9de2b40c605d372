"""Fixtures of the dashboard tests: a release store seeded by the real pipeline (not private),
small private and old-version stores written through ``ReleaseStore``, a login."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import hash_password
from server.releases import ReleaseStore
from server.releases.readers import analytics_cells
from server.sim.seed import seed_release_store

from .stores import write_old_store, write_private_store

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
USER, PASSWORD = "analyst", "correct horse battery staple"
TRAINING_ROUNDS = 6


@pytest.fixture(scope="session")
def seeded_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Twelve weeks of weekly releases for 16 cohorts (some too small: suppressed) and a run."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'releases.db'}"
    seed_release_store(
        url, weeks=12, cohorts=16, devices=900, training_rounds=TRAINING_ROUNDS, seed=5
    )
    with ReleaseStore(url, read_only=True) as store:
        cells = analytics_cells(store.engine, query="mood-by-cohort")
    assert any(c["suppressed"] for c in cells) and not all(c["suppressed"] for c in cells)
    return url


@pytest.fixture(scope="session")
def empty_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'releases.db'}"
    ReleaseStore(url).close()
    return url


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def login_state_url(tmp_path: Path) -> str:
    """Where this test's dashboard keeps failed logins (fresh for every test)."""
    return f"sqlite:///{tmp_path / 'login-state' / 'dashboard-logins.db'}"


@pytest.fixture
def dashboard_env(
    monkeypatch: pytest.MonkeyPatch, seeded_url: str, password_hash: str, login_state_url: str
) -> dict[str, str]:
    """The settings a deployment gives the dashboard (no consent service)."""
    env = {
        "MOODFED_RELEASES_URL": seeded_url,
        "MOODFED_ANALYST_USER": USER,
        "MOODFED_ANALYST_PASSWORD_HASH": password_hash,
        "MOODFED_LOGIN_STATE_URL": login_state_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in (
        "MOODFED_CONSENT_URL",
        "MOODFED_CONSENT_LOG_KEY",
        "MOODFED_OIDC_PROVIDER",
        "MOODFED_RELEASES_PASSWORD_FILE",
        "MOODFED_LOGIN_FREE_ATTEMPTS",
        "MOODFED_LOGIN_BACKOFF_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    return env


def log_in(app: AppTest, *, user: str = USER, password: str = PASSWORD) -> AppTest:
    """Fill the login form and submit it, as an analyst would."""
    app.text_input(key="login_user").input(user)
    app.text_input(key="login_password").input(password)
    app.button[0].click()
    return app.run()


def logged_in_app() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120).run()
    log_in(app)
    assert not app.exception, app.exception
    return app


@pytest.fixture(scope="session")
def private_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small store of private releases in both aggregation modes, written directly."""
    url = f"sqlite:///{tmp_path_factory.mktemp('private') / 'releases.db'}"
    write_private_store(url)
    return url


@pytest.fixture(scope="session")
def old_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same store as an older version left it: no release_epsilon, aggregation, private."""
    url = f"sqlite:///{tmp_path_factory.mktemp('old') / 'releases.db'}"
    write_old_store(url)
    return url
