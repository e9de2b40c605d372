"""The login page under guessing: lockouts shared by sessions, no argon2id for a locked user,
log lines that name the user and the source (never the password), an operator who unlocks.

AppTest runs the real app in this process; the source is ``local`` here (AppTest has no
client address; the browser tests in ``test_hostile_visitor.py`` use real addresses).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from streamlit.runtime.app_session import AppSession
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from dashboard import auth, session_guard
from dashboard.cli import app as dashboard_cli
from dashboard.loglimit import RateLimitedLog
from dashboard.session_guard import AUTHENTICATED_KEY

from .conftest import APP, USER, log_in

LOCKED = "Too many failed logins"
WRONG = "the-wrong-password-471"


@pytest.fixture
def guessing_env(dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Three free attempts, then ten minutes: no lock runs out during a test."""
    monkeypatch.setenv("MOODFED_LOGIN_FREE_ATTEMPTS", "3")
    monkeypatch.setenv("MOODFED_LOGIN_BACKOFF_SECONDS", "600")
    return dashboard_env


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password the real argon2id check is run on, in order."""
    seen: list[str] = []
    real: Callable[[str, str], bool] = auth.verify_password

    def counted(password_hash: str, password: str) -> bool:
        seen.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", counted)
    return seen


def _page() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120).run()


def _errors(app: AppTest) -> list[str]:
    return [str(e.value) for e in app.error]


def _logged_in(app: AppTest) -> bool:
    return any(m.label == "Mean mood (1-5)" for m in app.metric)


@pytest.mark.usefixtures("guessing_env")
def test_after_the_free_attempts_the_right_password_is_refused_without_running_argon2id(
    verifications: list[str],
) -> None:
    app = _page()
    for _ in range(3):
        log_in(app, password=WRONG)
        assert _errors(app) == ["Wrong user name or password."]

    log_in(app)  # the right password, now

    assert LOCKED in _errors(app)[0] and "600 s" in _errors(app)[0]
    assert not _logged_in(app)
    assert verifications == [WRONG] * 3  # the fourth attempt never reached argon2id


@pytest.mark.usefixtures("guessing_env")
def test_the_lockout_holds_in_every_session_of_the_process(verifications: list[str]) -> None:
    first = _page()
    for _ in range(3):
        log_in(first, password=WRONG)

    second = log_in(_page())  # a new browser session, the right password

    assert LOCKED in _errors(second)[0] and not _logged_in(second)
    assert len(verifications) == 3


@pytest.mark.usefixtures("guessing_env")
def test_the_operator_sees_the_lockout_and_unlocking_lets_the_analyst_in(
    login_state_url: str,
) -> None:
    app = _page()
    for _ in range(3):
        log_in(app, password=WRONG)
    runner = CliRunner()

    listed = runner.invoke(dashboard_cli, ["lockouts", "--state-url", login_state_url])
    user_only = runner.invoke(
        dashboard_cli, ["unlock", "--user", USER, "--state-url", login_state_url]
    )
    still_locked = log_in(_page())
    source = runner.invoke(
        dashboard_cli, ["unlock", "--source", "127.0.0.1", "--state-url", login_state_url]
    )
    after = log_in(_page())

    assert listed.exit_code == 0
    assert [line.split()[:2] for line in listed.output.splitlines()] == [
        ["source", "local"],
        ["user", f"'{USER}'"],
    ]
    assert all("3 failed" in line and "LOCKED" in line for line in listed.output.splitlines())
    assert user_only.exit_code == 0
    assert LOCKED in _errors(still_locked)[0]  # the source (loopback) is locked too
    assert source.exit_code == 0 and "cleared: source local" in source.output
    assert not after.exception and _logged_in(after)
    assert after.session_state[AUTHENTICATED_KEY] == USER


@pytest.mark.usefixtures("guessing_env")
def test_failures_are_logged_with_user_and_source_never_the_password_and_rate_limited(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "_failure_log", RateLimitedLog(auth.log))  # this test's minute
    caplog.set_level(logging.INFO, logger="dashboard.auth")
    app = _page()
    for _ in range(3):
        log_in(app, user="mallory", password=WRONG)
    for _ in range(2):
        log_in(app, user="mallory", password=WRONG)  # refused: locked

    lines = [r.getMessage() for r in caplog.records if r.name == "dashboard.auth"]

    assert lines == [
        "dashboard login failed: user 'mallory' from local (1 failures in a row for this "
        "user name, 1 from this source)",
        "dashboard login refused without checking the password: user 'mallory' from local "
        "(locked: user and source, 600 s left)",
    ]
    assert not any(WRONG in r.getMessage() or WRONG in str(r.args) for r in caplog.records)


def test_without_a_place_to_record_attempts_nobody_can_log_in(
    dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, verifications: list[str]
) -> None:
    monkeypatch.setenv("MOODFED_LOGIN_STATE_URL", "sqlite:////dev/null/nowhere/logins.db")

    app = log_in(_page())

    assert _errors(app) == [
        "Logging in is unavailable: the dashboard cannot record login attempts."
    ]
    assert not _logged_in(app) and verifications == []


@pytest.mark.usefixtures("dashboard_env")
def test_a_successful_login_marks_the_session_and_logging_out_unmarks_it() -> None:
    app = log_in(_page())
    marked = app.session_state[AUTHENTICATED_KEY]

    app.sidebar.button[0].click().run()  # "Log out"

    assert marked == USER
    assert AUTHENTICATED_KEY not in app.session_state
    assert app.text_input(key="login_password") is not None


def test_installing_the_session_guard_twice_wraps_streamlit_once() -> None:
    session_guard.install()
    installed = AppSession.handle_backmsg

    session_guard.install()  # app.py does, on every run, after dashboard.launch did

    assert AppSession.handle_backmsg is installed
    assert installed.__name__ == "guarded"
