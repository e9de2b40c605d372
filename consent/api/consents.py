"""``/v1/consents``: append a signed statement (the hot path), read a device's state.

Appends are the service's one high-rate request, so they bypass the framework:
:class:`AppendRoute` is a pure ASGI middleware that answers ``POST /v1/consents``
itself (the body read with the same limits, the same refusals, the receipt dumped
once), skipping routing, dependency injection and the request and response objects,
about half of the CPU an append cost over HTTP. The FastAPI route below stays for the
OpenAPI schema and answers through the same function, :func:`answer_append`, should a
request ever reach it.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from consent.api.deps import JSON, TIMED_OUT, BatcherDep, LedgerDep, body_schema, too_large
from consent.api.errors import ERROR_RESPONSES, status_of
from consent.batcher import AppendBatcher
from consent.errors import LedgerError
from consent.models import DeviceState, Receipt
from consent.statement import SignedRecord

__all__ = ["AppendRoute", "answer_append", "router"]

log = logging.getLogger("moodfed.consent")

router = APIRouter()

_PATH = "/v1/consents"
_INTERNAL = "internal error: the service logged it; retry later or tell the operator"


def _problem(status: int, detail: str) -> tuple[int, bytes]:
    """``{"detail"}`` as Starlette's JSONResponse renders it (same bytes on both paths)."""
    body = json.dumps({"detail": detail}, ensure_ascii=False, separators=(",", ":"))
    return status, body.encode("utf-8")


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | tuple[int, bytes]:
    """The body, or the refusal to answer (415, 413, and 408/499 for a client gone)."""
    content_type = length = None
    for name, value in scope["headers"]:  # the first of repeated headers, as Starlette
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value.decode("latin-1")
    # Media types are case-insensitive (RFC 9110 8.3.1): Application/JSON is JSON.
    media = (content_type or JSON).split(";")[0].strip().lower()
    if media != JSON:
        shown = media[:64].encode("ascii", "backslashreplace").decode()
        return _problem(415, f"send the body as {JSON}, not {shown}")
    if length is not None and (
        not (length.isascii() and length.isdigit()) or len(length) > 18 or int(length) > limit
    ):
        return _problem(413, too_large(limit))
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Nobody is left to read the answer: it is for the access log (408 or 499).
            if scope.get("state", {}).get(TIMED_OUT, False):
                return _problem(408, "the body did not arrive in time")
            return _problem(499, "the client left mid-body")
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > limit:
            return _problem(413, too_large(limit))
        if not message.get("more_body", False):
            return body


async def answer_append(
    scope: Scope, receive: Receive, batcher: AppendBatcher
) -> tuple[int, bytes]:
    """Read, check and append one signed record: the status and JSON body to answer."""
    ledger = batcher.ledger
    try:
        body = await _read_body(scope, receive, ledger.settings.max_body_bytes)
        if isinstance(body, tuple):
            return body
        receipt = await batcher.append(ledger.accept(body))
    except LedgerError as exc:
        return _problem(status_of(exc), exc.message)
    except Exception:
        log.exception("appending a record failed")
        return _problem(500, _INTERNAL)
    return 201, receipt.model_dump_json().encode()


class AppendRoute:
    """Answers ``POST /v1/consents`` without the framework; passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != _PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        batcher = scope["app"].state.batcher
        assert isinstance(batcher, AppendBatcher)
        status, body = await answer_append(scope, receive, batcher)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@router.post(
    _PATH,
    status_code=201,
    response_model=Receipt,
    responses=ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": body_schema(SignedRecord)}},
        }
    },
    summary="Append a signed consent statement; answers with a verifiable receipt",
)
async def post_consent(request: Request, batcher: BatcherDep) -> Response:
    # Answered by AppendRoute before routing; the same answer if it ever gets here.
    status, body = await answer_append(request.scope, request.receive, batcher)
    return Response(body, status_code=status, media_type=JSON)


@router.get(f"{_PATH}/{{device_key}}", response_model=DeviceState, responses=ERROR_RESPONSES)
def get_consents(device_key: str, ledger: LedgerDep) -> DeviceState:
    """The current decision per purpose, from the materialized state."""
    return ledger.state(device_key)
