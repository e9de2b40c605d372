"""What the routes depend on: the settings, the ledger, the batcher, the bearer token, bodies.

The dependencies are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a
worker thread, a hop the append path cannot afford on every request.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from consent.batcher import AppendBatcher
from consent.ledger import Ledger
from consent.settings import ConsentSettings

__all__ = [
    "JSON",
    "BatcherDep",
    "LedgerDep",
    "SettingsDep",
    "get_batcher",
    "get_ledger",
    "get_settings",
    "read_json_body",
    "require_eligibility_token",
]

JSON = "application/json"


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


async def read_json_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading it all."""
    content_type = request.headers.get("content-type", JSON).split(";")[0].strip()
    if content_type != JSON:
        raise HTTPException(415, f"send the body as {JSON}, not {content_type}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is larger than {limit} bytes")
    return bytes(body)
