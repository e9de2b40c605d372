"""The consent service's HTTP routes: thin over :class:`consent.ledger.Ledger`.

Appends go through a group-commit batcher: every request waiting while a batch is
being written joins the next one, so under load one transaction, one fsync and
one checkpoint signature acknowledge many records.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consent.ledger import AcceptedRecord, Ledger, LedgerError, validation_message
from consent.settings import ConsentSettings, Controller
from consent.statement import SignedRecord, StatementError, parse_json_strict

__all__ = ["create_app"]

log = logging.getLogger("moodfed.consent")

_JSON = "application/json"


class PurposeDecision(BaseModel):
    purpose: str
    action: Literal["grant", "withdraw"]
    consent_type: str
    expires_at: str | None


class Receipt(BaseModel):
    """What ``POST /v1/consents`` answers: the proof, then the consent-receipt fields."""

    index: int
    tree_size: int
    leaf_hash: str = Field(description="standard base64 of SHA-256(0x00 || leaf)")
    inclusion_proof: list[str] = Field(description="RFC 9162 audit path, standard base64")
    checkpoint: str = Field(description="C2SP signed note of the checkpoint at tree_size")
    log_origin: str
    receipt_version: str
    consent_timestamp: str
    pii_principal_id: str
    controller: Controller
    jurisdiction: str
    language: str
    policy_version: str
    policy_url: str
    notice_sha256: str
    purposes: list[PurposeDecision]
    data_categories: list[str]
    recipients: list[str]
    retention: str
    withdrawal_method: str


class PurposeState(BaseModel):
    action: Literal["grant", "withdraw"]
    issued_at: str
    expires_at: str | None
    policy_version: str
    index: int
    active: bool = Field(description="a grant that has not expired")


class DeviceState(BaseModel):
    device_key: str
    purposes: dict[str, PurposeState]


class EligibilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    purpose: str
    device_keys: list[str]


class EligibilityResponse(BaseModel):
    eligible: list[str]


class InclusionProof(BaseModel):
    index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]


class ConsistencyProof(BaseModel):
    old: int
    new: int
    proof: list[str]


class Problem(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 409, 413, 415, 422)
}


def get_ledger(request: Request) -> Ledger:
    return request.app.state.ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class AppendBatcher:
    """Groups concurrent appends into one ledger transaction (group commit)."""

    def __init__(self, ledger: Ledger, *, max_batch: int) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[AcceptedRecord, asyncio.Future[Any]]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self.task: asyncio.Task[None] | None = None

    async def append(self, accepted: AcceptedRecord) -> dict[str, Any]:
        if self.task is None:
            self.task = asyncio.create_task(self._run())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((accepted, future))
        result = await future
        if isinstance(result, LedgerError):
            raise result
        return result

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            records = [accepted for accepted, _ in batch]
            try:
                results = await loop.run_in_executor(
                    self.executor, self.ledger.append_batch, records
                )
            except Exception as exc:
                log.exception("appending a batch of %d records failed", len(batch))
                failure = LedgerError(503, f"the ledger could not store the record: {exc}")
                results = [failure] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading it all."""
    content_type = request.headers.get("content-type", _JSON).split(";")[0].strip()
    if content_type != _JSON:
        raise LedgerError(415, f"send the body as {_JSON}, not {content_type}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise LedgerError(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise LedgerError(413, f"the body is larger than {limit} bytes")
    return bytes(body)


def create_app(settings: ConsentSettings | None = None, *, ledger: Ledger | None = None) -> FastAPI:
    """The consent service as an ASGI app (also the ``uvicorn --factory`` entry point)."""
    settings = settings or ConsentSettings()
    if settings.eligibility_token is None:
        settings.ensure_eligibility_token()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = ledger is None
        app.state.ledger = ledger or Ledger(settings)
        app.state.batcher = AppendBatcher(app.state.ledger, max_batch=settings.batch_max)
        # The tree cache is long-lived: freeze it out of the collector and collect less
        # often, or full collections pause appends by up to ~165 ms (the p99).
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        log.info(
            "consent log %s ready, verifier key %s",
            settings.log_origin,
            app.state.ledger.verifier_key,
        )
        yield
        await app.state.batcher.close()
        if owned:
            app.state.ledger.close()

    app = FastAPI(
        title="moodfed consent service",
        version="1",
        summary="Signed consent statements in an append-only, verifiable Merkle log.",
        lifespan=lifespan,
    )

    @app.exception_handler(LedgerError)
    async def _ledger_error(_: Request, exc: LedgerError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"][1:]) or str(item["loc"][0])
            parts.append(f"{where}: {item['msg']}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.post(
        "/v1/consents",
        status_code=201,
        response_model=Receipt,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": SignedRecord.model_json_schema()}},
            }
        },
        summary="Append a signed consent statement; answers with a verifiable receipt",
    )
    async def post_consent(request: Request) -> JSONResponse:
        accepted = request.app.state.ledger.accept(
            await _read_body(request, settings.max_body_bytes)
        )
        receipt = await request.app.state.batcher.append(accepted)
        return JSONResponse(receipt, status_code=201)

    @app.get("/v1/consents/{device_key}", response_model=DeviceState, responses=_ERRORS)
    def get_consents(device_key: str, ledger: LedgerDep) -> dict[str, Any]:
        """The current decision per purpose, from the materialized state."""
        return ledger.state(device_key)

    @app.post(
        "/v1/eligibility",
        response_model=EligibilityResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": EligibilityRequest.model_json_schema()}},
            }
        },
    )
    async def post_eligibility(
        request: Request,
        credentials: Credentials,
    ) -> dict[str, Any]:
        """Which of these device keys may take part in the purpose now (server only)."""
        ledger: Ledger = request.app.state.ledger
        if credentials is None or not ledger.check_token(credentials.credentials):
            raise LedgerError(401, "a valid bearer token is needed (MOODFED_ELIGIBILITY_TOKEN)")
        limit = settings.max_eligibility_keys * 48 + 1024
        try:
            query = EligibilityRequest.model_validate(
                parse_json_strict(await _read_body(request, limit))
            )
        except StatementError as exc:
            raise LedgerError(400, str(exc)) from None
        except ValidationError as exc:
            raise LedgerError(422, validation_message(exc)) from None
        if len(query.device_keys) > settings.max_eligibility_keys:
            raise LedgerError(422, f"at most {settings.max_eligibility_keys} device keys a query")
        eligible = await asyncio.to_thread(ledger.eligible, query.purpose, query.device_keys)
        return {"eligible": eligible}

    @app.get("/v1/log/checkpoint", response_class=PlainTextResponse)
    def get_checkpoint(ledger: LedgerDep) -> str:
        """The latest checkpoint, a C2SP signed note."""
        return ledger.checkpoint()

    @app.get("/v1/log/key", response_class=PlainTextResponse)
    def get_key(ledger: LedgerDep) -> str:
        """The log's verifier key, ``name+keyid+base64(0x01||pubkey)``."""
        return ledger.verifier_key

    @app.get("/v1/log/proof/inclusion", response_model=InclusionProof, responses=_ERRORS)
    def get_inclusion(
        index: Annotated[int, Query(ge=0)],
        size: Annotated[int, Query(ge=1)],
        ledger: LedgerDep,
    ) -> dict[str, Any]:
        return ledger.inclusion_proof(index, size)

    @app.get("/v1/log/proof/consistency", response_model=ConsistencyProof, responses=_ERRORS)
    def get_consistency(
        old: Annotated[int, Query(ge=0)],
        new: Annotated[int, Query(ge=0)],
        ledger: LedgerDep,
    ) -> dict[str, Any]:
        return ledger.consistency_proof(old, new)

    @app.get("/v1/log/entries", response_model=list[SignedRecord], responses=_ERRORS)
    def get_entries(
        start: Annotated[int, Query(ge=0)],
        end: Annotated[int, Query(ge=0)],
        ledger: LedgerDep,
    ) -> JSONResponse:
        """The signed records ``start`` to ``end`` (exclusive), exactly as logged."""
        return JSONResponse(ledger.entries(start, end))

    @app.get("/healthz", response_class=PlainTextResponse, include_in_schema=False)
    def healthz() -> str:
        return "ok"

    return app
