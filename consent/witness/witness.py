"""The witness: cosign a log's checkpoint only if it extends the last one cosigned.

C2SP tlog-witness ``add-checkpoint``, as a domain object with no HTTP: parse the request,
check the log's signature, check the old size against the stored one and the
consistency proof against the stored root, then cosign and store atomically. Every
refusal is a :mod:`consent.witness.errors` exception, raised before anything is stored.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from consent.merkle import EMPTY_ROOT, ProofError, verify_consistency
from consent.note import Checkpoint, NoteError, NoteVerifier, parse_checkpoint
from consent.witness.cosignature import CosignatureSigner, split_note, verify_log_signatures
from consent.witness.errors import (
    ConflictingSizeError,
    InconsistentCheckpointError,
    MalformedRequestError,
    UnknownLogError,
    UntrustedCheckpointError,
)
from consent.witness.protocol import ProtocolError, origin_hash, parse_add_checkpoint
from consent.witness.store import StoredCheckpoint, WitnessStore

__all__ = ["Witness"]

log = logging.getLogger("moodfed.witness")


class Witness:
    """One witness key over one store, for a fixed set of logs (origin -> trusted keys).

    ``clock`` gives POSIX seconds for the cosignatures' timestamps; tests pass their own.
    """

    def __init__(
        self,
        *,
        signer: CosignatureSigner,
        logs: Mapping[str, Sequence[NoteVerifier]],
        store: WitnessStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.logs = {origin: tuple(keys) for origin, keys in logs.items() if keys}
        self.store = store
        self.clock = clock
        self._by_hash = {origin_hash(origin): origin for origin in self.logs}

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier_key

    def add_checkpoint(self, body: bytes) -> str:
        """Cosign the checkpoint in an add-checkpoint body; return the cosignature line.

        Raises, in the spec's order: :class:`MalformedRequestError` (400),
        :class:`UnknownLogError` (404), :class:`UntrustedCheckpointError` (403),
        :class:`MalformedRequestError` for an old size above the checkpoint's (400),
        :class:`ConflictingSizeError` (409) and :class:`InconsistentCheckpointError` (422).
        """
        try:
            request = parse_add_checkpoint(body)
            text, _ = split_note(request.note)
            checkpoint = parse_checkpoint(text)
        except (ProtocolError, NoteError) as exc:
            raise MalformedRequestError(str(exc)) from None
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            raise UnknownLogError(f"this witness does not witness the log {checkpoint.origin!r}")
        try:
            verify_log_signatures(request.note, keys)
        except NoteError as exc:
            raise UntrustedCheckpointError(str(exc)) from None
        if request.old_size > checkpoint.size:
            raise MalformedRequestError(
                f"the old size {request.old_size} is above the checkpoint's size {checkpoint.size}"
            )
        latest = self.store.latest(checkpoint.origin)
        self._check(request.old_size, request.proof, checkpoint, latest)
        timestamp = int(self.clock())
        cosignature = self.signer.cosign(text, timestamp=timestamp)
        stored = StoredCheckpoint(
            origin=checkpoint.origin,
            size=checkpoint.size,
            root_hash=checkpoint.root_hash,
            note=_log_signed(request.note, keys) + cosignature,
            cosigned_at=timestamp,
        )
        if not self.store.replace(expected=latest, new=stored):
            current = self.store.latest(checkpoint.origin)
            size = 0 if current is None else current.size
            raise ConflictingSizeError(
                f"another checkpoint of size {size} was cosigned meanwhile", size=size
            )
        log.info("cosigned %s at size %d", checkpoint.origin, checkpoint.size)
        return cosignature

    def _check(
        self,
        old_size: int,
        proof: Sequence[bytes],
        checkpoint: Checkpoint,
        latest: StoredCheckpoint | None,
    ) -> None:
        """The consistency checks of tlog-witness, against the stored checkpoint."""
        held = 0 if latest is None else latest.size
        if old_size != held:
            raise ConflictingSizeError(
                f"this witness last cosigned size {held} of {checkpoint.origin}, not {old_size}",
                size=held,
            )
        if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
            raise self._refuse(checkpoint, "a checkpoint of size 0 must have the empty root")
        if old_size == 0:
            if proof:
                raise self._refuse(checkpoint, "from size 0 the consistency proof must be empty")
            return
        assert latest is not None  # old_size == held > 0
        if old_size == checkpoint.size:
            if not hmac.compare_digest(latest.root_hash, checkpoint.root_hash):
                raise self._refuse(
                    checkpoint,
                    f"size {old_size} was cosigned with a different root: the log forked",
                )
            if proof:
                raise self._refuse(checkpoint, "equal sizes need an empty consistency proof")
            return
        try:
            verify_consistency(
                old_size=old_size,
                new_size=checkpoint.size,
                old_root=latest.root_hash,
                new_root=checkpoint.root_hash,
                proof=proof,
            )
        except ProofError as exc:
            raise self._refuse(
                checkpoint,
                f"not consistent with the checkpoint of size {old_size} cosigned before: {exc}",
            ) from None

    @staticmethod
    def _refuse(checkpoint: Checkpoint, reason: str) -> InconsistentCheckpointError:
        # Validly signed by the log yet inconsistent: possible evidence of misbehaviour.
        log.warning("refused checkpoint %s size %d: %s", checkpoint.origin, checkpoint.size, reason)
        return InconsistentCheckpointError(reason)

    def latest(self, origin_hash_hex: str) -> str | None:
        """The latest cosigned checkpoint note of the log with this origin hash, if any."""
        origin = self._by_hash.get(origin_hash_hex)
        if origin is None:
            return None
        stored = self.store.latest(origin)
        return None if stored is None else stored.note


def _log_signed(note: str, keys: Sequence[NoteVerifier]) -> str:
    """The note with only the trusted log keys' signature lines (others' are dropped)."""
    text, lines = split_note(note)
    kept = [
        line.line
        for line in lines
        if any(line.name == k.name and line.key_id == k.key_id for k in keys)
    ]
    return text + "\n" + "".join(kept)
