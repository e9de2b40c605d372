"""The device's consent client: sign decisions, and trust no answer it cannot verify.

Every receipt is checked with the ledger's own verifier (``consent.merkle`` and
``consent.note``, the same code the service and the audit run): the checkpoint's
signature against the log key pinned in the app, the inclusion of exactly the
record this device signed, and the consistency of each new checkpoint with the
last one this device saw, so that a log which rewrote its history is caught.
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
from consent.merkle import ProofError, hash_leaf, verify_consistency, verify_inclusion
from consent.note import Checkpoint, NoteError, NoteVerifier, open_checkpoint
from consent.statement import format_time

__all__ = [
    "ConsentClient",
    "ConsentRefusedError",
    "ConsentServiceError",
    "Decision",
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


def verify_receipt(
    receipt: Mapping[str, Any], *, record: Mapping[str, Any], verifier: NoteVerifier
) -> Checkpoint:
    """Check a receipt proves the log holds exactly ``record``; return its checkpoint."""
    try:
        checkpoint = open_checkpoint(str(receipt["checkpoint"]), verifier)
        if checkpoint.size != receipt["tree_size"]:
            raise LogVerificationError("the receipt's tree size is not its checkpoint's")
        leaf_hash = hash_leaf(rfc8785.dumps(dict(record)))
        if b64decode(str(receipt["leaf_hash"])) != leaf_hash:
            raise LogVerificationError("the receipt is for a different record than the one sent")
        verify_inclusion(
            index=int(receipt["index"]),
            size=checkpoint.size,
            leaf_hash=leaf_hash,
            proof=[b64decode(h) for h in receipt["inclusion_proof"]],
            root=checkpoint.root_hash,
        )
    except NoteError as exc:
        raise LogVerificationError(
            f"the checkpoint is not signed by the pinned log key: {exc}"
        ) from None
    except ProofError as exc:
        raise LogVerificationError(f"the inclusion proof does not verify: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise LogVerificationError(f"the receipt is malformed: {exc}") from None
    statement = record["statement"]
    if (
        receipt.get("pii_principal_id") != statement["device_key"]
        or receipt.get("notice_sha256") != statement["notice_sha256"]
    ):
        raise LogVerificationError("the receipt's fields do not match the statement signed")
    return checkpoint


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
    ) -> dict[str, Any]:
        """Sign and record a grant; return the verified receipt."""
        return self._decide("grant", purpose, notice, policy_version, expires_at)

    def withdraw(self, purpose: str, *, notice: str, policy_version: str = "1") -> dict[str, Any]:
        """Sign and record a withdrawal; return the verified receipt."""
        return self._decide("withdraw", purpose, notice, policy_version, None)

    def decision(self, purpose: str) -> Decision | None:
        """This device's own latest verified decision (no network): the device-side gate."""
        latest = self._state["decisions"].get(purpose)
        return None if latest is None else Decision(**latest)

    def receipts(self) -> list[dict[str, Any]]:
        """Every verified receipt this device holds, oldest first."""
        return list(self._state["receipts"])

    def status(self) -> dict[str, Any]:
        """The service's current state for this device, checked against local receipts."""
        state = self._get(f"/v1/consents/{self.key.device_key}").json()
        for purpose, mine in self._state["decisions"].items():
            theirs = state.get("purposes", {}).get(purpose)
            if theirs is None or theirs.get("index") != mine["index"]:
                raise LogVerificationError(
                    f"the service's state for {purpose!r} disagrees with this device's receipt "
                    f"(index {mine['index']})"
                )
        return state

    def refresh_checkpoint(self) -> Checkpoint:
        """Fetch the latest checkpoint and check it extends the last one seen."""
        try:
            checkpoint = open_checkpoint(self._get("/v1/log/checkpoint").text, self.verifier)
        except NoteError as exc:
            raise LogVerificationError(
                f"the checkpoint is not signed by the pinned log key: {exc}"
            ) from None
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
    ) -> dict[str, Any]:
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
        receipt = response.json()
        checkpoint = verify_receipt(receipt, record=record, verifier=self.verifier)
        self._check_consistent(checkpoint)
        self._state["receipts"].append({"record": record, "receipt": receipt})
        self._state["decisions"][purpose] = {
            "purpose": purpose,
            "action": action,
            "issued_at": statement["issued_at"],
            "expires_at": statement.get("expires_at"),
            "index": receipt["index"],
        }
        self._save()
        return receipt

    def _check_consistent(self, checkpoint: Checkpoint) -> None:
        """The new checkpoint and the last one seen must describe one append-only log."""
        last = self._state.get("checkpoint")
        if last is not None:
            seen = Checkpoint(last["origin"], last["size"], b64decode(last["root"]))
            old, new = sorted((seen, checkpoint), key=lambda c: c.size)
            proof = self._get(
                "/v1/log/proof/consistency", params={"old": old.size, "new": new.size}
            ).json()
            try:
                verify_consistency(
                    old_size=old.size,
                    new_size=new.size,
                    old_root=old.root_hash,
                    new_root=new.root_hash,
                    proof=[b64decode(h) for h in proof["proof"]],
                )
            except (ProofError, KeyError, TypeError, ValueError) as exc:
                raise LogVerificationError(
                    f"the log is not consistent with the checkpoint this device saw at size "
                    f"{seen.size}: it rewrote its history ({exc})"
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
        return json.loads(self.state_path.read_text())

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
