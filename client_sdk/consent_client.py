"""The device's consent client: sign decisions, and trust no answer it cannot verify.

Every receipt is checked with the ledger's own verifier (:mod:`consent.verify`, the
same code the audit and the dashboard run): the checkpoint's signature against the log
key pinned in the app, the inclusion of exactly the record this device signed, and the
consistency of each new checkpoint with the largest one this device saw, so that a log
which rewrote its history, or rolled it back, is caught. A device can also require k
of n known witnesses (C2SP tlog-cosignature) to have cosigned the checkpoint that
includes its decision. Answers are parsed into the service's own models
(:mod:`consent.models`).

A decision the service appended (it answered 201) but that could not be verified yet
(a bad receipt, a log that lost entries this device saw, too few witness
cosignatures) is never dropped: it is kept as *pending* in the device's state file,
listed by :meth:`ConsentClient.pending`, and verified again by
:meth:`ConsentClient.verify_pending`, which the app calls at start-up, when the network
comes back, and before each round (it costs nothing when nothing is pending). A pending
withdrawal already closes the device's own gate (:attr:`Decision.active` is False); a
pending grant opens it only once verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import rfc8785

from client_sdk.errors import InvalidArgumentError, SDKError
from client_sdk.keys import DeviceKey
from consent.encoding import b64decode, b64encode, b64url_encode
from consent.merkle import ProofError, verify_inclusion
from consent.models import ConsistencyProof, DeviceState, InclusionProof, Receipt
from consent.note import Checkpoint, NoteError, NoteVerifier
from consent.statement import SignedRecord, format_time
from consent.verify import (
    CheckpointError,
    VerificationError,
    WitnessQuorumError,
    open_signed_checkpoint,
    record_leaf_hash,
    verify_append_only,
    verify_cosignatures,
)
from consent.verify import verify_receipt as _verify_receipt
from consent.witness.cosignature import CosignatureVerifier

__all__ = [
    "ConsentClient",
    "ConsentRefusedError",
    "ConsentServiceError",
    "Decision",
    "HeldReceipt",
    "LogVerificationError",
    "PendingDecision",
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
    """This device's latest verified decision for one purpose.

    ``pending_action`` is the action of a decision this device made after this one for the
    purpose, that the service appended but that is not verified yet (see
    :meth:`ConsentClient.pending`).
    """

    purpose: str
    action: Action
    issued_at: str
    expires_at: str | None
    index: int
    pending_action: Action | None = None

    @property
    def active(self) -> bool:
        """An unexpired, verified grant with no withdrawal after it: the device's own gate."""
        if self.action != "grant" or self.pending_action == "withdraw":
            return False
        return self.expires_at is None or self.expires_at > format_time(datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class PendingDecision:
    """A decision the service appended that this device could not verify yet.

    ``index`` is where the service said it appended it (None if its answer was
    unreadable); ``reason`` is why it is still pending.
    """

    purpose: str
    action: Action
    issued_at: str
    expires_at: str | None
    index: int | None
    reason: str


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
    service it is meant to check). ``witness_keys`` are the verifier keys of witnesses
    the app trusts (``name+keyid+base64(0x04||key)``), pinned the same way, and
    ``witness_quorum`` how many of them must have cosigned a checkpoint before a
    decision in it counts as verified (default: all of them; 0 checks the cosignatures
    present but requires none). Receipts, pending decisions and the largest checkpoint
    seen are kept in ``state_path`` (a 0600 JSON file). ``http`` is the app's own HTTP
    client (its TLS trust, proxies, timeouts); without a base URL it gets ``url``.
    """

    def __init__(
        self,
        *,
        key: DeviceKey,
        url: str,
        log_key: str,
        state_path: str | os.PathLike[str],
        http: httpx.Client | None = None,
        witness_keys: Sequence[str] = (),
        witness_quorum: int | None = None,
    ) -> None:
        self.key = key
        self.verifier = NoteVerifier(log_key)
        try:
            self.witnesses = tuple(CosignatureVerifier(k) for k in witness_keys)
        except NoteError as exc:
            raise InvalidArgumentError(f"a witness key is malformed: {exc}") from None
        quorum = len(self.witnesses) if witness_quorum is None else witness_quorum
        if not 0 <= quorum <= len(self.witnesses):
            raise InvalidArgumentError(
                f"witness_quorum must be between 0 and the {len(self.witnesses)} witness keys "
                f"given, got {quorum}"
            )
        self.witness_quorum = quorum
        self.state_path = Path(state_path)
        if http is not None and not str(http.base_url):
            http.base_url = httpx.URL(url)
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
        """Sign and record a grant; return the receipt (see :meth:`_decide` for when it is
        verified and when it stays pending)."""
        return self._decide("grant", purpose, notice, policy_version, expires_at)

    def withdraw(self, purpose: str, *, notice: str, policy_version: str = "1") -> Receipt:
        """Sign and record a withdrawal; return the receipt (as :meth:`grant`)."""
        return self._decide("withdraw", purpose, notice, policy_version, None)

    def decision(self, purpose: str) -> Decision | None:
        """This device's own latest verified decision (no network): the device-side gate.

        A later decision still pending shows as ``pending_action``; a pending withdrawal
        makes the decision inactive at once.
        """
        latest = self._state["decisions"].get(purpose)
        if latest is None:
            return None
        made = latest.get("seq", -1)  # decisions verified before pending ones existed: -1
        later = [
            e["action"]
            for e in self._state["pending"]
            if e["purpose"] == purpose and e["seq"] > made
        ]
        return Decision(
            purpose=latest["purpose"],
            action=latest["action"],
            issued_at=latest["issued_at"],
            expires_at=latest["expires_at"],
            index=latest["index"],
            pending_action=later[-1] if later else None,
        )

    def receipts(self) -> list[HeldReceipt]:
        """Every verified receipt this device holds, oldest first."""
        return [
            HeldReceipt(
                record=SignedRecord.model_validate(held["record"]),
                receipt=Receipt.model_validate(held["receipt"]),
            )
            for held in self._state["receipts"]
        ]

    def pending(self) -> list[PendingDecision]:
        """Decisions the service appended that are not verified yet, oldest first."""
        return [
            PendingDecision(
                purpose=e["purpose"],
                action=e["action"],
                issued_at=e["issued_at"],
                expires_at=e["expires_at"],
                index=None if e["receipt"] is None else e["receipt"]["index"],
                reason=e["reason"],
            )
            for e in self._state["pending"]
        ]

    def status(self) -> DeviceState:
        """The service's current state for this device, checked against local receipts."""
        answer = self._get(f"/v1/consents/{self.key.device_key}")
        try:
            state = DeviceState.model_validate_json(answer.content)
        except ValueError as exc:  # pydantic's ValidationError
            raise ConsentServiceError(f"the consent service's state is malformed: {exc}") from None
        unsettled = {e["purpose"] for e in self._state["pending"]}
        for purpose, mine in self._state["decisions"].items():
            if purpose in unsettled:  # the service holds the later, pending decision
                continue
            theirs = state.purposes.get(purpose)
            if theirs is None or theirs.index != mine["index"]:
                raise LogVerificationError(
                    f"the service's state for {purpose!r} disagrees with this device's receipt "
                    f"(index {mine['index']})"
                )
        return state

    def refresh_checkpoint(self) -> Checkpoint:
        """Fetch the latest checkpoint and check it extends the largest one seen.

        With witnesses required it must also carry their cosignatures. A log that
        serves a checkpoint smaller than one this device saw must still prove that one
        (a lagging, witnessed checkpoint); one that no longer holds it was rolled back
        and raises :class:`LogVerificationError`.
        """
        note = self._get("/v1/log/checkpoint").text
        checkpoint = self._open(note)
        self._check_consistent(checkpoint)
        self._save()
        try:
            self._require_witnesses(note)
        except WitnessQuorumError as exc:
            raise LogVerificationError(str(exc)) from None
        return checkpoint

    def verify_pending(self) -> list[PendingDecision]:
        """Try to verify every pending decision now; return those still pending.

        Each must be included in the log's latest checkpoint, which must extend every
        checkpoint this device saw and carry the witnesses' cosignatures it requires.
        A decision not yet in a (witnessed) checkpoint simply stays pending; a log that
        lost entries this device saw, or does not hold the decision where it said,
        raises :class:`LogVerificationError` (the decision still stays pending), and an
        unreachable service :class:`ConsentServiceError`.
        """
        if not self._state["pending"]:
            return []
        note = self._get("/v1/log/checkpoint").text
        checkpoint = self._open(note)
        self._check_consistent(checkpoint)
        try:
            self._require_witnesses(note)
        except WitnessQuorumError as exc:
            for entry in self._state["pending"]:
                entry["reason"] = str(exc)
            self._save()
            return self.pending()
        failure: LogVerificationError | None = None
        for entry in list(self._state["pending"]):
            try:
                self._settle(entry, note, checkpoint)
            except LogVerificationError as exc:
                entry["reason"] = str(exc)
                failure = failure or exc
        self._save()
        if failure is not None:
            raise failure
        return self.pending()

    # -- internals -------------------------------------------------------------------

    def _decide(
        self,
        action: Action,
        purpose: str,
        notice: str,
        policy_version: str,
        expires_at: datetime | None,
    ) -> Receipt:
        """Sign, send, keep, verify.

        Once the service answers 201 the decision is kept (pending) before anything is
        checked, so no failure after that loses it. It is verified at once when the
        receipt proves it and, if witnesses are required, the receipt's or the served
        checkpoint carries their cosignatures; otherwise it stays pending and the
        receipt is still returned. A receipt that does not verify, or a log that lost
        entries this device saw, raises :class:`LogVerificationError`.
        """
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
        self._state["seq"] += 1
        entry: dict[str, Any] = {
            "seq": self._state["seq"],  # the order this device decided in
            "record": record,
            "receipt": None,
            "purpose": purpose,
            "action": action,
            "issued_at": statement["issued_at"],
            "expires_at": statement.get("expires_at"),
            "reason": "appended by the service, not verified yet",
        }
        self._state["pending"].append(entry)
        try:
            try:
                receipt = Receipt.model_validate_json(response.content)
            except ValueError as exc:  # pydantic's ValidationError
                raise LogVerificationError(f"the receipt is malformed: {exc}") from None
            entry["receipt"] = receipt.model_dump(mode="json")
            self._save()  # appended: from here on the decision is never lost
            checkpoint = verify_receipt(receipt, record=record, verifier=self.verifier)
            self._check_consistent(checkpoint)
            if self._witnessed(receipt.checkpoint):
                self._promote(entry, receipt)
            else:
                self.verify_pending()  # the served checkpoint may already cover it
        except SDKError as exc:
            entry["reason"] = str(exc)
            self._save()
            raise
        self._save()
        return receipt

    def _open(self, note: str) -> Checkpoint:
        try:
            return open_signed_checkpoint(note, self.verifier)
        except CheckpointError as exc:
            raise _unpinned(exc) from None

    def _require_witnesses(self, note: str) -> None:
        """Raise :class:`WitnessQuorumError` unless enough known witnesses cosigned ``note``;
        a bad cosignature by a known witness raises :class:`LogVerificationError`."""
        try:
            verify_cosignatures(note, self.witnesses, quorum=self.witness_quorum)
        except WitnessQuorumError:
            raise
        except VerificationError as exc:
            raise LogVerificationError(str(exc)) from None

    def _witnessed(self, note: str) -> bool:
        try:
            self._require_witnesses(note)
        except WitnessQuorumError:
            return False
        return True

    def _settle(self, entry: dict[str, Any], note: str, checkpoint: Checkpoint) -> None:
        """Verify one pending decision against a verified, witnessed checkpoint."""
        record = SignedRecord.model_validate(entry["record"])
        leaf_hash = record_leaf_hash(record)
        receipt = None if entry["receipt"] is None else Receipt.model_validate(entry["receipt"])
        claimed = None if receipt is None else receipt.index

        def candidates() -> Iterator[int]:
            # Where the receipt said; else (unreadable, or not there) where the state says.
            if claimed is not None:
                yield claimed
            found = self._service_index(entry["purpose"])
            if found is not None and found != claimed:
                yield found

        for index in candidates():
            if index >= checkpoint.size:
                entry["reason"] = (
                    f"index {index} is not yet in a verified checkpoint (size {checkpoint.size})"
                )
                return
            proof = self._inclusion(index, checkpoint.size)
            try:
                verify_inclusion(
                    index=index,
                    size=checkpoint.size,
                    leaf_hash=leaf_hash,
                    proof=[b64decode(h) for h in proof.audit_path],
                    root=checkpoint.root_hash,
                )
            except (ProofError, ValueError):
                continue
            if receipt is not None:
                receipt = receipt.model_copy(
                    update={
                        "index": index,
                        "tree_size": checkpoint.size,
                        "inclusion_proof": proof.audit_path,
                        "checkpoint": note,
                    }
                )
                verify_receipt(receipt, record=record, verifier=self.verifier)
            self._promote(entry, receipt, index=index)
            return
        raise LogVerificationError(
            f"the log's checkpoint of size {checkpoint.size} does not hold this device's "
            f"{entry['action']} for {entry['purpose']!r} where the service said it appended it"
        )

    def _promote(self, entry: dict[str, Any], receipt: Receipt | None, *, index: int = -1) -> None:
        """A pending decision is verified: it becomes a held receipt and the decision."""
        if receipt is not None:
            index = receipt.index
            self._state["receipts"].append(
                {"record": entry["record"], "receipt": receipt.model_dump(mode="json")}
            )
        self._state["pending"].remove(entry)
        current = self._state["decisions"].get(entry["purpose"])
        if current is None or current["index"] < index:
            self._state["decisions"][entry["purpose"]] = {
                "seq": entry["seq"],
                "purpose": entry["purpose"],
                "action": entry["action"],
                "issued_at": entry["issued_at"],
                "expires_at": entry["expires_at"],
                "index": index,
            }

    def _service_index(self, purpose: str) -> int | None:
        """Where the service says this device's latest decision for ``purpose`` is."""
        answer = self._get(f"/v1/consents/{self.key.device_key}")
        try:
            state = DeviceState.model_validate_json(answer.content)
        except ValueError as exc:  # pydantic's ValidationError
            raise ConsentServiceError(f"the consent service's state is malformed: {exc}") from None
        found = state.purposes.get(purpose)
        return None if found is None else found.index

    def _inclusion(self, index: int, size: int) -> InclusionProof:
        answer = self._log_proof("/v1/log/proof/inclusion", {"index": index, "size": size})
        try:
            return InclusionProof.model_validate_json(answer.content)
        except ValueError as exc:  # pydantic's ValidationError
            raise LogVerificationError(f"the inclusion proof is malformed: {exc}") from None

    def _check_consistent(self, checkpoint: Checkpoint) -> None:
        """The checkpoint and the largest one seen must describe one append-only log.

        A larger checkpoint must extend the one seen (and becomes the one seen); a
        smaller one must be a prefix of it, which only a log that still holds every
        entry the device saw can prove.
        """
        last = self._state.get("checkpoint")
        if last is not None:
            seen = Checkpoint(last["origin"], last["size"], b64decode(last["root"]))
            old, new = sorted((seen, checkpoint), key=lambda c: c.size)
            if old.size == new.size:
                proof = ConsistencyProof(old=old.size, new=new.size, proof=[])
            else:
                answer = self._log_proof(
                    "/v1/log/proof/consistency",
                    {"old": old.size, "new": new.size},
                    rolled_back=(seen, checkpoint),
                )
                try:
                    proof = ConsistencyProof.model_validate_json(answer.content)
                except ValueError as exc:  # pydantic's ValidationError
                    raise LogVerificationError(
                        f"the consistency proof is malformed: {exc}"
                    ) from None
            try:
                verify_append_only(old, new, proof)
            except VerificationError as exc:
                raise LogVerificationError(
                    f"the log is not consistent with the checkpoint this device saw at size "
                    f"{seen.size}: it rewrote its history ({exc.reason})"
                ) from None
            if checkpoint.size <= seen.size:
                return
        self._state["checkpoint"] = {
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": b64encode(checkpoint.root_hash),
        }

    def _log_proof(
        self,
        path: str,
        params: dict[str, int],
        *,
        rolled_back: tuple[Checkpoint, Checkpoint] | None = None,
    ) -> httpx.Response:
        """A proof the log owes for sizes it signed: a 4xx refusal is the log's failure."""
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ConsentServiceError(f"cannot reach the consent service: {exc}") from None
        if 400 <= response.status_code < 500:
            if rolled_back is not None and rolled_back[1].size < rolled_back[0].size:
                seen, served = rolled_back
                raise LogVerificationError(
                    f"the log serves a checkpoint of size {served.size} but this device saw it "
                    f"sign size {seen.size}, and it cannot prove the two consistent: it was "
                    f"rolled back and lost entries {served.size}-{seen.size - 1} "
                    f"({response.status_code}: {_detail(response)})"
                )
            raise LogVerificationError(
                f"the log refuses to prove what it signed (GET {path} {params} answered "
                f"{response.status_code}: {_detail(response)})"
            )
        if response.status_code != 200:
            raise ConsentServiceError(
                f"GET {path} answered {response.status_code}: {_detail(response)}"
            )
        return response

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
        state: dict[str, Any] = {
            "checkpoint": None,
            "receipts": [],
            "decisions": {},
            "pending": [],
            "seq": 0,
        }
        if self.state_path.exists():
            state.update(json.loads(self.state_path.read_text()))
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
