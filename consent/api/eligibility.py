"""``/v1/eligibility``: which devices may take part in a purpose now (the server only)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from consent.api.deps import (
    JSON,
    LedgerDep,
    SettingsDep,
    body_schema,
    read_json_body,
    require_eligibility_token,
)
from consent.api.errors import ERROR_RESPONSES
from consent.errors import InvalidInputError, MalformedInputError, validation_message
from consent.models import EligibilityRequest, EligibilityResponse
from consent.statement import StatementError, parse_json_strict

__all__ = ["router"]

router = APIRouter()

_KEY_BYTES = 48  # a quoted base64url device key and its comma, with room to spare
# No token of a valid query (a purpose, a device key) comes near this many bytes: a
# longer one (a 4 MB "key", a 5,000-digit number) is refused as it streams in, after
# one chunk rather than the whole body.
_MAX_TOKEN = 256
# JSON's structural bytes and whitespace, all mapped to '"': what lies between two of
# them is one token (or part of a string with spaces, shorter still).
_DELIMITERS = bytes.maketrans(b" \t\r\n[]{},:", b'"' * 10)


class _LongTokens:
    """A body check: refuse a token of more than ``_MAX_TOKEN`` bytes while streaming."""

    def __init__(self) -> None:
        self.run = 0  # bytes of the token still open at the end of the last chunk

    def __call__(self, chunk: bytes) -> None:
        marked = chunk.translate(_DELIMITERS)
        last = marked.rfind(b'"')
        if last < 0:
            self.run += len(marked)
            longest = self.run
        else:
            longest = max(self.run + marked.find(b'"'), max(map(len, marked.split(b'"'))))
            self.run = len(marked) - 1 - last
        if longest > _MAX_TOKEN:
            raise MalformedInputError(
                f"the body holds a string or number of {longest} bytes or more: no purpose or "
                f"device key (43 base64url characters) is longer than {_MAX_TOKEN}; refused "
                "before the rest was read"
            )


@router.post(
    "/v1/eligibility",
    response_model=EligibilityResponse,
    responses=ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": body_schema(EligibilityRequest)}},
        }
    },
    dependencies=[Depends(require_eligibility_token)],
)
async def post_eligibility(
    request: Request, settings: SettingsDep, ledger: LedgerDep
) -> EligibilityResponse:
    """Which of these device keys may take part in the purpose now (server only)."""
    limit = settings.max_eligibility_keys * _KEY_BYTES + 1024
    try:
        query = EligibilityRequest.model_validate(
            parse_json_strict(await read_json_body(request, limit, _LongTokens()))
        )
    except StatementError as exc:
        raise MalformedInputError(str(exc)) from None
    except ValidationError as exc:
        raise InvalidInputError(validation_message(exc)) from None
    eligible = await asyncio.to_thread(ledger.eligible, query.purpose, query.device_keys)
    return EligibilityResponse(eligible=eligible)
