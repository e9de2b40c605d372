"""The login throttle: per user name and per source, exponential backoff, a lockout an operator
can list and clear, shared through its database (SQLite and PostgreSQL) and kept across restarts.

Time comes from a clock the test moves; concurrency is real threads started together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dashboard import passwords
from dashboard.cli import app as dashboard_cli
from dashboard.loglimit import RateLimitedLog
from dashboard.throttle import (
    LOCAL_SOURCE,
    Admitted,
    LoginThrottle,
    Refused,
    ThrottlePolicy,
    source_key,
)

POLICY = ThrottlePolicy(
    free_attempts=3, backoff_seconds=10.0, max_lockout_seconds=80.0, reset_seconds=3600.0
)


class Clock:
    """Wall time that moves only when the test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(database_url: str, clock: Clock) -> Iterator[LoginThrottle]:
    """A throttle on each backend (the ``database_url`` fixture: SQLite, and PostgreSQL)."""
    made = LoginThrottle(database_url, policy=POLICY, clock=clock)
    yield made
    made.close()


def _fail(throttle: LoginThrottle, times: int, *, user: str, source: str) -> list[object]:
    return [throttle.admit(user=user, source=source) for _ in range(times)]


def test_the_free_attempts_are_admitted_then_the_user_and_source_are_locked(
    throttle: LoginThrottle,
) -> None:
    results = _fail(throttle, 4, user="analyst", source="203.0.113.7")

    assert [type(r) for r in results] == [Admitted, Admitted, Admitted, Refused]
    refused = results[3]
    assert isinstance(refused, Refused)
    assert refused.locked == ("user", "source")
    assert refused.retry_after == pytest.approx(10.0)


def test_each_further_failure_doubles_the_lockout_up_to_the_cap(
    throttle: LoginThrottle, clock: Clock
) -> None:
    _fail(throttle, 3, user="analyst", source="203.0.113.7")
    waits = []
    for _ in range(6):
        refused = throttle.admit(user="analyst", source="203.0.113.7")
        assert isinstance(refused, Refused)
        waits.append(round(refused.retry_after))
        clock.advance(refused.retry_after)  # the lock has just run out: one more guess
        assert isinstance(throttle.admit(user="analyst", source="203.0.113.7"), Admitted)

    assert waits == [10, 20, 40, 80, 80, 80]


def test_a_locked_user_name_is_refused_from_every_source_and_a_locked_source_for_every_user(
    throttle: LoginThrottle,
) -> None:
    _fail(throttle, 3, user="analyst", source="203.0.113.7")  # both locked now
    _fail(throttle, 3, user="mallory", source="198.51.100.9")

    from_elsewhere = throttle.admit(user="Analyst", source="192.0.2.1")  # case folded
    other_user_same_source = throttle.admit(user="ben", source="203.0.113.7")
    unrelated = throttle.admit(user="ben", source="192.0.2.2")

    assert isinstance(from_elsewhere, Refused) and from_elsewhere.locked == ("user",)
    assert isinstance(other_user_same_source, Refused)
    assert other_user_same_source.locked == ("source",)
    assert isinstance(unrelated, Admitted)


def test_addresses_in_one_ipv6_64_are_one_source(throttle: LoginThrottle) -> None:
    for host in range(1, 4):
        throttle.admit(user=f"guess{host}", source=f"2001:db8:0:1::{host}")

    same_64 = throttle.admit(user="guess9", source="2001:db8:0:1:ffff::9")
    next_64 = throttle.admit(user="guess9", source="2001:db8:0:2::1")

    assert isinstance(same_64, Refused) and same_64.locked == ("source",)
    assert isinstance(next_64, Admitted)
    assert source_key("127.0.0.1") == source_key("::1") == source_key(None) == LOCAL_SOURCE


def test_a_success_forgets_the_failures_of_that_user_name_and_source(
    throttle: LoginThrottle,
) -> None:
    _fail(throttle, 2, user="analyst", source="203.0.113.7")
    throttle.succeeded(user="analyst", source="203.0.113.7")

    results = _fail(throttle, 3, user="analyst", source="203.0.113.7")

    assert all(isinstance(r, Admitted) for r in results)


def test_failures_are_forgotten_after_the_quiet_period(
    throttle: LoginThrottle, clock: Clock
) -> None:
    _fail(throttle, 3, user="analyst", source="203.0.113.7")
    clock.advance(POLICY.reset_seconds + 1)

    assert throttle.lockouts() == []
    assert isinstance(throttle.admit(user="analyst", source="203.0.113.7"), Admitted)


def test_a_lockout_survives_a_restart_and_is_seen_by_another_process(
    database_url: str, clock: Clock
) -> None:
    first = LoginThrottle(database_url, policy=POLICY, clock=clock)
    _fail(first, 3, user="analyst", source="203.0.113.7")
    first.close()

    restarted = LoginThrottle(database_url, policy=POLICY, clock=clock)
    refused = restarted.admit(user="analyst", source="203.0.113.7")
    restarted.close()

    assert isinstance(refused, Refused)


def test_parallel_attempts_cannot_outrun_the_allowance(throttle: LoginThrottle) -> None:
    attempts = 16
    start = threading.Barrier(attempts)
    results: list[object] = []
    lock = threading.Lock()

    def attempt() -> None:
        start.wait()
        result = throttle.admit(user="analyst", source="203.0.113.7")
        with lock:
            results.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(isinstance(r, Admitted) for r in results) == POLICY.free_attempts
    assert sum(isinstance(r, Refused) for r in results) == attempts - POLICY.free_attempts


def test_the_operator_lists_and_clears_lockouts(throttle: LoginThrottle, clock: Clock) -> None:
    _fail(throttle, 4, user="analyst", source="203.0.113.7")  # the 4th is refused

    records = {(r.kind, r.key): r for r in throttle.lockouts()}
    cleared = throttle.unlock(source="203.0.113.7")
    still = throttle.admit(user="ben", source="203.0.113.7")

    assert set(records) == {("user", "analyst"), ("source", "203.0.113.7")}
    user = records["user", "analyst"]
    assert (user.failures, user.refused, user.locked_at(clock.now)) == (3, 1, True)
    assert [(r.kind, r.key) for r in cleared] == [("source", "203.0.113.7")]
    assert isinstance(still, Admitted)  # the source is free again; the user name is not
    assert isinstance(throttle.admit(user="analyst", source="192.0.2.1"), Refused)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "say what to unlock"), ({"source": "not-an-address"}, "does not appear to be an IPv4")],
)
def test_an_unlock_that_says_nothing_or_no_address_clears_nothing(
    throttle: LoginThrottle, kwargs: dict[str, str], message: str
) -> None:
    _fail(throttle, 3, user="analyst", source="203.0.113.7")

    with pytest.raises(ValueError, match=message):
        throttle.unlock(**kwargs)

    assert len(throttle.lockouts()) == 2


def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="free_attempts"):
        ThrottlePolicy(free_attempts=0)
    with pytest.raises(ValueError, match="backoff_seconds"):
        ThrottlePolicy(backoff_seconds=100, max_lockout_seconds=10)


# The operator's commands


def _state(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'dashboard-logins.db'}"


def test_the_lockouts_command_shows_what_is_locked_and_unlock_clears_it(tmp_path: Path) -> None:
    url = _state(tmp_path)
    made = LoginThrottle(url, policy=POLICY)
    _fail(made, 3, user="mallory\nFAKE LINE", source="203.0.113.7")
    made.close()
    runner = CliRunner()

    listed = runner.invoke(dashboard_cli, ["lockouts", "--state-url", url])
    unlocked = runner.invoke(
        dashboard_cli, ["unlock", "--user", "mallory\nFAKE LINE", "--state-url", url]
    )
    after = runner.invoke(dashboard_cli, ["lockouts", "--state-url", url])

    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 2 and all("LOCKED until" in line for line in lines)
    assert any("'mallory\\nfake line'" in line for line in lines)  # one line, escaped
    assert any(line.startswith("source") and "203.0.113.7" in line for line in lines)
    assert unlocked.exit_code == 0 and "cleared: user" in unlocked.output
    assert after.output.count("LOCKED") == 1  # the source is still locked


def test_unlock_without_a_target_or_with_a_bad_address_fails_and_changes_nothing(
    tmp_path: Path,
) -> None:
    url = _state(tmp_path)
    made = LoginThrottle(url, policy=POLICY)
    _fail(made, 3, user="analyst", source="203.0.113.7")
    runner = CliRunner()

    nothing = runner.invoke(dashboard_cli, ["unlock", "--state-url", url])
    bad = runner.invoke(dashboard_cli, ["unlock", "--source", "300.1.2.3", "--state-url", url])

    assert nothing.exit_code == 2 and "say what to unlock" in nothing.output
    assert bad.exit_code == 2 and "300.1.2.3" in bad.output
    assert len(made.lockouts()) == 2
    made.close()


def test_the_commands_never_create_a_state_file_that_is_not_there(tmp_path: Path) -> None:
    url = _state(tmp_path)

    listed = CliRunner().invoke(dashboard_cli, ["lockouts", "--state-url", url])
    unlocked = CliRunner().invoke(dashboard_cli, ["unlock", "--all", "--state-url", url])

    assert listed.exit_code == 0 and "no failed logins recorded" in listed.output
    assert unlocked.exit_code == 1
    assert not (tmp_path / "state").exists()


def test_the_state_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    LoginThrottle(_state(tmp_path)).close()

    assert (tmp_path / "state" / "dashboard-logins.db").stat().st_mode & 0o077 == 0


# Rate-limited log lines and bounded argon2id


def test_failure_lines_are_rate_limited_per_key_and_overall(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    limited = RateLimitedLog(
        logging.getLogger("test.limited"), interval=60, max_lines=3, clock=clock
    )
    caplog.set_level(logging.WARNING, logger="test.limited")

    written = [limited.warning("a", "failure a") for _ in range(5)]
    others = [limited.warning(key, "failure %s", key) for key in ("b", "c", "d", "e")]
    clock.advance(60)
    later = limited.warning("a", "failure a")

    assert written == [True, False, False, False, False]
    assert others == [True, True, False, False]  # three lines a minute in all
    assert later
    assert caplog.messages[-1] == (
        "failure a (4 more like it held back; 2 other lines held back by the rate limit)"
    )
    assert len(caplog.messages) == 4


def test_no_more_than_two_argon2id_verifications_run_at_once() -> None:
    password_hash = passwords.hash_password("right")
    slots = passwords._verification_slots
    assert all(slots.acquire(blocking=False) for _ in range(passwords.MAX_CONCURRENT_VERIFICATIONS))
    assert not slots.acquire(blocking=False)  # the limit is the two taken here
    done = threading.Event()
    outcome: list[bool] = []

    def verify() -> None:
        outcome.append(passwords.verify_password(password_hash, "right"))
        done.set()

    worker = threading.Thread(target=verify)
    worker.start()
    try:
        waited = done.wait(timeout=1.0)  # about ten verifications' time: it must still wait
    finally:
        slots.release()
    assert not waited
    assert done.wait(timeout=60)
    slots.release()
    worker.join()
    assert outcome == [True]
