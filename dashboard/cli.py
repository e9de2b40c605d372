"""``moodfed dashboard hash-password`` and ``moodfed dashboard run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from dashboard.passwords import hash_password

__all__ = ["app", "streamlit_command"]

app = typer.Typer(help="The analysts' dashboard.", no_args_is_help=True)

APP_SCRIPT = Path(__file__).with_name("app.py")


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


def streamlit_command(*, port: int, host: str = "127.0.0.1") -> list[str]:
    """The command that serves the dashboard (``moodfed dashboard run`` and the demo)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_SCRIPT),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--client.showErrorDetails",
        "none",
    ]


@app.command("run")
def run_command(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8501,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Run the dashboard (``streamlit run dashboard/app.py``) with the MOODFED_ settings."""
    command = streamlit_command(port=port, host=host)
    raise typer.Exit(subprocess.call(command, env=os.environ.copy()))  # noqa: S603


if __name__ == "__main__":
    app()
