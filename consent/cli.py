"""``moodfed consent serve`` and ``moodfed consent audit``."""

from __future__ import annotations

import logging.config
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from consent.settings import ConsentSettings

__all__ = ["app"]

app = typer.Typer(help="The consent ledger service.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


def _settings(**overrides: Any) -> ConsentSettings:
    """The settings from the environment, with the options given on the command line on top."""
    given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
    return ConsentSettings(**given)


_ARGV_REFUSAL = (
    "--eligibility-token is refused: a token on the command line is visible to every local "
    "user in `ps`. Set MOODFED_ELIGIBILITY_TOKEN, or put the token in a file only this user "
    "can read (chmod 600) and pass --eligibility-token-file."
)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="(env MOODFED_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="(env MOODFED_PORT)")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (env MOODFED_DATABASE_URL)")
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="the log's Ed25519 seed (env MOODFED_KEY_FILE)")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="(env MOODFED_WORKERS)")] = None,
    eligibility_token_file: Annotated[
        Path | None,
        typer.Option(
            help="a file (mode 0600) holding the bearer token for /v1/eligibility "
            "(env MOODFED_ELIGIBILITY_TOKEN_FILE; or the token itself in "
            "MOODFED_ELIGIBILITY_TOKEN)"
        ),
    ] = None,
    eligibility_token: Annotated[
        str | None, typer.Option(hidden=True, help="refused: see --eligibility-token-file")
    ] = None,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(help="PEM certificate chain: serve HTTPS (env MOODFED_SSL_CERTFILE)"),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        typer.Option(help="PEM private key for --ssl-certfile (env MOODFED_SSL_KEYFILE)"),
    ] = None,
) -> None:
    """Run the consent service (migrates the schema and creates the log key first).

    Limits on slow clients, connections and the access log come from MOODFED_ variables
    (see consent/README.md).
    """
    from consent.api.server import LOG_CONFIG
    from consent.api.server import serve as run_server
    from consent.ledger import load_or_create_log_key
    from consent.note import NoteSigner
    from consent.store import migrate

    if eligibility_token is not None:
        console.print(f"[red]{_ARGV_REFUSAL}[/]")
        raise typer.Exit(2)
    try:
        settings = _settings(
            host=host,
            port=port,
            database_url=database_url,
            key_file=key_file,
            workers=workers,
            eligibility_token_file=eligibility_token_file,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        token = settings.ensure_eligibility_token()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        console.print(f"[red]cannot start[/]: {exc}")
        raise typer.Exit(2) from None
    logging.config.dictConfig(LOG_CONFIG)  # the lines the workers write, from the start
    migrate(settings.resolved_database_url)
    signer = NoteSigner(settings.log_origin, load_or_create_log_key(settings.resolved_key_file))
    console.print(
        f"[bold]moodfed consent[/] on {settings.scheme}://{settings.host}:{settings.port}"
    )
    console.print(f"  ledger        {settings.resolved_database_url}")
    console.print(f"  verifier key  {signer.verifier_key}")
    if settings.eligibility_token_file is not None:
        where = f"from {settings.eligibility_token_file}"
    elif os.environ.get("MOODFED_ELIGIBILITY_TOKEN"):
        where = "from MOODFED_ELIGIBILITY_TOKEN"
    else:
        where = f"in {settings.token_file}"
    console.print(f"  eligibility   bearer token {where}")
    console.print(
        f"  limits        head {settings.header_timeout_seconds:g} s, body "
        f"{settings.body_timeout_seconds:g} s, {settings.max_connections} connections "
        "per worker"
    )
    if settings.workers > 1:
        # Worker processes rebuild the settings from the environment (which other users
        # cannot read, unlike the command line).
        os.environ.update(
            MOODFED_DATABASE_URL=settings.resolved_database_url,
            MOODFED_KEY_FILE=str(settings.resolved_key_file),
            MOODFED_DATA_DIR=str(settings.data_dir),
            MOODFED_HOST=settings.host,
            MOODFED_PORT=str(settings.port),
        )
        if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
            os.environ.update(
                MOODFED_SSL_CERTFILE=str(settings.ssl_certfile),
                MOODFED_SSL_KEYFILE=str(settings.ssl_keyfile),
            )
        if settings.eligibility_token_file is None:
            os.environ["MOODFED_ELIGIBILITY_TOKEN"] = token.get_secret_value()
        else:
            os.environ["MOODFED_ELIGIBILITY_TOKEN_FILE"] = str(settings.eligibility_token_file)
    run_server(settings)


@app.command()
def audit(
    database_url: Annotated[str | None, typer.Option(help="(env MOODFED_DATABASE_URL)")] = None,
    key_file: Annotated[Path | None, typer.Option(help="(env MOODFED_KEY_FILE)")] = None,
    verifier_key: Annotated[
        str | None, typer.Option(help="the log's published verifier key (instead of the key file)")
    ] = None,
    trusted_checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            help="a signed checkpoint kept outside the database (a device's, an auditor's, a "
            "witness's); the stored log must extend it (repeatable)"
        ),
    ] = None,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            help="a witness's URL: its latest cosigned checkpoint of this log is trusted too "
            "(repeatable)"
        ),
    ] = None,
) -> None:
    """Recompute every leaf, the tree and every checkpoint; exit 1 naming the first bad index.

    With trusted checkpoints (files, or witnesses' latest cosigned ones), a stored log
    smaller than one of them (rolled back) or inconsistent with it (forked) fails too.
    """
    from consent.audit import audit_log
    from consent.ledger import load_or_create_log_key
    from consent.note import NoteError, NoteSigner, NoteVerifier

    settings = _settings(database_url=database_url, key_file=key_file)
    if verifier_key is None:
        path = settings.resolved_key_file
        if not path.exists():
            console.print(f"[red]no log key at {path}[/]: pass --key-file or --verifier-key")
            raise typer.Exit(2)
        verifier_key = NoteSigner(settings.log_origin, load_or_create_log_key(path)).verifier_key
    trusted: list[tuple[str, str]] = []
    for checkpoint_file in trusted_checkpoint or []:
        try:
            trusted.append((str(checkpoint_file), checkpoint_file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            console.print(f"[red]cannot read the trusted checkpoint {checkpoint_file}[/]: {exc}")
            raise typer.Exit(2) from None
    if witness:
        from consent.witness.client import WitnessClientError, fetch_witness_checkpoint

        try:
            origin = NoteVerifier(verifier_key).name
        except NoteError as exc:
            console.print(f"[red]the verifier key is malformed[/]: {exc}")
            raise typer.Exit(2) from None
        for url in witness:
            try:
                trusted.append((f"of witness {url}", fetch_witness_checkpoint(url, origin)))
            except WitnessClientError as exc:
                console.print(f"[red]cannot get the witness's checkpoint[/]: {exc}")
                raise typer.Exit(2) from None
    report = audit_log(settings.resolved_database_url, verifier_key, trusted_checkpoints=trusted)
    if report.ok:
        console.print(
            f"[green]audit passed[/]: {report.size} entries, {report.checkpoints} checkpoints, "
            f"root {report.root}"
        )
        if report.trusted_sizes:
            sizes = ", ".join(str(size) for size in report.trusted_sizes)
            console.print(f"  consistent with the trusted checkpoint(s) of size {sizes}")
        return
    if report.first_bad_index is not None:
        console.print(f"[red]audit FAILED at index {report.first_bad_index}[/]")
    else:
        console.print("[red]audit FAILED[/]")
    for problem in report.problems[:20]:
        console.print(f"  - {problem}")
    raise typer.Exit(1)
