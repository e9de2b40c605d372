"""The one place where the ledger's domain errors become HTTP statuses.

Every refusal answers ``{"detail": "<what was wrong, what to do>"}``; routes raise the
domain errors of :mod:`consent.errors` (or :class:`fastapi.HTTPException` for what is
purely HTTP: the body's size and type, the bearer token) and never pick a status.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from consent.api.deps import TIMED_OUT, ClientGone
from consent.errors import (
    ConflictError,
    InvalidInputError,
    KeyFileError,
    LedgerError,
    LogIntegrityError,
    MalformedInputError,
    OutOfRangeError,
    StorageUnavailableError,
)
from consent.models import Problem

__all__ = ["ERROR_RESPONSES", "STATUS_OF", "install_error_handlers", "status_of"]

# Looked up along each error's class hierarchy: a subclass maps as its parent does.
STATUS_OF: dict[type[LedgerError], int] = {
    MalformedInputError: 400,
    ConflictError: 409,
    InvalidInputError: 422,
    OutOfRangeError: 422,
    LogIntegrityError: 500,
    KeyFileError: 500,
    StorageUnavailableError: 503,
}

# The refusals documented on each route of the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 409, 413, 415, 422)
}


def status_of(error: LedgerError) -> int:
    """The HTTP status of a domain error: its nearest class in :data:`STATUS_OF`, else 500."""
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


async def _ledger_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LedgerError)
    return JSONResponse({"detail": exc.message}, status_code=status_of(exc))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own parameter errors, as one readable sentence like the ledger's."""
    assert isinstance(exc, RequestValidationError)
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item["loc"][1:]) or str(item["loc"][0])
        parts.append(f"{where}: {item['msg']}")
    return JSONResponse({"detail": "; ".join(parts)}, status_code=422)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """Nobody is left to read this answer: it is for the access log's line (408 or 499)."""
    assert isinstance(exc, ClientGone)
    timed_out = request.scope.get("state", {}).get(TIMED_OUT, False)
    detail = "the body did not arrive in time" if timed_out else "the client left mid-body"
    return JSONResponse({"detail": detail}, status_code=408 if timed_out else 499)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    """A bug: JSON like every other answer, and no internals (the traceback goes to the log)."""
    return JSONResponse(
        {"detail": "internal error: the service logged it; retry later or tell the operator"},
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every domain error, and FastAPI's validation errors, to ``{"detail"}`` answers."""
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientGone, _client_gone)
    app.add_exception_handler(Exception, _internal_error)
