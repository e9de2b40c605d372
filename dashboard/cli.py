"""The ``moodfed dashboard`` commands: ``hash-password``, ``run`` and ``screenshot``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from dashboard.passwords import hash_password
from dashboard.serve import streamlit_command

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
    """Run the dashboard (``streamlit run dashboard/app.py``) with the MOODFED_ settings."""
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


if __name__ == "__main__":
    app()
