"""The ``moodfed`` command: one entry point for every part of the platform."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consent.cli import app as consent_app
from dashboard.cli import app as dashboard_app

__all__ = ["app", "main"]

app = typer.Typer(
    help="moodfed: federated, differentially private mood research with a consent ledger.",
    no_args_is_help=True,
)
app.add_typer(consent_app, name="consent")
app.add_typer(dashboard_app, name="dashboard")


@app.command()
def demo(
    devices: Annotated[int, typer.Option(help="synthetic devices")] = 500,
    rounds: Annotated[int, typer.Option(help="DP-FedAvg training rounds")] = 4,
    analytics_weeks: Annotated[int, typer.Option(help="weeks of DP analytics to release")] = 3,
    dashboard: Annotated[
        bool, typer.Option("--dashboard/--no-dashboard", help="serve the dashboard at the end")
    ] = True,
    seed: Annotated[int, typer.Option(help="reproducible population, sampling and noise")] = 7,
) -> None:
    """Run the whole platform on one machine, on the embedded defaults."""
    from server.demo import run_demo

    code = run_demo(
        devices=devices,
        rounds=rounds,
        analytics_weeks=analytics_weeks,
        dashboard=dashboard,
        seed=seed,
    )
    raise typer.Exit(code)


@app.command()
def train(
    devices: Annotated[int, typer.Option(help="synthetic devices (one SuperNode each)")] = 20,
    rounds: Annotated[int, typer.Option(help="planned rounds")] = 5,
    expected_devices: Annotated[
        float, typer.Option(help="expected devices per round (q = expected / eligible)")
    ] = 10.0,
    noise_multiplier: Annotated[
        float, typer.Option("--sigma", "--noise-multiplier", help="server noise multiplier σ")
    ] = 1.0,
    clipping_norm: Annotated[
        float, typer.Option("--clip", "--clipping-norm", help="update clipping norm C")
    ] = 1.0,
    epsilon: Annotated[float, typer.Option(help="per-user budget ε (hard stop)")] = 8.0,
    delta: Annotated[float, typer.Option(help="δ of the per-user budget")] = 1e-5,
    seed: Annotated[
        int | None,
        typer.Option(help="reproducible population, sampling and noise (simulation only)"),
    ] = None,
    grant_fraction: Annotated[float, typer.Option(help="share of devices that grant")] = 0.9,
    withdraw_fraction: Annotated[
        float, typer.Option(help="share of granting devices that withdraw part-way")
    ] = 0.2,
    withdraw_at_round: Annotated[
        int | None, typer.Option(help="the round they withdraw before (default: the middle)")
    ] = None,
    holdout_devices: Annotated[
        int, typer.Option(help="synthetic held-out devices for the server's MAE")
    ] = 20,
    days: Annotated[int, typer.Option(help="days of diary per synthetic device")] = 120,
    local_epochs: Annotated[int, typer.Option(help="DP-SGD epochs on each device")] = 1,
    device_epsilon: Annotated[
        float, typer.Option(help="each device's own record-level DP-SGD budget")
    ] = 10.0,
    consent_url: Annotated[
        str | None,
        typer.Option(
            help="use this consent service (token from MOODFED_ELIGIBILITY_TOKEN) instead "
            "of a temporary one"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="where the release store and budgets live (env MOODFED_DATA_DIR)"),
    ] = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs for Ray (default: all)")] = None,
) -> None:
    """Train the mood model with consent-gated DP-FedAvg on Flower's Simulation Engine."""
    from pydantic import ValidationError

    from server.settings import TrainSettings
    from server.train import run_train

    options: dict[str, object] = {
        "rounds": rounds,
        "expected_devices": expected_devices,
        "noise_multiplier": noise_multiplier,
        "clipping_norm": clipping_norm,
        "epsilon_budget": epsilon,
        "delta": delta,
        "seed": seed,
        "grant_fraction": grant_fraction,
        "withdraw_fraction": withdraw_fraction,
        "withdraw_at_round": (
            withdraw_at_round if withdraw_at_round is not None else rounds // 2 + 1
        ),
        "holdout_devices": holdout_devices,
        "days": days,
        "local_epochs": local_epochs,
        "device_epsilon_budget": device_epsilon,
    }
    if consent_url is not None:
        options["consent_url"] = consent_url
    if data_dir is not None:
        options["data_dir"] = data_dir
    try:
        settings = TrainSettings(**options)  # type: ignore[arg-type]
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from None
    report = run_train(devices=devices, settings=settings, ray_cpus=cpus)
    if report.status == "failed":
        raise typer.Exit(1)


def main() -> None:
    app()
