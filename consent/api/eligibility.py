"""``/v1/eligibility``: which devices may take part in a purpose now (the server only)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from consent.api.deps import (
    JSON,
    LedgerDep,
    SettingsDep,
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


@router.post(
    "/v1/eligibility",
    response_model=EligibilityResponse,
    responses=ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": EligibilityRequest.model_json_schema()}},
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
            parse_json_strict(await read_json_body(request, limit))
        )
    except StatementError as exc:
        raise MalformedInputError(str(exc)) from None
    except ValidationError as exc:
        raise InvalidInputError(validation_message(exc)) from None
    eligible = await asyncio.to_thread(ledger.eligible, query.purpose, query.device_keys)
    return EligibilityResponse(eligible=eligible)
