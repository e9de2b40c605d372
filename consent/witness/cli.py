"""``moodfed witness serve`` and ``moodfed witness key``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from consent.witness.settings import WitnessSettings

__all__ = ["app"]

app = typer.Typer(
    help="A transparency-log witness (C2SP tlog-witness): cosigns consistent checkpoints.",
    no_args_is_help=True,
)
console = Console(stderr=True, soft_wrap=True)


def _settings(**overrides: Any) -> WitnessSettings:
    """The settings from the environment, with the options given on the command line on top."""
    given = {key: value for key, value in overrides.items() if value not in (None, [])}
    return WitnessSettings(**given)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="(env MOODFED_WITNESS_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="(env MOODFED_WITNESS_PORT)")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (env MOODFED_WITNESS_DATABASE_URL)")
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(help="the witness's Ed25519 seed, made 0600 (env MOODFED_WITNESS_KEY_FILE)"),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="the witness's key name (env MOODFED_WITNESS_NAME)")
    ] = None,
    log_key: Annotated[
        list[str] | None,
        typer.Option(
            help="a witnessed log's verifier key, repeatable; its name is the log's origin "
            "(env MOODFED_WITNESS_LOG_KEYS, a JSON list)"
        ),
    ] = None,
) -> None:
    """Run the witness (creates its key and its store on first start)."""
    import uvicorn

    from consent.witness.app import create_witness_app, witness_from_settings

    settings = _settings(
        host=host,
        port=port,
        database_url=database_url,
        key_file=key_file,
        name=name,
        log_keys=log_key,
    )
    if not settings.log_keys:
        console.print("[red]no log to witness[/]: pass --log-key or MOODFED_WITNESS_LOG_KEYS")
        raise typer.Exit(2)
    witness = witness_from_settings(settings)
    console.print(f"[bold]moodfed witness[/] on http://{settings.host}:{settings.port}")
    console.print(f"  store         {settings.resolved_database_url}")
    console.print(f"  verifier key  {witness.verifier_key}")
    for origin in sorted(witness.logs):
        console.print(f"  witnesses     {origin}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        uvicorn.run(
            create_witness_app(settings, witness=witness),
            host=settings.host,
            port=settings.port,
            log_level="warning",
        )
    finally:
        witness.store.close()


@app.command()
def key(
    key_file: Annotated[Path | None, typer.Option(help="(env MOODFED_WITNESS_KEY_FILE)")] = None,
    name: Annotated[str | None, typer.Option(help="(env MOODFED_WITNESS_NAME)")] = None,
) -> None:
    """Print the witness's verifier key (creating the key if there is none yet)."""
    from consent.witness.cosignature import CosignatureSigner
    from consent.witness.keys import load_or_create_witness_key

    settings = _settings(key_file=key_file, name=name)
    signer = CosignatureSigner(
        settings.name, load_or_create_witness_key(settings.resolved_key_file)
    )
    typer.echo(signer.verifier_key)
