"""The witness (C2SP tlog-witness, tlog-cosignature): the specs' examples, an independent
Ed25519 verifier, every answer the spec prescribes over real HTTP, and the log's client."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import nacl.signing
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.merkle import EMPTY_ROOT, MerkleTree, hash_leaf
from consent.note import Checkpoint, NoteSigner, NoteVerifier, format_checkpoint
from consent.verify import (
    BadCosignatureError,
    WitnessQuorumError,
    open_witnessed_checkpoint,
    verify_cosignatures,
)
from consent.witness import (
    TLOG_SIZE,
    ConflictingSizeError,
    CosignatureError,
    CosignatureSigner,
    CosignatureVerifier,
    InconsistentCheckpointError,
    Witness,
    WitnessAheadError,
    WitnessClient,
    Witnessing,
    WitnessKeyError,
    WitnessRefusedError,
    WitnessUnreachableError,
    cosigned_message,
    format_add_checkpoint,
    load_or_create_witness_key,
    parse_add_checkpoint,
    parse_size,
    split_note,
)
from tests.conftest import MOODFED, free_port
from tests.sdk.witnessing import RunningWitness, SecondsClock, make_witness, run_witness

ORIGIN = "example.org/log"

# --- C2SP examples, verbatim ------------------------------------------------------------

# tlog-cosignature: the example checkpoint with a log signature and a cosignature, and the
# Ed25519 signed message of that cosignature.
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3"
    "b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_MESSAGE = (
    b"cosignature/v1\n"
    b"time 1679315147\n"
    b"example.com/behind-the-sofa\n"
    b"20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
# tlog-witness: the example add-checkpoint request body.
SPEC_REQUEST = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/"
    "V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
).encode()
# transparency-dev/formats note/note_cosigv1_test.go, TestCoSigV1Timestamp: a cosignature
# whose timestamp is 1727964367.
FORMATS_COSIGNATURE = (
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFi"
    "EBYJXORmnFBOBA=="
)


def test_the_signed_message_is_the_specs_example_byte_for_byte() -> None:
    text, _ = split_note(SPEC_COSIGNED)
    assert cosigned_message(text, 1679315147) == SPEC_MESSAGE


def test_the_specs_example_cosignature_has_the_specs_layout_and_timestamp() -> None:
    _, lines = split_note(SPEC_COSIGNED)
    witness = next(line for line in lines if line.name == "witness.example.com/w1")
    assert len(witness.key_id + witness.signature) == 4 + 8 + 64
    assert int.from_bytes(witness.signature[:8], "big") == 1679315147
    raw = base64.b64decode(FORMATS_COSIGNATURE)
    assert int.from_bytes(raw[4:12], "big") == 1727964367


def test_the_specs_example_request_parses_and_formats_back_byte_for_byte() -> None:
    request = parse_add_checkpoint(SPEC_REQUEST)
    assert request.old_size == 20852014
    assert len(request.proof) == 4 and all(len(h) == 32 for h in request.proof)
    assert request.note.startswith("example.com/behind-the-sofa\n20852163\n")
    again = format_add_checkpoint(old_size=request.old_size, proof=request.proof, note=request.note)
    assert again == SPEC_REQUEST


def test_the_key_id_and_verifier_key_follow_the_spec() -> None:
    seed = bytes(range(32))
    signer = CosignatureSigner("witness.example/w1", nacl.signing.SigningKey(seed))
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    key_id = hashlib.sha256(b"witness.example/w1\n\x04" + public).digest()[:4]
    material = base64.b64encode(b"\x04" + public).decode()
    expected = f"witness.example/w1+{key_id.hex()}+{material}"
    assert signer.verifier_key == expected
    assert CosignatureVerifier(expected).key_id == key_id


def test_a_log_key_is_not_a_witness_key() -> None:
    log_key = NoteSigner(ORIGIN, nacl.signing.SigningKey.generate()).verifier_key  # type 0x01
    with pytest.raises(CosignatureError, match="0x04"):
        CosignatureVerifier(log_key)


# --- a second, independent verifier: the spec's byte layout and `cryptography` ---------


def independent_check(line: str, text: str, public_key: bytes, name: str) -> int:
    """Verify a cosignature line from the spec alone; return its timestamp."""
    assert line.startswith(f"— {name} ") and line.endswith("\n")
    raw = base64.b64decode(line[len(f"— {name} ") : -1], validate=True)
    assert len(raw) == 76
    assert raw[:4] == hashlib.sha256(name.encode() + b"\n\x04" + public_key).digest()[:4]
    timestamp = int.from_bytes(raw[4:12], "big")
    message = b"cosignature/v1\n" + b"time %d\n" % timestamp + text.encode()
    Ed25519PublicKey.from_public_bytes(public_key).verify(raw[12:], message)
    return timestamp


def test_our_cosignatures_verify_with_an_independent_implementation() -> None:
    seed = os.urandom(32)
    signer = CosignatureSigner("w.example/1", nacl.signing.SigningKey(seed))
    text = f"{ORIGIN}\n7\n{base64.b64encode(os.urandom(32)).decode()}\nextension line\n"
    line = signer.cosign(text, timestamp=1_700_000_123)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    assert independent_check(line, text, public, "w.example/1") == 1_700_000_123
    with pytest.raises(InvalidSignature):
        independent_check(line, text.replace("\n7\n", "\n8\n"), public, "w.example/1")


def test_a_cosignature_made_independently_is_ours_byte_for_byte_and_verifies() -> None:
    seed = os.urandom(32)
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes_raw()
    text = f"{ORIGIN}\n3\n{base64.b64encode(os.urandom(32)).decode()}\n"
    key_id = hashlib.sha256(b"w.example/2\n\x04" + public).digest()[:4]
    message = b"cosignature/v1\ntime 1700000999\n" + text.encode()
    blob = key_id + (1700000999).to_bytes(8, "big") + private.sign(message)
    theirs = f"— w.example/2 {base64.b64encode(blob).decode()}\n"
    ours = CosignatureSigner("w.example/2", nacl.signing.SigningKey(seed))
    assert ours.cosign(text, timestamp=1700000999) == theirs  # Ed25519 is deterministic
    note = text + "\n— other.example/log AAAAAAAA\n" + theirs
    assert CosignatureVerifier(ours.verifier_key).open(note).timestamp == 1700000999


def flip_signature_byte(text: str) -> str:
    """Flip one bit of the Ed25519 signature in the last signature line of ``text``."""
    head, _, last = text.rstrip("\n").rpartition("\n")
    name_part, _, blob = last.rpartition(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    changed = f"{name_part} {base64.b64encode(bytes(raw)).decode()}\n"
    return f"{head}\n{changed}" if head else changed


@pytest.mark.parametrize(
    "change",
    [
        lambda note: note.replace("\n3\n", "\n4\n", 1),  # the checkpoint
        lambda note: note.replace("— w", "— x", 1),  # another name: not this witness's line
        flip_signature_byte,
    ],
)
def test_any_change_is_rejected(change: object) -> None:
    signer = CosignatureSigner("w.example/3", nacl.signing.SigningKey.generate())
    text = f"{ORIGIN}\n3\n{base64.b64encode(os.urandom(32)).decode()}\n"
    note = text + "\n" + signer.cosign(text, timestamp=1700000000)
    assert callable(change)
    with pytest.raises(CosignatureError):
        CosignatureVerifier(signer.verifier_key).open(change(note))


def test_a_changed_timestamp_does_not_verify() -> None:
    signer = CosignatureSigner("w.example/4", nacl.signing.SigningKey.generate())
    text = f"{ORIGIN}\n3\n{base64.b64encode(os.urandom(32)).decode()}\n"
    line = signer.cosign(text, timestamp=1700000000)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1
    forged = f"— w.example/4 {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CosignatureError, match="does not verify"):
        CosignatureVerifier(signer.verifier_key).open(text + "\n" + forged)
    with pytest.raises(CosignatureError, match="zero"):
        signer.cosign(text, timestamp=0)


# --- the log, for the witness to watch ---------------------------------------------------


class Log:
    """A log in memory: its key, its tree, its signed checkpoints and proofs."""

    def __init__(self, size: int = 0, origin: str = ORIGIN) -> None:
        self.signer = NoteSigner(origin, nacl.signing.SigningKey.generate())
        self.origin = origin
        self.tree = MerkleTree(hash_leaf(os.urandom(8)) for _ in range(size))

    @property
    def key(self) -> str:
        return self.signer.verifier_key

    def grow(self, count: int) -> None:
        for _ in range(count):
            self.tree.append(hash_leaf(os.urandom(8)))

    def note(self, size: int | None = None, *, root: bytes | None = None) -> str:
        size = self.tree.size if size is None else size
        checkpoint = Checkpoint(self.origin, size, root or self.tree.root(size))
        return self.signer.sign(format_checkpoint(checkpoint))

    def proof(self, old: int, new: int) -> list[bytes]:
        return self.tree.consistency_proof(old, new)

    def body(self, old: int, size: int | None = None, *, root: bytes | None = None) -> bytes:
        size = self.tree.size if size is None else size
        proof = self.proof(old, size) if 0 < old < size else []
        return format_add_checkpoint(old_size=old, proof=proof, note=self.note(size, root=root))


@pytest.fixture
def log() -> Log:
    return Log(size=20)


@pytest.fixture
def clock() -> SecondsClock:
    return SecondsClock()


@pytest.fixture
def witness(tmp_path: Path, log: Log, clock: SecondsClock) -> Iterator[RunningWitness]:
    with ExitStack() as stack:
        yield run_witness(stack, tmp_path / "witness", log_keys=[log.key], clock=clock)


def post(witness: RunningWitness, body: bytes) -> httpx.Response:
    return httpx.post(f"{witness.url}/add-checkpoint", content=body, timeout=30)


def stored_size(witness: RunningWitness, origin: str = ORIGIN) -> int | None:
    answer = witness.latest(origin)
    if answer.status_code == 404:
        return None
    return int(answer.text.split("\n")[1])


# --- the witness over HTTP: every answer of tlog-witness ---------------------------------


def test_the_first_checkpoint_is_cosigned_and_served_for_monitoring(
    witness: RunningWitness, log: Log, clock: SecondsClock
) -> None:
    assert witness.latest(ORIGIN).status_code == 404
    answer = post(witness, log.body(0))
    assert answer.status_code == 200
    verifier = CosignatureVerifier(witness.verifier_key)
    line = answer.text
    assert line.count("\n") == 1 and line.startswith("— example.org/witness ")
    text = log.note().split("\n\n")[0] + "\n"
    assert independent_check(line, text, verifier.public_key, verifier.name) == clock.now
    served = witness.latest(ORIGIN)
    assert served.status_code == 200
    checkpoint, cosignatures = open_witnessed_checkpoint(
        served.text, NoteVerifier(log.key), [verifier], quorum=1
    )
    assert checkpoint.size == 20 and cosignatures[0].timestamp == clock.now
    assert served.text == log.note() + line
    key = httpx.get(f"{witness.url}/key").text.strip()
    assert key == witness.verifier_key


def test_a_stale_old_size_gets_409_with_the_cosigned_size(
    witness: RunningWitness, log: Log
) -> None:
    assert post(witness, log.body(0)).status_code == 200
    log.grow(5)
    answer = post(witness, log.body(0))
    assert answer.status_code == 409
    assert answer.headers["content-type"] == TLOG_SIZE
    assert answer.text == "20\n" and parse_size(answer.text) == 20
    assert post(witness, log.body(20)).status_code == 200
    assert stored_size(witness) == 25


def test_a_consistent_checkpoint_extends_and_the_same_one_is_cosigned_again(
    witness: RunningWitness, log: Log, clock: SecondsClock
) -> None:
    assert post(witness, log.body(0, 7)).status_code == 200
    assert post(witness, log.body(7, 20)).status_code == 200
    clock.advance(60)
    again = post(witness, log.body(20, 20))
    assert again.status_code == 200
    assert CosignatureVerifier(witness.verifier_key).open(log.note() + again.text).timestamp == (
        clock.now
    )


def corrupt(proof: list[bytes], position: int) -> list[bytes]:
    changed = list(proof)
    changed[position] = bytes([changed[position][0] ^ 1]) + changed[position][1:]
    return changed


@pytest.mark.parametrize(
    ("name", "make_body", "status"),
    [
        ("not UTF-8", lambda log: b"old 0\n\n\xff\xfe", 400),
        ("no old line", lambda log: log.body(0)[len(b"old 0\n") :], 400),
        ("leading zero", lambda log: log.body(0).replace(b"old 0", b"old 00", 1), 400),
        (
            "a proof line that is no hash",
            lambda log: b"old 7\nnot-a-hash\n\n" + log.note().encode(),
            400,
        ),
        (
            "64 proof lines",
            lambda log: b"old 7\n" + (b"A" * 43 + b"=\n") * 64 + b"\n" + log.note().encode(),
            400,
        ),
        ("no checkpoint", lambda log: b"old 0\n\n", 400),
        ("not a checkpoint", lambda log: log.body(0).replace(b"\n20\n", b"\ntwenty\n"), 400),
        ("old size above the checkpoint's", lambda log: b"old 21\n\n" + log.note().encode(), 400),
        ("unknown log", lambda log: Log(20, origin="other.example/log").body(0), 404),
        (
            "signed by an unknown key only",
            lambda log: format_add_checkpoint(
                old_size=0,
                proof=[],
                note=NoteSigner(ORIGIN, nacl.signing.SigningKey.generate()).sign(
                    log.note().split("\n\n")[0] + "\n"
                ),
            ),
            403,
        ),
        (
            "a bad signature by the log's key",
            lambda log: log.body(0).replace(b"\n20\n", b"\n21\n"),
            403,
        ),
        ("stale old size", lambda log: log.body(0, 20), 409),
        (
            "a proof that does not verify",
            lambda log: format_add_checkpoint(
                old_size=7, proof=corrupt(log.proof(7, 20), 1), note=log.note()
            ),
            422,
        ),
        (
            "a proof from another tree",
            lambda log: format_add_checkpoint(
                old_size=7, proof=Log(20).proof(7, 20), note=log.note()
            ),
            422,
        ),
        ("same size, another root", lambda log: log.body(7, 7, root=os.urandom(32)), 422),
        (
            "same size with a proof",
            lambda log: format_add_checkpoint(
                old_size=7, proof=[log.tree.root(7)], note=log.note(7)
            ),
            422,
        ),
    ],
)
def test_every_refusal_has_the_specs_status_and_changes_nothing(
    witness: RunningWitness, log: Log, name: str, make_body: object, status: int
) -> None:
    assert post(witness, log.body(0, 7)).status_code == 200
    before = witness.latest(ORIGIN).text
    assert callable(make_body)
    answer = post(witness, make_body(log))
    assert answer.status_code == status, (name, answer.text)
    assert witness.latest(ORIGIN).text == before


def test_a_first_checkpoint_with_a_proof_or_a_wrong_empty_root_is_unprocessable(
    witness: RunningWitness, log: Log
) -> None:
    with_proof = format_add_checkpoint(old_size=0, proof=[log.tree.root(1)], note=log.note())
    assert post(witness, with_proof).status_code == 422
    empty_bad = format_add_checkpoint(old_size=0, proof=[], note=log.note(0, root=os.urandom(32)))
    assert post(witness, empty_bad).status_code == 422
    assert stored_size(witness) is None
    empty = format_add_checkpoint(old_size=0, proof=[], note=log.note(0, root=EMPTY_ROOT))
    assert post(witness, empty).status_code == 200
    assert stored_size(witness) == 0


def test_an_oversized_body_is_refused(witness: RunningWitness) -> None:
    assert post(witness, b"old 0\n" + b"x" * 100_000).status_code == 413


def test_the_witness_remembers_across_restarts_with_the_same_key(tmp_path: Path, log: Log) -> None:
    with ExitStack() as stack:
        first = run_witness(stack, tmp_path / "w", log_keys=[log.key])
        assert post(first, log.body(0)).status_code == 200
        key = first.verifier_key
    key_file = tmp_path / "w" / "witness.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    with ExitStack() as stack:
        second = run_witness(stack, tmp_path / "w", log_keys=[log.key])
        assert second.verifier_key == key
        answer = post(second, log.body(0))
        assert (answer.status_code, answer.text) == (409, "20\n")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "witness.key"
    load_or_create_witness_key(path)
    path.chmod(0o640)
    with pytest.raises(WitnessKeyError, match="chmod 600"):
        load_or_create_witness_key(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(WitnessKeyError, match="32-byte"):
        load_or_create_witness_key(path)


def submit(witness: Witness, body: bytes, barrier: threading.Barrier, outcomes: list[str]) -> None:
    barrier.wait()
    try:
        witness.add_checkpoint(body)
        outcomes.append("cosigned")
    except ConflictingSizeError:
        outcomes.append("conflict")


def test_concurrent_requests_from_one_size_cannot_both_win(
    tmp_path: Path, database_url: str
) -> None:
    """The check of the old size and the write are one atomic step, on both backends."""
    log = Log(size=2)
    witness = make_witness(tmp_path / "w", log_keys=[log.key], database_url=database_url)
    try:
        witness.add_checkpoint(log.body(0))
        for _ in range(15):
            old = log.tree.size
            log.grow(3)
            bodies = [log.body(old, old + 2), log.body(old, old + 3)]
            barrier = threading.Barrier(2)
            outcomes: list[str] = []
            threads = [
                threading.Thread(target=submit, args=(witness, body, barrier, outcomes))
                for body in bodies
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(outcomes) == ["conflict", "cosigned"]
            stored = witness.store.latest(ORIGIN)
            assert stored is not None and stored.size in (old + 2, old + 3)
            # Whichever won, the next round starts from the size the witness holds.
            if stored.size == old + 2:
                witness.add_checkpoint(log.body(old + 2, old + 3))
    finally:
        witness.store.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    old=st.integers(min_value=1, max_value=70),
    extra=st.integers(min_value=0, max_value=70),
    position=st.integers(min_value=0, max_value=20),
)
def test_the_witness_accepts_every_true_proof_and_refuses_it_corrupted(
    old: int, extra: int, position: int
) -> None:
    log = Log(size=old + extra)
    with tempfile.TemporaryDirectory() as folder:
        witness = make_witness(Path(folder), log_keys=[log.key])
        try:
            witness.add_checkpoint(log.body(0, old))
            proof = log.proof(old, old + extra)
            if proof:
                bad = format_add_checkpoint(
                    old_size=old, proof=corrupt(proof, position % len(proof)), note=log.note()
                )
                with pytest.raises(InconsistentCheckpointError):
                    witness.add_checkpoint(bad)
                if len(proof) > 1:
                    short = format_add_checkpoint(old_size=old, proof=proof[:-1], note=log.note())
                    with pytest.raises(InconsistentCheckpointError):
                        witness.add_checkpoint(short)
            witness.add_checkpoint(log.body(old))
            stored = witness.store.latest(ORIGIN)
            assert stored is not None and stored.size == old + extra
        finally:
            witness.store.close()


# --- the log's side: WitnessClient and Witnessing ----------------------------------------


def test_the_client_learns_the_witness_size_from_a_409_and_gets_a_verified_cosignature(
    witness: RunningWitness, log: Log
) -> None:
    assert post(witness, log.body(0, 9)).status_code == 200
    client = WitnessClient(url=witness.url, verifier_key=witness.verifier_key)
    asked: list[tuple[int, int]] = []

    def proof(old: int, new: int) -> list[bytes]:
        asked.append((old, new))
        return log.proof(old, new)

    cosignature = client.add_checkpoint(log.note(), proof=proof)
    assert asked == [(9, 20)]  # 0 first (no proof), then 9 as the 409 said
    assert client.known_size == 20
    assert cosignature.name == "example.org/witness"
    log.grow(4)
    client.add_checkpoint(log.note(), proof=proof)
    assert asked[-1] == (20, 24)  # no second 409: it remembers
    client.close()


def test_the_client_names_a_witness_that_holds_more_than_the_log(
    witness: RunningWitness, log: Log
) -> None:
    assert post(witness, log.body(0)).status_code == 200
    client = WitnessClient(url=witness.url, verifier_key=witness.verifier_key)
    with pytest.raises(WitnessAheadError, match="cosigned size 20") as caught:
        client.add_checkpoint(log.note(15), proof=log.proof)
    assert caught.value.size == 20
    other = Log(25)  # same origin, another key: not the log this witness trusts
    with pytest.raises(WitnessRefusedError) as refused:
        client.add_checkpoint(other.note(), proof=other.proof)
    assert refused.value.status == 403


def test_the_client_refuses_a_cosignature_by_another_key(witness: RunningWitness, log: Log) -> None:
    other = CosignatureSigner("example.org/witness", nacl.signing.SigningKey.generate())
    client = WitnessClient(url=witness.url, verifier_key=other.verifier_key)
    with pytest.raises(WitnessUnreachableError, match="no cosignature by its key"):
        client.add_checkpoint(log.note(), proof=log.proof)


def test_witnessing_serves_the_newest_checkpoint_with_a_quorum(tmp_path: Path, log: Log) -> None:
    with ExitStack() as stack:
        one = run_witness(stack, tmp_path / "1", log_keys=[log.key], name="w.example/1")
        two = run_witness(stack, tmp_path / "2", log_keys=[log.key], name="w.example/2")
        witnessing = Witnessing(
            [
                WitnessClient(url=one.url, verifier_key=one.verifier_key),
                WitnessClient(url=two.url, verifier_key=two.verifier_key),
            ],
            latest=log.note,
            proof=log.proof,
        )
        stack.callback(witnessing.close)
        assert witnessing.served() == log.note()  # nothing cosigned yet: the bare checkpoint
        result = witnessing.witness_latest()
        assert result.cosigners == ("w.example/1", "w.example/2")
        verifiers = [CosignatureVerifier(one.verifier_key), CosignatureVerifier(two.verifier_key)]
        assert len(verify_cosignatures(witnessing.served(), verifiers, quorum=2)) == 2
        log.grow(3)
        assert NoteVerifier(log.key).open(witnessing.served()).split("\n")[1] == "20"
        witnessing.witness_latest()
        assert NoteVerifier(log.key).open(witnessing.served()).split("\n")[1] == "23"


def test_witnessing_keeps_the_last_quorum_when_a_witness_is_down(tmp_path: Path, log: Log) -> None:
    with ExitStack() as stack:
        one = run_witness(stack, tmp_path / "1", log_keys=[log.key], name="w.example/1")
        down = CosignatureSigner("w.example/2", nacl.signing.SigningKey.generate())
        witnessing = Witnessing(
            [
                WitnessClient(url=one.url, verifier_key=one.verifier_key),
                WitnessClient(
                    url=f"http://127.0.0.1:{free_port()}", verifier_key=down.verifier_key
                ),
            ],
            latest=log.note,
            proof=log.proof,
        )
        stack.callback(witnessing.close)
        assert witnessing.witness_latest().cosigners == ("w.example/1",)
        assert witnessing.served() == log.note()  # 1 of 2: not a quorum, nothing better to serve
        lenient = Witnessing(
            [WitnessClient(url=one.url, verifier_key=one.verifier_key)],
            latest=log.note,
            proof=log.proof,
            quorum=1,
        )
        stack.callback(lenient.close)
        lenient.witness_latest()
        verifier = CosignatureVerifier(one.verifier_key)
        assert verify_cosignatures(lenient.served(), [verifier], quorum=1)
        with pytest.raises(WitnessQuorumError, match="1 of the 2"):
            verify_cosignatures(
                lenient.served(), [verifier, CosignatureVerifier(down.verifier_key)], quorum=2
            )


def test_the_background_thread_submits_on_notify(tmp_path: Path, log: Log) -> None:
    with ExitStack() as stack:
        one = run_witness(stack, tmp_path / "1", log_keys=[log.key])
        done = threading.Event()
        sizes: list[int] = []

        def latest() -> str:
            note = log.note()
            sizes.append(log.tree.size)
            return note

        witnessing = Witnessing(
            [WitnessClient(url=one.url, verifier_key=one.verifier_key)],
            latest=latest,
            proof=log.proof,
            retry_seconds=3600,
        )
        original = witnessing.witness_latest

        def witness_latest() -> object:
            result = original()
            done.set()
            return result

        witnessing.witness_latest = witness_latest  # type: ignore[method-assign]  # observe it
        stack.callback(witnessing.close)
        witnessing.start()
        assert done.wait(30)
        done.clear()
        log.grow(2)
        witnessing.notify()
        assert done.wait(30)
        assert stored_size(one) == 22


def test_a_bad_cosignature_by_a_known_witness_rejects_the_checkpoint(log: Log) -> None:
    signer = CosignatureSigner("w.example/5", nacl.signing.SigningKey.generate())
    text = log.note().split("\n\n")[0] + "\n"
    line = signer.cosign(text, timestamp=1700000000)
    forged = flip_signature_byte(line)
    with pytest.raises(BadCosignatureError, match="does not verify"):
        verify_cosignatures(
            log.note() + forged, [CosignatureVerifier(signer.verifier_key)], quorum=0
        )


# --- the command --------------------------------------------------------------------------


def test_moodfed_witness_serve_and_key(tmp_path: Path, log: Log) -> None:
    port = free_port()
    env = {**os.environ, "MOODFED_DATA_DIR": str(tmp_path), "MOODFED_WITNESS_LOG_KEYS": "[]"}
    refused = subprocess.run(
        [*MOODFED, "witness", "serve", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "no log to witness" in refused.stderr
    stderr = tmp_path / "serve.log"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [*MOODFED, "witness", "serve", "--port", str(port), "--log-key", log.key],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:  # the process's own start-up: poll its health, as tests/conftest does
                assert process.poll() is None, stderr.read_text()
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "the witness did not start"
                    time.sleep(0.1)
            answer = httpx.post(f"{url}/add-checkpoint", content=log.body(0))
            assert answer.status_code == 200
            key = subprocess.run(
                [*MOODFED, "witness", "key"], env=env, capture_output=True, text=True, timeout=60
            ).stdout.strip()
            assert CosignatureVerifier(key).open(log.note() + answer.text)
            assert key in stderr.read_text()
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert (tmp_path / "witness.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "witness.db").exists()


def test_witnessing_overtaken_by_another_process_submits_the_newer_checkpoint(
    tmp_path: Path, log: Log, caplog: pytest.LogCaptureFixture
) -> None:
    with ExitStack() as stack:
        one = run_witness(stack, tmp_path / "1", log_keys=[log.key])
        first = log.note()
        log.grow(5)
        other = Witnessing(
            [WitnessClient(url=one.url, verifier_key=one.verifier_key)],
            latest=log.note,
            proof=log.proof,
        )
        stack.callback(other.close)
        assert other.witness_latest().size == 25  # another worker of the log got there first
        reads = iter([first])

        def latest() -> str:  # this worker read the head just before the other one signed
            return next(reads, log.note())

        this = Witnessing(
            [WitnessClient(url=one.url, verifier_key=one.verifier_key)],
            latest=latest,
            proof=log.proof,
        )
        stack.callback(this.close)
        result = this.witness_latest()
        assert (result.size, result.cosigners) == (25, ("example.org/witness",))
        assert "behind its witness" not in caplog.text
        behind = Witnessing(
            [WitnessClient(url=one.url, verifier_key=one.verifier_key)],
            latest=lambda: first,  # a log that really lost entries 20-24
            proof=log.proof,
        )
        stack.callback(behind.close)
        assert behind.witness_latest().cosigners == ()
        assert "behind its witness" in caplog.text
