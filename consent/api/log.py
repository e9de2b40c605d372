"""``/v1/log/...``: the public log: checkpoint, verifier key, proofs and entries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from consent.api.deps import LedgerDep
from consent.api.errors import ERROR_RESPONSES
from consent.models import ConsistencyProof, InclusionProof
from consent.statement import SignedRecord
from consent.witness.client import Witnessing

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/log/checkpoint", response_class=PlainTextResponse)
def get_checkpoint(request: Request) -> str:
    """The latest checkpoint with its witnesses' cosignatures, a C2SP signed note."""
    witnessing: Witnessing = request.app.state.witnessing
    return witnessing.served()


@router.get("/v1/log/key", response_class=PlainTextResponse)
def get_key(ledger: LedgerDep) -> str:
    """The log's verifier key, ``name+keyid+base64(0x01||pubkey)``."""
    return ledger.verifier_key


@router.get("/v1/log/proof/inclusion", response_model=InclusionProof, responses=ERROR_RESPONSES)
def get_inclusion(
    index: Annotated[int, Query(ge=0)],
    size: Annotated[int, Query(ge=1)],
    ledger: LedgerDep,
) -> InclusionProof:
    return ledger.inclusion_proof(index, size)


@router.get("/v1/log/proof/consistency", response_model=ConsistencyProof, responses=ERROR_RESPONSES)
def get_consistency(
    old: Annotated[int, Query(ge=0)],
    new: Annotated[int, Query(ge=0)],
    ledger: LedgerDep,
) -> ConsistencyProof:
    return ledger.consistency_proof(old, new)


@router.get("/v1/log/entries", response_model=list[SignedRecord], responses=ERROR_RESPONSES)
def get_entries(
    start: Annotated[int, Query(ge=0)],
    end: Annotated[int, Query(ge=0)],
    ledger: LedgerDep,
) -> JSONResponse:
    """The signed records ``start`` to ``end`` (exclusive), exactly as logged."""
    return JSONResponse(ledger.entries(start, end))
