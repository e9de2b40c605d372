"""Witnesses for tests: a real witness app over real HTTP, and the cosigned checkpoint served.

``run_witness`` serves :func:`consent.witness.create_witness_app` with uvicorn in a
thread (its own SQLite store and key in a temp folder, a clock the test sets).
``WitnessedCheckpoint`` stands in for the one line of wiring the consent service does not
have yet: it answers ``GET /v1/log/checkpoint`` with :meth:`Witnessing.served` and
forwards every other request to the real service unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from consent.note import NoteVerifier
from consent.witness import (
    CosignatureSigner,
    Witness,
    Witnessing,
    WitnessSettings,
    WitnessStore,
    create_witness_app,
    load_or_create_witness_key,
)
from tests.consent.conftest import serve_in_thread


class SecondsClock:
    """POSIX seconds, as the test says (cosignature timestamps)."""

    def __init__(self, start: int = 1_700_000_000) -> None:
        self._lock = threading.Lock()
        self.now = start

    def __call__(self) -> float:
        with self._lock:
            return float(self.now)

    def advance(self, seconds: int) -> int:
        with self._lock:
            self.now += seconds
            return self.now


@dataclass
class RunningWitness:
    url: str
    witness: Witness
    database_url: str

    @property
    def verifier_key(self) -> str:
        return self.witness.verifier_key

    def latest(self, origin: str) -> httpx.Response:
        from consent.witness import origin_hash

        return httpx.get(f"{self.url}/{origin_hash(origin)}/checkpoint")


def make_witness(
    folder: Path,
    *,
    log_keys: list[str],
    name: str = "example.org/witness",
    clock: Callable[[], float] | None = None,
    database_url: str | None = None,
) -> Witness:
    """A witness with its key file and (by default SQLite) store in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    logs: dict[str, list[NoteVerifier]] = {}
    for key in log_keys:
        verifier = NoteVerifier(key)
        logs.setdefault(verifier.name, []).append(verifier)
    return Witness(
        signer=CosignatureSigner(name, load_or_create_witness_key(folder / "witness.key")),
        logs=logs,
        store=WitnessStore(database_url or f"sqlite:///{folder / 'witness.db'}"),
        clock=clock or SecondsClock(),
    )


def run_witness(
    stack: ExitStack,
    folder: Path,
    *,
    log_keys: list[str],
    name: str = "example.org/witness",
    clock: Callable[[], float] | None = None,
    database_url: str | None = None,
) -> RunningWitness:
    """A witness served over HTTP until ``stack`` closes."""
    witness = make_witness(
        folder, log_keys=log_keys, name=name, clock=clock, database_url=database_url
    )
    stack.callback(witness.store.close)
    app = create_witness_app(WitnessSettings(log_keys=log_keys, name=name), witness=witness)
    url = serve_in_thread(app, stack)
    with httpx.Client(base_url=url) as client:  # waits for the app's startup, on the answer
        assert client.get("/healthz").text == "ok"
    return RunningWitness(
        url=url, witness=witness, database_url=witness.store.engine.url.render_as_string()
    )


class WitnessedCheckpoint(httpx.BaseTransport):
    """The consent service as it will be once wired: its checkpoint carries cosignatures.

    ``change`` may rewrite the served note (to forge a cosignature, say).
    """

    def __init__(self, witnessing: Witnessing, change: Callable[[str], str] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.witnessing = witnessing
        self.change = change or (lambda note: note)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/log/checkpoint":
            return httpx.Response(
                200,
                text=self.change(self.witnessing.served()),
                headers={"content-type": "text/plain; charset=utf-8"},
            )
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
