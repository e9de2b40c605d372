"""The ``moodfed`` command: one entry point for every part of the platform."""

from __future__ import annotations

from typing import Annotated

import typer

from consent.cli import app as consent_app

__all__ = ["app", "main"]

app = typer.Typer(
    help="moodfed: federated, differentially private mood research with a consent ledger.",
    no_args_is_help=True,
)
app.add_typer(consent_app, name="consent")


@app.command()
def demo(
    devices: Annotated[int, typer.Option(help="how many synthetic devices")] = 12,
) -> None:
    """Run the platform end to end on one machine, on the embedded defaults."""
    from server.demo import run_demo

    run_demo(devices=devices)


def main() -> None:
    app()
