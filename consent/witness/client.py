"""The log's side of C2SP tlog-witness: submit checkpoints, collect and serve cosignatures.

:class:`WitnessClient` talks to one witness: it sends ``add-checkpoint`` with the old
size it believes the witness holds (0 at first, then whatever a 409 says) and the
consistency proof from it, and checks the cosignature it gets back against the
witness's pinned key. :class:`Witnessing` does that for every configured witness after
each new checkpoint (in a background thread, latest checkpoint wins) and keeps the
newest checkpoint with enough cosignatures, which the service serves instead of the
bare one: a signed note with the log's signature line and one line per witness.

Wiring into a service is three calls: ``start()`` at startup, ``notify()`` after each
commit that signed a checkpoint, ``served()`` for ``GET /v1/log/checkpoint``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from consent.encoding import b64decode
from consent.models import ConsistencyProof
from consent.note import NoteError, parse_checkpoint
from consent.witness.cosignature import Cosignature, CosignatureVerifier, split_note
from consent.witness.protocol import (
    TLOG_SIZE,
    ProtocolError,
    format_add_checkpoint,
    origin_hash,
    parse_size,
)

__all__ = [
    "CosignedCheckpoint",
    "ProofSource",
    "WitnessAheadError",
    "WitnessClient",
    "WitnessClientError",
    "WitnessRefusedError",
    "WitnessUnreachableError",
    "Witnessing",
    "append_cosignatures",
    "fetch_witness_checkpoint",
    "http_checkpoint_source",
    "http_proof_source",
    "proof_source",
]

log = logging.getLogger("moodfed.consent.witnessing")

ProofSource = Callable[[int, int], Sequence[bytes]]
"""``proof(old, new)``: the log's RFC 9162 consistency proof between two of its sizes."""


class WitnessClientError(Exception):
    """A witness did not cosign the checkpoint; ``witness`` names it."""

    def __init__(self, witness: str, message: str) -> None:
        super().__init__(f"witness {witness}: {message}")
        self.witness = witness


class WitnessUnreachableError(WitnessClientError):
    """The witness could not be reached, or answered something that is not the protocol."""


class WitnessRefusedError(WitnessClientError):
    """The witness answered with a refusal (``status``: 400, 403, 404, 409, 422, ...)."""

    def __init__(self, witness: str, message: str, *, status: int) -> None:
        super().__init__(witness, message)
        self.status = status


class WitnessAheadError(WitnessClientError):
    """The witness cosigned a larger tree than this checkpoint: the log lost entries.

    Either the log was rolled back (or forked), or this process's checkpoint is stale
    and a newer one exists; ``size`` is what the witness holds.
    """

    def __init__(self, witness: str, message: str, *, size: int) -> None:
        super().__init__(witness, message)
        self.size = size


class _ProvesConsistency(Protocol):
    def consistency_proof(self, old: int, new: int) -> ConsistencyProof: ...


def proof_source(log: _ProvesConsistency) -> ProofSource:
    """A :data:`ProofSource` over anything with ``consistency_proof(old, new)`` (the Ledger)."""

    def proof(old: int, new: int) -> list[bytes]:
        return [b64decode(h) for h in log.consistency_proof(old, new).proof]

    return proof


def http_proof_source(http: httpx.Client) -> ProofSource:
    """A :data:`ProofSource` over a consent service's public API (``http`` has its base URL)."""

    def proof(old: int, new: int) -> list[bytes]:
        answer = http.get("/v1/log/proof/consistency", params={"old": old, "new": new})
        answer.raise_for_status()
        return [b64decode(h) for h in ConsistencyProof.model_validate_json(answer.content).proof]

    return proof


def http_checkpoint_source(http: httpx.Client) -> Callable[[], str]:
    """The latest checkpoint note of a consent service, over its public API."""

    def latest() -> str:
        answer = http.get("/v1/log/checkpoint")
        answer.raise_for_status()
        return answer.text

    return latest


def append_cosignatures(note: str, cosignatures: Sequence[Cosignature]) -> str:
    """The signed note with the cosignatures' lines added (each line once)."""
    present = {line.line for line in split_note(note)[1]}
    added = []
    for cosignature in cosignatures:
        if cosignature.line not in present:
            present.add(cosignature.line)
            added.append(cosignature.line)
    return note + "".join(added)


class WitnessClient:
    """One witness, as the log sees it: its URL (submission prefix) and its pinned key."""

    def __init__(
        self,
        *,
        url: str,
        verifier_key: str,
        http: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.verifier = CosignatureVerifier(verifier_key)
        self.name = self.verifier.name
        self._http = http or httpx.Client(timeout=timeout)
        self._owned = http is None
        self.known_size: int | None = None  # what the witness last cosigned, once learnt

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def add_checkpoint(self, note: str, *, proof: ProofSource) -> Cosignature:
        """Have the witness cosign ``note``; return its verified cosignature.

        Starts from the size the witness is known to hold (0 at first); a 409 teaches
        the real one and the request is sent again with the proof from there.
        """
        try:
            text, _ = split_note(note)
            checkpoint = parse_checkpoint(text)
        except NoteError as exc:
            raise ValueError(f"not a signed checkpoint: {exc}") from None
        old = self.known_size or 0
        for _ in range(3):  # a 409 or two while other processes of the log submit too
            if old > checkpoint.size:
                raise WitnessAheadError(
                    self.name,
                    f"it cosigned size {old} of {checkpoint.origin} but this checkpoint has "
                    f"{checkpoint.size}: the log lost entries it had (rolled back or forked), "
                    "or a newer checkpoint exists",
                    size=old,
                )
            hashes = list(proof(old, checkpoint.size)) if 0 < old < checkpoint.size else []
            body = format_add_checkpoint(old_size=old, proof=hashes, note=note)
            answer = self._post(body)
            if answer.status_code == 409 and answer.headers.get("content-type", "").startswith(
                TLOG_SIZE
            ):
                try:
                    old = self.known_size = parse_size(answer.text)
                except ProtocolError as exc:
                    raise WitnessUnreachableError(self.name, str(exc)) from None
                continue
            if answer.status_code != 200:
                raise WitnessRefusedError(
                    self.name,
                    f"answered {answer.status_code}: {answer.text.strip()[:300]}",
                    status=answer.status_code,
                )
            return self._cosignature(text, answer.text, checkpoint.size)
        raise WitnessRefusedError(self.name, "kept answering 409 (conflicting size)", status=409)

    def _post(self, body: bytes) -> httpx.Response:
        try:
            return self._http.post(
                f"{self.url}/add-checkpoint",
                content=body,
                headers={"content-type": "text/plain; charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            raise WitnessUnreachableError(self.name, f"cannot reach {self.url}: {exc}") from None

    def _cosignature(self, text: str, answer: str, size: int) -> Cosignature:
        """The witness's cosignature among the answer's lines; others' lines are ignored."""
        try:
            _, lines = split_note(text + "\n" + answer)
            found = self.verifier.find(text, lines)
        except NoteError as exc:
            raise WitnessUnreachableError(self.name, f"its answer does not verify: {exc}") from None
        if found is None:
            raise WitnessUnreachableError(self.name, "its answer has no cosignature by its key")
        self.known_size = size
        return found


@dataclass(frozen=True, slots=True)
class CosignedCheckpoint:
    """A checkpoint note with the witnesses' cosignature lines appended."""

    note: str
    size: int
    cosigners: tuple[str, ...]


class Witnessing:
    """Keep a log's latest checkpoint cosigned by its witnesses, and serve the result.

    ``latest()`` reads the log's latest signed checkpoint note; ``proof(old, new)`` gives
    consistency proofs; ``quorum`` (default: every witness) is how many cosignatures a
    checkpoint needs before :meth:`served` prefers it to the bare latest one.
    """

    def __init__(
        self,
        witnesses: Sequence[WitnessClient],
        *,
        latest: Callable[[], str],
        proof: ProofSource,
        quorum: int | None = None,
        retry_seconds: float = 30.0,
    ) -> None:
        self.witnesses = tuple(witnesses)
        self.quorum = len(self.witnesses) if quorum is None else quorum
        if self.witnesses and not 1 <= self.quorum <= len(self.witnesses):
            raise ValueError(f"quorum must be 1..{len(self.witnesses)}, got {self.quorum}")
        self.latest = latest
        self.proof = proof
        self.retry_seconds = retry_seconds
        self._served: CosignedCheckpoint | None = None
        self._lock = threading.Lock()
        self._submit = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls,
        *,
        urls: Sequence[str],
        keys: Sequence[str],
        latest: Callable[[], str],
        proof: ProofSource,
        quorum: int | None = None,
        http: httpx.Client | None = None,
    ) -> Witnessing:
        """From parallel lists of witness URLs and their verifier keys (the settings)."""
        if len(urls) != len(keys):
            raise ValueError(f"{len(urls)} witness URLs but {len(keys)} witness keys")
        clients = [
            WitnessClient(url=u, verifier_key=k, http=http) for u, k in zip(urls, keys, strict=True)
        ]
        return cls(clients, latest=latest, proof=proof, quorum=quorum)

    def witness_latest(self) -> CosignedCheckpoint:
        """Submit the log's latest checkpoint to every witness now; return what was collected.

        A witness that refuses is logged (a :class:`WitnessAheadError` as an error: the
        log lost entries it had) and skipped; the result is served once it has a quorum.
        """
        with self._submit:
            for _ in range(3):  # again if another process of the log signed a newer one
                result, stale = self._collect(self.latest())
                if not stale:
                    break
            if self.witnesses and len(result.cosigners) >= self.quorum:
                with self._lock:
                    if self._served is None or result.size >= self._served.size:
                        self._served = result
            return result

    def _collect(self, note: str) -> tuple[CosignedCheckpoint, bool]:
        """Submit ``note`` to every witness; True too if a newer checkpoint overtook it."""
        size = parse_checkpoint(split_note(note)[0]).size
        cosignatures, stale = [], False
        for witness in self.witnesses:
            try:
                cosignatures.append(witness.add_checkpoint(note, proof=self.proof))
            except WitnessAheadError as exc:
                # A witness ahead of this note: either another process of the log
                # submitted a newer checkpoint meanwhile, or the log lost entries.
                if parse_checkpoint(split_note(self.latest())[0]).size >= exc.size:
                    stale = True
                else:
                    log.error("not cosigned, the log is behind its witness: %s", exc)
            except WitnessClientError as exc:
                log.warning("not cosigned: %s", exc)
        result = CosignedCheckpoint(
            note=append_cosignatures(note, cosignatures),
            size=size,
            cosigners=tuple(c.name for c in cosignatures),
        )
        return result, stale

    def served(self) -> str:
        """What ``GET /v1/log/checkpoint`` answers: the newest checkpoint with a quorum of
        cosignatures, else (no witness configured, or none cosigned yet) the latest one."""
        with self._lock:
            served = self._served
        return self.latest() if served is None else served.note

    def notify(self) -> None:
        """A new checkpoint was signed: have the background thread submit it (non-blocking)."""
        self._wake.set()

    def start(self) -> None:
        """Start the background thread; it submits now, on each notify, and every
        ``retry_seconds`` (so a witness that was down catches up)."""
        if self._thread is not None or not self.witnesses:
            return
        self._thread = threading.Thread(target=self._run, name="witnessing", daemon=True)
        self._wake.set()
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for witness in self.witnesses:
            witness.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=self.retry_seconds)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.witness_latest()
            except Exception:  # the thread must outlive a log that failed to answer once
                log.exception("witnessing the latest checkpoint failed")


def fetch_witness_checkpoint(url: str, origin: str, *, http: httpx.Client | None = None) -> str:
    """A witness's latest cosigned checkpoint of ``origin`` (its monitoring endpoint).

    ``url`` is the witness's monitoring prefix; raises :class:`WitnessClientError` if the
    witness is unreachable or has cosigned nothing of that log.
    """
    client = http or httpx.Client(timeout=10.0)
    try:
        answer = client.get(f"{url.rstrip('/')}/{origin_hash(origin)}/checkpoint")
    except httpx.HTTPError as exc:
        raise WitnessUnreachableError(url, f"cannot reach it: {exc}") from None
    finally:
        if http is None:
            client.close()
    if answer.status_code != 200:
        raise WitnessRefusedError(
            url, f"has no checkpoint of {origin} ({answer.status_code})", status=answer.status_code
        )
    return answer.text
