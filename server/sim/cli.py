"""``moodfed train`` and ``moodfed demo``: the simulations on one machine.

``train``'s options are :class:`~server.sim.settings.SimSettings`' fields, derived from
it, so the settings, the environment (``MOODFED_`` variables), the Flower run config and
the command line share one list of names and one set of defaults. An option not given
leaves the environment (or the default) in force.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal, get_args, get_origin

import typer
from pydantic.fields import FieldInfo

from server.sim.settings import SimSettings

__all__ = ["demo", "train"]

# Settings a command line must not carry (secrets, URLs that may hold a password) or that
# `moodfed train` decides itself.
_NOT_OPTIONS = frozenset(
    {
        "eligibility_token",
        "release_database_url",
        "accountant_database_url",
        "simulation",
        "sim_root",
    }
)
# Short names kept from earlier releases of the command.
_ALIASES = {
    "noise_multiplier": ("--sigma",),
    "clipping_norm": ("--clip",),
    "epsilon_budget": ("--epsilon",),
    "device_epsilon_budget": ("--device-epsilon",),
}


def _option_type(annotation: Any) -> Any:
    """The type typer parses an option as (a Literal's choices are checked by pydantic)."""
    if get_origin(annotation) is Literal:
        return str
    kinds = [kind for kind in get_args(annotation) if kind is not type(None)]
    return kinds[0] if kinds else annotation


def _help(name: str, info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=False)
    shown = "" if info.default_factory is not None else f"default {default}, "
    return f"{info.description or name} ({shown}env MOODFED_{name.upper()})"


def _setting_parameters() -> list[inspect.Parameter]:
    parameters = []
    for name, info in SimSettings.model_fields.items():
        if name in _NOT_OPTIONS:
            continue
        flag = "--" + name.replace("_", "-")
        option = typer.Option(flag, *_ALIASES.get(name, ()), help=_help(name, info))
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[_option_type(info.annotation) | None, option],
            )
        )
    return parameters


def train(
    devices: Annotated[int, typer.Option(help="synthetic devices (one SuperNode each)")] = 20,
    cpus: Annotated[int | None, typer.Option(help="CPUs for Ray (default: all)")] = None,
    **given: Any,
) -> None:
    """Train the mood model with consent-gated DP-FedAvg on Flower's Simulation Engine."""
    from pydantic import ValidationError

    from server.sim.train import run_train

    try:
        settings = SimSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from None
    report = run_train(devices=devices, settings=settings, ray_cpus=cpus)
    if report.status == "failed":
        raise typer.Exit(1)


# Typer reads the options from this signature. A function declares no __signature__ to
# mypy, but inspect.signature (so typer) honours it.
train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # see above
    [
        *(p for p in inspect.signature(train).parameters.values() if p.kind != p.VAR_KEYWORD),
        *_setting_parameters(),
    ]
)


def demo(
    devices: Annotated[int, typer.Option(help="synthetic devices")] = 300,
    rounds: Annotated[int, typer.Option(help="DP-FedAvg training rounds")] = 4,
    analytics_weeks: Annotated[int, typer.Option(help="weeks of DP analytics to release")] = 3,
    dashboard: Annotated[
        bool, typer.Option("--dashboard/--no-dashboard", help="serve the dashboard at the end")
    ] = True,
    seed: Annotated[int, typer.Option(help="reproducible population, sampling and noise")] = 7,
) -> None:
    """Run the whole platform on one machine, on the embedded defaults."""
    from server.sim.demo import run_demo

    code = run_demo(
        devices=devices,
        rounds=rounds,
        analytics_weeks=analytics_weeks,
        dashboard=dashboard,
        seed=seed,
    )
    raise typer.Exit(code)
