"""``/v1/consents``: append a signed statement (the hot path), read a device's state."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from consent.api.deps import JSON, BatcherDep, LedgerDep, body_schema, read_json_body
from consent.api.errors import ERROR_RESPONSES
from consent.models import DeviceState, Receipt
from consent.statement import SignedRecord

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/v1/consents",
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
    # The hot path: one dependency (the batcher knows its ledger), the body read by hand
    # (size limit while streaming, strict JSON), and the receipt, already a validated
    # Receipt, dumped once by pydantic rather than validated again as a response_model.
    ledger = batcher.ledger
    accepted = ledger.accept(await read_json_body(request, ledger.settings.max_body_bytes))
    receipt = await batcher.append(accepted)
    return Response(receipt.model_dump_json(), status_code=201, media_type=JSON)


@router.get("/v1/consents/{device_key}", response_model=DeviceState, responses=ERROR_RESPONSES)
def get_consents(device_key: str, ledger: LedgerDep) -> DeviceState:
    """The current decision per purpose, from the materialized state."""
    return ledger.state(device_key)
