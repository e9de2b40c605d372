"""The device's consent client: sign decisions, and trust no answer it cannot verify.

Every receipt is checked with the ledger's own verifier (:mod:`consent.verify`, the
same code the audit and the dashboard run): the checkpoint's signature against the log
key pinned in the app, the inclusion of exactly the record this device signed, and the
consistency of each new checkpoint with the last one this device saw, so that a log
which rewrote its history is caught. Answers are parsed into the service's own models
(:mod:`consent.models`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import rfc8785

from client_sdk.errors import SDKError
from client_sdk.keys import DeviceKey
from consent.encoding import b64decode, b64encode, b64url_encode
from consent.models import ConsistencyProof, DeviceState, Receipt
from consent.note import Checkpoint, NoteVerifier
from consent.statement import SignedRecord, format_time
from consent.verify import (
    CheckpointError,
    VerificationError,
    open_signed_checkpoint,
    verify_append_only,
)
from consent.verify import verify_receipt as _verify_receipt

__all__ = [
    "ConsentClient",
    "ConsentRefusedError",
    "ConsentServiceError",
    "Decision",
    "HeldReceipt",
    "LogVerificationError",
    "notice_sha256",
    "verify_receipt",
]

Action = Literal["grant", "withdraw"]


class ConsentServiceError(SDKError):
    """The consent service could not be reached or answered nonsense."""


class ConsentRefusedError(ConsentServiceError):
    """The service refused the statement (a 4xx); ``detail`` says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the consent service refused the statement ({status}): {detail}")
        self.status = status
        self.detail = detail


class LogVerificationError(SDKError):
    """The log's answer does not verify: do not trust this service's log."""


def notice_sha256(notice: str) -> str:
    """The hex SHA-256 of the notice text the user was shown (UTF-8)."""
    return hashlib.sha256(notice.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Decision:
    """This device's latest verified decision for one purpose."""

    purpose: str
    action: Action
    issued_at: str
    expires_at: str | None
    index: int

    @property
    def active(self) -> bool:
        """An unexpired grant: what the device's own training gate checks."""
        if self.action != "grant":
            return False
        return self.expires_at is None or self.expires_at > format_time(datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class HeldReceipt:
    """A verified receipt this device keeps, with the signed record it proves."""

    record: SignedRecord
    receipt: Receipt


def _unpinned(error: CheckpointError) -> LogVerificationError:
    return LogVerificationError(
        f"the checkpoint is not signed by the pinned log key: {error.reason}"
    )


def verify_receipt(
    receipt: Receipt | Mapping[str, Any],
    *,
    record: SignedRecord | Mapping[str, Any],
    verifier: NoteVerifier,
) -> Checkpoint:
    """Check a receipt proves the log holds exactly ``record``; return its checkpoint.

    :func:`consent.verify.verify_receipt`, with its failures as
    :class:`LogVerificationError`; JSON receipts and records are parsed first.
    """
    try:
        receipt = receipt if isinstance(receipt, Receipt) else Receipt.model_validate(receipt)
        if not isinstance(record, SignedRecord):
            record = SignedRecord.model_validate(record)
    except ValueError as exc:  # pydantic's ValidationError
        raise LogVerificationError(f"the receipt is malformed: {exc}") from None
    try:
        return _verify_receipt(receipt, record=record, verifier=verifier)
    except CheckpointError as exc:
        raise _unpinned(exc) from None
    except VerificationError as exc:
        raise LogVerificationError(str(exc)) from None


class ConsentClient:
    """Grant, withdraw and check consent for one device, keeping verified receipts.

    ``log_key`` is the log's verifier key, pinned in the app (not fetched from the
    service it is meant to check). Receipts and the last checkpoint seen are kept in
    ``state_path`` (a 0600 JSON file).
    """

    def __init__(
        self,
        *,
        key: DeviceKey,
        url: str,
        log_key: str,
        state_path: str | os.PathLike[str],
        http: httpx.Client | None = None,
    ) -> None:
        self.key = key
        self.verifier = NoteVerifier(log_key)
        self.state_path = Path(state_path)
        self._http = http or httpx.Client(base_url=url, timeout=30)
        self._state = self._load()

    def close(self) -> None:
        self._http.close()

    # -- decisions -------------------------------------------------------------------

    def grant(
        self,
        purpose: str,
        *,
        notice: str,
        policy_version: str = "1",
        expires_at: datetime | None = None,
    ) -> Receipt:
        """Sign and record a grant; return the verified receipt."""
        return self._decide("grant", purpose, notice, policy_version, expires_at)

    def withdraw(self, purpose: str, *, notice: str, policy_version: str = "1") -> Receipt:
        """Sign and record a withdrawal; return the verified receipt."""
        return self._decide("withdraw", purpose, notice, policy_version, None)

    def decision(self, purpose: str) -> Decision | None:
        """This device's own latest verified decision (no network): the device-side gate."""
        latest = self._state["decisions"].get(purpose)
        return None if latest is None else Decision(**latest)

    def receipts(self) -> list[HeldReceipt]:
        """Every verified receipt this device holds, oldest first."""
        return [
            HeldReceipt(
                record=SignedRecord.model_validate(held["record"]),
                receipt=Receipt.model_validate(held["receipt"]),
            )
            for held in self._state["receipts"]
        ]

    def status(self) -> DeviceState:
        """The service's current state for this device, checked against local receipts."""
        answer = self._get(f"/v1/consents/{self.key.device_key}")
        try:
            state = DeviceState.model_validate_json(answer.content)
        except ValueError as exc:  # pydantic's ValidationError
            raise ConsentServiceError(f"the consent service's state is malformed: {exc}") from None
        for purpose, mine in self._state["decisions"].items():
            theirs = state.purposes.get(purpose)
            if theirs is None or theirs.index != mine["index"]:
                raise LogVerificationError(
                    f"the service's state for {purpose!r} disagrees with this device's receipt "
                    f"(index {mine['index']})"
                )
        return state

    def refresh_checkpoint(self) -> Checkpoint:
        """Fetch the latest checkpoint and check it extends the last one seen."""
        try:
            checkpoint = open_signed_checkpoint(self._get("/v1/log/checkpoint").text, self.verifier)
        except CheckpointError as exc:
            raise _unpinned(exc) from None
        self._check_consistent(checkpoint)
        self._save()
        return checkpoint

    # -- internals -------------------------------------------------------------------

    def _decide(
        self,
        action: Action,
        purpose: str,
        notice: str,
        policy_version: str,
        expires_at: datetime | None,
    ) -> Receipt:
        statement: dict[str, Any] = {
            "v": 1,
            "device_key": self.key.device_key,
            "purpose": purpose,
            "action": action,
            "policy_version": policy_version,
            "notice_sha256": notice_sha256(notice),
            "issued_at": format_time(datetime.now(UTC)),
            "nonce": b64url_encode(secrets.token_bytes(16)),
        }
        if expires_at is not None:
            statement["expires_at"] = format_time(expires_at)
        record = {
            "statement": statement,
            "signature": b64url_encode(self.key.sign(rfc8785.dumps(statement))),
        }
        try:
            response = self._http.post("/v1/consents", json=record)
        except httpx.HTTPError as exc:
            raise ConsentServiceError(f"cannot reach the consent service: {exc}") from None
        if 400 <= response.status_code < 500:
            raise ConsentRefusedError(response.status_code, _detail(response))
        if response.status_code != 201:
            raise ConsentServiceError(f"the consent service answered {response.status_code}")
        try:
            receipt = Receipt.model_validate_json(response.content)
        except ValueError as exc:  # pydantic's ValidationError
            raise LogVerificationError(f"the receipt is malformed: {exc}") from None
        checkpoint = verify_receipt(receipt, record=record, verifier=self.verifier)
        self._check_consistent(checkpoint)
        self._state["receipts"].append(
            {"record": record, "receipt": receipt.model_dump(mode="json")}
        )
        self._state["decisions"][purpose] = {
            "purpose": purpose,
            "action": action,
            "issued_at": statement["issued_at"],
            "expires_at": statement.get("expires_at"),
            "index": receipt.index,
        }
        self._save()
        return receipt

    def _check_consistent(self, checkpoint: Checkpoint) -> None:
        """The new checkpoint and the last one seen must describe one append-only log."""
        last = self._state.get("checkpoint")
        if last is not None:
            seen = Checkpoint(last["origin"], last["size"], b64decode(last["root"]))
            old, new = sorted((seen, checkpoint), key=lambda c: c.size)
            answer = self._get(
                "/v1/log/proof/consistency", params={"old": old.size, "new": new.size}
            )
            try:
                verify_append_only(old, new, ConsistencyProof.model_validate_json(answer.content))
            except ValueError as exc:  # ConsistencyError, or a malformed proof
                reason = exc.reason if isinstance(exc, VerificationError) else str(exc)
                raise LogVerificationError(
                    f"the log is not consistent with the checkpoint this device saw at size "
                    f"{seen.size}: it rewrote its history ({reason})"
                ) from None
            if checkpoint.size < seen.size:
                return
        self._state["checkpoint"] = {
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": b64encode(checkpoint.root_hash),
        }

    def _get(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.get(path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConsentServiceError(f"cannot reach the consent service: {exc}") from None
        if response.status_code != 200:
            raise ConsentServiceError(
                f"GET {path} answered {response.status_code}: {_detail(response)}"
            )
        return response

    def _load(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"checkpoint": None, "receipts": [], "decisions": {}}
        state: dict[str, Any] = json.loads(self.state_path.read_text())
        return state

    def _save(self) -> None:
        """Atomically replace the state file (0600), so a crash never leaves half a file."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".consent-")
        with os.fdopen(fd, "w") as handle:
            json.dump(self._state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_path)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
