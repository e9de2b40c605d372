"""The witness's HTTP interface (C2SP tlog-witness), thin over :class:`Witness`.

- ``POST /add-checkpoint``: 200 with the cosignature line(s); 400 malformed (or an old
  size above the checkpoint's); 403 not signed by a trusted key of the log; 404 a log
  this witness does not witness; 409 with the latest cosigned size as
  ``text/x.tlog.size``; 422 inconsistent; 413 an oversized body.
- ``GET /<origin hash>/checkpoint``: the latest cosigned checkpoint of a log (monitoring).
- ``GET /key``: this witness's verifier key (to pin out of band, not to trust from here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from consent.witness.cosignature import CosignatureSigner
from consent.witness.errors import (
    ConflictingSizeError,
    InconsistentCheckpointError,
    MalformedRequestError,
    UnknownLogError,
    UntrustedCheckpointError,
    WitnessError,
)
from consent.witness.keys import load_or_create_witness_key
from consent.witness.protocol import TLOG_SIZE, format_size
from consent.witness.settings import WitnessSettings
from consent.witness.store import WitnessStore
from consent.witness.witness import Witness

__all__ = ["STATUS_OF", "create_witness_app", "witness_from_settings"]

STATUS_OF: dict[type[WitnessError], int] = {
    MalformedRequestError: 400,
    UntrustedCheckpointError: 403,
    UnknownLogError: 404,
    ConflictingSizeError: 409,
    InconsistentCheckpointError: 422,
}

_TEXT = "text/plain; charset=utf-8"


def witness_from_settings(settings: WitnessSettings) -> Witness:
    """The witness the settings describe: its key (made on first start) and its store."""
    signer = CosignatureSigner(
        settings.name, load_or_create_witness_key(settings.resolved_key_file)
    )
    return Witness(
        signer=signer,
        logs=settings.log_verifiers(),
        store=WitnessStore(settings.resolved_database_url),
    )


def create_witness_app(
    settings: WitnessSettings | None = None, *, witness: Witness | None = None
) -> FastAPI:
    """The witness as an ASGI app; it owns (and closes) its store unless given ``witness``."""
    settings = settings or WitnessSettings()
    owned = witness is None
    instance = witness or witness_from_settings(settings)
    limit = settings.max_body_bytes

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                instance.store.close()

    app = FastAPI(
        title="moodfed witness",
        version="1",
        summary="C2SP tlog-witness: cosigns a log's checkpoints only when consistent.",
        lifespan=lifespan,
    )

    @app.post("/add-checkpoint", response_class=PlainTextResponse)
    async def add_checkpoint(request: Request) -> Response:
        """Cosign a checkpoint consistent with the last one cosigned for its log."""
        body = await _read_body(request, limit)
        try:
            line = await run_in_threadpool(instance.add_checkpoint, body)
        except ConflictingSizeError as exc:
            # Exactly the spec's type: Starlette would append a charset to a media_type.
            return Response(format_size(exc.size), 409, headers={"content-type": TLOG_SIZE})
        except WitnessError as exc:
            return PlainTextResponse(exc.message + "\n", STATUS_OF[type(exc)], media_type=_TEXT)
        return PlainTextResponse(line, media_type=_TEXT)

    @app.get("/key", response_class=PlainTextResponse)
    def key() -> str:
        """This witness's verifier key, ``name+keyid+base64(0x04||pubkey)``."""
        return instance.verifier_key + "\n"

    @app.get("/healthz", response_class=PlainTextResponse, include_in_schema=False)
    def healthz() -> str:
        return "ok"

    @app.get("/{origin_hash}/checkpoint", response_class=PlainTextResponse)
    def checkpoint(
        origin_hash: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
    ) -> PlainTextResponse:
        """The latest checkpoint cosigned for the log whose origin has this SHA-256."""
        note = instance.latest(origin_hash)
        if note is None:
            raise HTTPException(404, "this witness has cosigned no checkpoint of that log")
        return PlainTextResponse(note, media_type=_TEXT)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is larger than {limit} bytes")
    return bytes(body)
