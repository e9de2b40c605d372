"""The consent service's ASGI app: the routers, the error mapping, the ledger's lifetime."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from consent.api import consents, eligibility
from consent.api import log as log_routes
from consent.api.access import AccessLogMiddleware
from consent.api.consents import AppendRoute
from consent.api.errors import install_error_handlers
from consent.batcher import AppendBatcher
from consent.ledger import Clock, Ledger
from consent.settings import ConsentSettings
from consent.witness.client import Witnessing, proof_source

__all__ = ["create_app"]

log = logging.getLogger("moodfed.consent")


def create_app(
    settings: ConsentSettings | None = None,
    *,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The consent service as an ASGI app (also the ``uvicorn --factory`` entry point).

    The app opens its own :class:`Ledger` at startup unless given ``ledger`` (which the
    caller then closes); ``clock`` is that ledger's notion of now, for tests that move it.
    """
    if ledger is not None and clock is not None:
        raise ValueError("give the clock to the Ledger you pass, not to create_app")
    settings = settings or ConsentSettings()
    settings.ensure_eligibility_token()
    app = FastAPI(
        title="moodfed consent service",
        version="1",
        summary="Signed consent statements in an append-only, verifiable Merkle log.",
        lifespan=partial(_lifespan, settings=settings, ledger=ledger, clock=clock),
        # The routers' routes, listed flat rather than with include_router: since FastAPI
        # 0.137 an included router is a node resolved again on every request, ~12 us of
        # CPU per append here (~4% of the append path).
        routes=[*consents.router.routes, *eligibility.router.routes, *log_routes.router.routes],
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(AppendRoute)  # inside the access log: appends are logged too
    if settings.access_log:
        app.add_middleware(
            AccessLogMiddleware,
            auth_burst=settings.auth_log_burst,
            auth_window=settings.auth_log_window_seconds,
        )
    app.add_api_route(
        "/healthz", _healthz, response_class=PlainTextResponse, include_in_schema=False
    )
    return app


@asynccontextmanager
async def _lifespan(
    app: FastAPI, *, settings: ConsentSettings, ledger: Ledger | None, clock: Clock | None
) -> AsyncIterator[None]:
    owned = ledger is None
    app.state.ledger = ledger or Ledger(settings, clock=clock)
    app.state.witnessing = Witnessing.from_config(
        urls=settings.witness_urls,
        keys=settings.witness_keys,
        quorum=settings.witness_quorum,
        latest=app.state.ledger.checkpoint,
        proof=proof_source(app.state.ledger),
    )
    app.state.witnessing.start()
    app.state.batcher = AppendBatcher(
        app.state.ledger, max_batch=settings.batch_max, on_append=app.state.witnessing.notify
    )
    # The tree cache is long-lived: freeze it out of the collector and collect less
    # often, or full collections pause appends by up to ~165 ms (the p99). Restored on
    # shutdown, for processes that outlive the app (tests serving it in a thread).
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    log.info(
        "consent log %s ready, verifier key %s", settings.log_origin, app.state.ledger.verifier_key
    )
    try:
        yield
    finally:
        await app.state.batcher.close()
        app.state.witnessing.close()
        if owned:
            app.state.ledger.close()
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _healthz() -> str:
    return "ok"
