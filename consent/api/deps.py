"""What the routes depend on: the settings, the ledger, the batcher, the bearer token, bodies.

The dependencies are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a
worker thread, a hop the append path cannot afford on every request.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from consent.batcher import AppendBatcher
from consent.ledger import Ledger
from consent.settings import ConsentSettings

__all__ = [
    "JSON",
    "TIMED_OUT",
    "BatcherDep",
    "BodyCheck",
    "ClientGone",
    "LedgerDep",
    "SettingsDep",
    "body_schema",
    "get_batcher",
    "get_ledger",
    "get_settings",
    "read_json_body",
    "require_eligibility_token",
    "too_large",
]

JSON = "application/json"

log = logging.getLogger("moodfed.consent")

TIMED_OUT = "moodfed.timed_out"  # in a request's scope["state"]: the server cut its body off

BodyCheck = Callable[[bytes], None]
"""Called on each chunk of a body as it arrives; raises to refuse it before the rest."""


class ClientGone(Exception):
    """The client closed the connection before its body was complete: nobody to answer."""


async def get_settings(request: Request) -> ConsentSettings:
    settings = request.app.state.settings
    assert isinstance(settings, ConsentSettings)
    return settings


async def get_ledger(request: Request) -> Ledger:
    ledger = request.app.state.ledger
    assert isinstance(ledger, Ledger)
    return ledger


async def get_batcher(request: Request) -> AppendBatcher:
    batcher = request.app.state.batcher
    assert isinstance(batcher, AppendBatcher)
    return batcher


SettingsDep = Annotated[ConsentSettings, Depends(get_settings)]
LedgerDep = Annotated[Ledger, Depends(get_ledger)]
BatcherDep = Annotated[AppendBatcher, Depends(get_batcher)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


async def require_eligibility_token(credentials: Credentials, settings: SettingsDep) -> None:
    """Refuse (401) unless the request carries the eligibility token (constant-time compare)."""
    token = settings.eligibility_token
    if (
        credentials is None
        or token is None
        or not hmac.compare_digest(
            credentials.credentials.encode(), token.get_secret_value().encode()
        )
    ):
        raise HTTPException(
            401,
            "a valid bearer token is needed (MOODFED_ELIGIBILITY_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def too_large(limit: int) -> str:
    """The 413's detail."""
    return f"the body is larger than {limit} bytes"


async def read_json_body(request: Request, limit: int, check: BodyCheck | None = None) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading it all.

    ``check`` sees each chunk as it arrives and may refuse the body early. A client
    that disconnects mid-body raises :class:`ClientGone` (answered by no one, logged in
    one line by the access log), not a traceback.
    """
    # Media types are case-insensitive (RFC 9110 8.3.1): Application/JSON is JSON.
    content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if content_type != JSON:
        shown = content_type[:64].encode("ascii", "backslashreplace").decode()
        raise HTTPException(415, f"send the body as {JSON}, not {shown}")
    declared = request.headers.get("content-length")
    if declared is not None and (
        not (declared.isascii() and declared.isdigit())
        or len(declared) > 18
        or int(declared) > limit
    ):
        raise HTTPException(413, too_large(limit))
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, too_large(limit))
            if check is not None and chunk:
                check(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    return bytes(body)


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a request body, self-contained, for a route's ``openapi_extra``.

    Pydantic puts nested models under ``$defs`` and points at them with
    ``#/$defs/...``; pasted into the OpenAPI document those pointers resolve against the
    document's root, where there is no ``$defs``. Inlining them keeps the schema valid.
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result
