"""The ``moodfed`` command: one entry point for every part of the platform.

Its subcommands are registered by the packages that own them, through the
``moodfed.commands`` entry points in pyproject.toml (a Typer app becomes a group, a
function a command), so this module depends on none of them: the server's production
code never imports the dashboard or the simulations.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

__all__ = ["COMMANDS_GROUP", "build_app", "main"]

COMMANDS_GROUP = "moodfed.commands"


def build_app() -> typer.Typer:
    """The root command with every registered subcommand."""
    app = typer.Typer(
        help="moodfed: federated, differentially private mood research with a consent ledger.",
        no_args_is_help=True,
    )
    found = sorted(entry_points(group=COMMANDS_GROUP), key=lambda point: point.name)
    if not found:
        raise RuntimeError(
            "no moodfed commands are registered: install the package (pip install -e .)"
        )
    for point in found:
        command = point.load()
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=point.name)
        else:
            app.command(name=point.name)(command)
    return app


def main() -> None:
    build_app()()
