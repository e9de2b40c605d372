"""The ``moodfed dashboard`` commands: ``hash-password``, ``run``, ``screenshot``, the
operator's ``lockouts`` and ``unlock``, and ``create-readonly-role``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from consent.secret_files import SecretFileError, read_secret_file
from dashboard.loglimit import safe_text
from dashboard.passwords import hash_password
from dashboard.serve import streamlit_command
from dashboard.settings import DashboardSettings
from dashboard.throttle import LockoutRecord, LoginThrottle

__all__ = ["app"]

app = typer.Typer(help="The analysts' dashboard.", no_args_is_help=True)


@app.command("hash-password")
def hash_password_command(
    stdin: Annotated[
        bool, typer.Option("--stdin", help="read the password from standard input")
    ] = False,
) -> None:
    """Print an argon2id hash for MOODFED_ANALYST_PASSWORD_HASH (the password is asked for)."""
    if stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise typer.BadParameter("the password must not be empty")
    typer.echo(hash_password(password))


@app.command("run")
def run_command(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8501,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Run the dashboard (``streamlit run dashboard/app.py``, session guard first) with the
    MOODFED_ settings."""
    command = streamlit_command(port=port, host=host)
    raise typer.Exit(subprocess.call(command, env=os.environ.copy()))  # noqa: S603


@app.command("screenshot")
def screenshot_command(
    output: Annotated[
        Path, typer.Option("--output", help="where to write the PNG, e.g. docs/dashboard.png")
    ],
    releases_url: Annotated[
        str | None,
        typer.Option(
            help="the release store to show; default: a demo store seeded by the real "
            "pipeline in a temporary folder"
        ),
    ] = None,
    chromium: Annotated[
        Path | None,
        typer.Option(help="the Chromium to drive (default /usr/bin/chromium; never downloaded)"),
    ] = None,
) -> None:
    """Save the Overview page's screenshot: start the dashboard, log in, capture, stop."""
    from dashboard import screenshot  # Playwright and the seeding load only for this command
    from dashboard.serve import DashboardStartError

    try:
        saved = screenshot.save_overview_screenshot(
            output, releases_url=releases_url, chromium=chromium or screenshot.CHROMIUM
        )
    except (ImportError, FileNotFoundError, DashboardStartError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote {saved}")


StateUrl = Annotated[
    str | None,
    typer.Option(
        "--state-url",
        help="where the dashboard keeps failed logins (default: MOODFED_LOGIN_STATE_URL, "
        "else $MOODFED_DATA_DIR/dashboard-logins.db)",
    ),
]


def _throttle(state_url: str | None) -> LoginThrottle | None:
    """The login state the dashboard uses, or None when no failure was ever recorded there."""
    url = state_url or DashboardSettings().login_state_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return None  # never create it here: a mistyped path must not leave a file behind
    try:
        return LoginThrottle(url)
    except (ValueError, SQLAlchemyError) as error:
        typer.echo(f"error: cannot open the login state {url}: {error}", err=True)
        raise typer.Exit(1) from error


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _describe(record: LockoutRecord, now: float) -> str:
    shown = safe_text(record.key) if record.kind == "user" else record.key
    state = (
        f"LOCKED until {_when(record.locked_until)} UTC ({record.locked_until - now:.0f} s)"
        if record.locked_at(now)
        else "not locked"
    )
    return (
        f"{record.kind:<6} {shown:<24} {record.failures:>3} failed, {record.refused:>3} refused, "
        f"last {_when(record.last_failure)} UTC, {state}"
    )


@app.command("lockouts")
def lockouts_command(state_url: StateUrl = None) -> None:
    """List the user names and sources with recent failed logins, and which are locked."""
    throttle = _throttle(state_url)
    records = throttle.lockouts() if throttle is not None else []
    if throttle is not None:
        throttle.close()
    if not records:
        typer.echo("no failed logins recorded")
        return
    now = time.time()
    for record in records:
        typer.echo(_describe(record, now))


@app.command("unlock")
def unlock_command(
    user: Annotated[str | None, typer.Option(help="the user name to unlock")] = None,
    source: Annotated[
        str | None, typer.Option(help="the address to unlock (an IPv6 address: its /64)")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="clear every lockout")] = False,
    state_url: StateUrl = None,
) -> None:
    """Forget the failed logins of a user name and/or a source (or all), ending any lockout."""
    if not (user is not None or source is not None or everything):
        raise typer.BadParameter("say what to unlock: --user, --source, or --all")
    throttle = _throttle(state_url)
    if throttle is None:
        typer.echo("nothing to unlock: no failed login was ever recorded", err=True)
        raise typer.Exit(1)
    try:
        cleared = throttle.unlock(user=user, source=source, everything=everything)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    finally:
        throttle.close()
    if not cleared:
        typer.echo("nothing to unlock: no failures recorded for that", err=True)
        raise typer.Exit(1)
    now = time.time()
    for record in cleared:
        typer.echo(f"cleared: {_describe(record, now)}")


@app.command("create-readonly-role")
def create_readonly_role_command(
    database_url: Annotated[
        str,
        typer.Option(
            help="the release database, as a role that may create roles and grant on its "
            "tables; leave its password to libpq (PGPASSWORD or ~/.pgpass), not the URL",
        ),
    ],
    role: Annotated[str, typer.Option(help="the role to create (or update)")],
    password_env: Annotated[
        str, typer.Option(help="the environment variable holding the new role's password")
    ] = "MOODFED_DASHBOARD_DB_PASSWORD",  # noqa: S107 (a variable's name, not a password)
    password_file: Annotated[
        Path | None,
        typer.Option(help="a 0600 file holding the new role's password (instead of the env)"),
    ] = None,
    schema: Annotated[str, typer.Option(help="the schema of the release tables")] = "public",
) -> None:
    """Create a PostgreSQL role that can read the release store and change nothing.

    Prints the MOODFED_RELEASES_URL to use (no password in it); give the dashboard the
    password with MOODFED_RELEASES_PASSWORD_FILE (a 0600 file) or PGPASSWORD.
    """
    from dashboard.roles import RoleError, create_read_only_role  # psycopg loads only here

    try:
        password = (
            read_secret_file(password_file)
            if password_file is not None
            else os.environ.get(password_env, "")
        )
    except SecretFileError as error:
        raise typer.BadParameter(str(error), param_hint="--password-file") from error
    if not password:
        raise typer.BadParameter(
            f"set {password_env} (or give --password-file) to the new role's password"
        )
    try:
        made = create_read_only_role(
            admin_url=database_url, role=role, password=password, schema=schema
        )
    except RoleError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(
        f"{'created' if made.created else 'updated'} role {made.role}: LOGIN, CONNECT, "
        f"SELECT on the release tables, nothing else (checked)",
        err=True,
    )
    for note in made.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(made.url)


if __name__ == "__main__":
    app()
