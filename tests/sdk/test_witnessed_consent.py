"""The SDK with witnesses and pending decisions, against a real consent service and real
witnesses over HTTP: k of n cosignatures, decisions that wait for them, receipts that
fail and are verified later, and nothing the service appended ever dropped."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import nacl.signing
import pytest
from pydantic import SecretStr

from client_sdk.consent_client import ConsentClient, LogVerificationError
from client_sdk.errors import InvalidArgumentError
from client_sdk.keys import DeviceKey
from consent import ConsentSettings, create_app
from consent.note import NoteSigner
from consent.store import migrate
from consent.verify import verify_cosignatures, verify_receipt
from consent.witness import (
    CosignatureVerifier,
    WitnessClient,
    Witnessing,
    http_checkpoint_source,
    http_proof_source,
)
from tests.consent.conftest import serve_in_thread
from tests.consent.signing import Signer
from tests.sdk.test_consent_client import Tampering, drop_the_checkpoint, forge_checkpoint_signature
from tests.sdk.witnessing import RunningWitness, WitnessedCheckpoint, run_witness

NOTICE = "We learn from your mood diary without collecting it."


@dataclass
class World:
    url: str
    log_key: str
    one: RunningWitness
    two: RunningWitness

    def witnessing(self, *witnesses: RunningWitness, quorum: int | None = None) -> Witnessing:
        http = httpx.Client(base_url=self.url, timeout=30)
        return Witnessing(
            [WitnessClient(url=w.url, verifier_key=w.verifier_key) for w in witnesses],
            latest=http_checkpoint_source(http),
            proof=http_proof_source(http),
            quorum=quorum,
        )

    def append_others(self, count: int) -> None:
        with httpx.Client(base_url=self.url) as client:
            for _ in range(count):
                assert client.post("/v1/consents", json=Signer().record("grant")).status_code == 201


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("witnessed")
    with ExitStack() as stack:
        database_url = f"sqlite:///{folder / 'ledger.db'}"
        migrate(database_url)
        settings = ConsentSettings(
            data_dir=folder, database_url=database_url, eligibility_token=SecretStr("t")
        )
        url = serve_in_thread(create_app(settings), stack)
        log_key = httpx.get(f"{url}/v1/log/key", timeout=30).text
        one = run_witness(stack, folder / "w1", log_keys=[log_key], name="w.example/1")
        two = run_witness(stack, folder / "w2", log_keys=[log_key], name="w.example/2")
        world = World(url=url, log_key=log_key, one=one, two=two)
        world.append_others(3)
        yield world


def device(
    world: World,
    folder: Path,
    *,
    key: DeviceKey | None = None,
    witnessing: Witnessing | None = None,
    witnesses: tuple[RunningWitness, ...] = (),
    quorum: int | None = None,
    change: Callable[[str], str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ConsentClient:
    if witnessing is not None:
        transport = WitnessedCheckpoint(witnessing, change)
    return ConsentClient(
        key=key or DeviceKey.generate(),
        url=world.url,
        log_key=world.log_key,
        state_path=folder / "consent.json",
        http=httpx.Client(base_url=world.url, transport=transport, timeout=30),
        witness_keys=[w.verifier_key for w in witnesses],
        witness_quorum=quorum,
    )


def test_a_decision_waits_for_its_witnesses_then_verifies(world: World, tmp_path: Path) -> None:
    witnessing = world.witnessing(world.one, world.two)
    client = device(world, tmp_path, witnessing=witnessing, witnesses=(world.one, world.two))
    receipt = client.grant("model-training", notice=NOTICE)
    [pending] = client.pending()
    assert (pending.purpose, pending.action, pending.index) == (
        "model-training",
        "grant",
        receipt.index,
    )
    assert "0 of the 2 witness cosignatures" in pending.reason
    assert client.decision("model-training") is None  # not verified: the gate stays shut
    assert client.receipts() == []
    assert witnessing.witness_latest().cosigners == ("w.example/1", "w.example/2")
    assert client.verify_pending() == []
    decision = client.decision("model-training")
    assert decision is not None and decision.active and decision.index == receipt.index
    [held] = client.receipts()
    verifiers = [
        CosignatureVerifier(world.one.verifier_key),
        CosignatureVerifier(world.two.verifier_key),
    ]
    assert len(verify_cosignatures(held.receipt.checkpoint, verifiers, quorum=2)) == 2
    assert verify_receipt(held.receipt, record=held.record, verifier=client.verifier).size >= (
        receipt.tree_size
    )
    witnessing.close()
    client.close()


def test_a_lagging_witnessed_checkpoint_is_not_a_rollback(world: World, tmp_path: Path) -> None:
    witnessing = world.witnessing(world.one)
    client = device(world, tmp_path, witnessing=witnessing, witnesses=(world.one,))
    witnessing.witness_latest()
    world.append_others(4)
    receipt = client.grant("model-training", notice=NOTICE)  # beyond the witnessed size
    # The served checkpoint is smaller than the receipt's, but the log proves it a prefix.
    [pending] = client.pending()
    assert "not yet in a verified checkpoint" in pending.reason
    assert client.refresh_checkpoint().size < receipt.tree_size
    witnessing.witness_latest()
    assert client.verify_pending() == []
    assert client.decision("model-training") is not None
    witnessing.close()
    client.close()


def test_too_few_witnesses_keep_a_decision_pending_until_the_quorum_allows(
    world: World, tmp_path: Path
) -> None:
    witnessing = world.witnessing(world.one)  # the log reaches only one of the two
    key = DeviceKey.generate()
    strict = device(
        world, tmp_path, key=key, witnessing=witnessing, witnesses=(world.one, world.two)
    )
    strict.grant("population-analytics", notice=NOTICE)
    witnessing.witness_latest()
    [pending] = strict.verify_pending()
    assert "1 of the 2 witness cosignatures" in pending.reason
    with pytest.raises(LogVerificationError, match="1 of the 2"):
        strict.refresh_checkpoint()
    strict.close()
    lenient = device(
        world, tmp_path, key=key, witnessing=witnessing, witnesses=(world.one, world.two), quorum=1
    )
    assert lenient.verify_pending() == []
    assert lenient.decision("population-analytics") is not None
    witnessing.close()
    lenient.close()


def forge_witness_line(note: str) -> str:
    """Flip one bit of the witness's signature (the last line)."""
    head, _, last = note.rstrip("\n").rpartition("\n")
    prefix, _, blob = last.rpartition(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    return f"{head}\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


def test_a_forged_cosignature_is_caught_and_the_decision_kept(world: World, tmp_path: Path) -> None:
    witnessing = world.witnessing(world.one)
    client = device(
        world, tmp_path, witnessing=witnessing, witnesses=(world.one,), change=forge_witness_line
    )
    witnessing.witness_latest()
    with pytest.raises(LogVerificationError, match=r"cosignature by w\.example/1 does not verify"):
        client.grant("model-training", notice=NOTICE)
    [pending] = client.pending()
    assert "does not verify" in pending.reason
    with pytest.raises(LogVerificationError, match="does not verify"):
        client.verify_pending()
    assert len(client.pending()) == 1
    witnessing.close()
    client.close()


def test_cosignatures_of_unknown_witnesses_are_ignored(world: World, tmp_path: Path) -> None:
    witnessing = world.witnessing(world.one, world.two)
    client = device(world, tmp_path, witnessing=witnessing, witnesses=(world.two,))
    witnessing.witness_latest()
    client.grant("model-training", notice=NOTICE)
    witnessing.witness_latest()
    assert client.verify_pending() == []
    witnessing.close()
    client.close()


def test_a_pending_withdrawal_closes_the_gate_at_once(world: World, tmp_path: Path) -> None:
    witnessing = world.witnessing(world.one)
    client = device(world, tmp_path, witnessing=witnessing, witnesses=(world.one,))
    client.grant("model-training", notice=NOTICE)
    witnessing.witness_latest()
    client.verify_pending()
    granted = client.decision("model-training")
    assert granted is not None and granted.active
    client.withdraw("model-training", notice=NOTICE)
    pending = client.decision("model-training")
    assert pending is not None and pending.action == "grant"
    assert pending.pending_action == "withdraw" and not pending.active
    assert client.status().purposes["model-training"].action == "withdraw"  # the service has it
    witnessing.witness_latest()
    assert client.verify_pending() == []
    withdrawn = client.decision("model-training")
    assert (
        withdrawn is not None
        and withdrawn.action == "withdraw"
        and withdrawn.pending_action is None
    )
    witnessing.close()
    client.close()


def test_a_receipt_that_does_not_verify_is_kept_and_verified_later(
    world: World, tmp_path: Path
) -> None:
    key = DeviceKey.generate()
    lied_to = device(world, tmp_path, key=key, transport=Tampering(forge_checkpoint_signature))
    with pytest.raises(LogVerificationError, match="not signed by the pinned log key"):
        lied_to.grant("model-training", notice=NOTICE)
    [pending] = lied_to.pending()
    assert pending.index is not None
    lied_to.close()
    honest = device(world, tmp_path, key=key)
    assert honest.verify_pending() == []
    decision = honest.decision("model-training")
    assert decision is not None and decision.active and decision.index == pending.index
    [held] = honest.receipts()
    verify_receipt(held.receipt, record=held.record, verifier=honest.verifier)
    honest.close()


def test_an_unreadable_receipt_is_found_in_the_log_and_verified_later(
    world: World, tmp_path: Path
) -> None:
    key = DeviceKey.generate()
    lied_to = device(world, tmp_path, key=key, transport=Tampering(drop_the_checkpoint))
    with pytest.raises(LogVerificationError, match="receipt is malformed"):
        lied_to.withdraw("population-analytics", notice=NOTICE)
    [pending] = lied_to.pending()
    assert pending.index is None and pending.action == "withdraw"
    lied_to.close()
    honest = device(world, tmp_path, key=key)
    assert honest.verify_pending() == []
    decision = honest.decision("population-analytics")
    assert decision is not None and decision.action == "withdraw"
    assert honest.receipts() == []  # no readable receipt was ever given for it
    honest.close()


def test_a_receipt_with_a_wrong_index_is_verified_where_the_log_holds_the_decision(
    world: World, tmp_path: Path
) -> None:
    def claim_index_zero(receipt: dict[str, object]) -> dict[str, object]:
        return receipt | {"index": 0}

    key = DeviceKey.generate()
    client = device(world, tmp_path, key=key, transport=Tampering(claim_index_zero))
    with pytest.raises(LogVerificationError):
        client.grant("model-training", notice=NOTICE)
    client.close()
    # The receipt's index is a lie, but the service's state says where it is: verified.
    honest = device(world, tmp_path, key=key)
    assert honest.verify_pending() == []
    honest.close()


def test_the_witness_configuration_is_checked(world: World, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="between 0 and the 1"):
        device(world, tmp_path, witnesses=(world.one,), quorum=2)
    log_key = NoteSigner("example.org/log", nacl.signing.SigningKey.generate()).verifier_key
    with pytest.raises(InvalidArgumentError, match="witness key is malformed"):
        ConsentClient(
            key=DeviceKey.generate(),
            url=world.url,
            log_key=world.log_key,
            state_path=tmp_path / "c.json",
            witness_keys=[log_key],
        )


def test_a_state_file_from_before_pending_decisions_loads(world: World, tmp_path: Path) -> None:
    key = DeviceKey.generate()
    client = device(world, tmp_path, key=key)
    client.grant("model-training", notice=NOTICE)
    client.close()
    state = json.loads((tmp_path / "consent.json").read_text())
    del state["pending"]
    (tmp_path / "consent.json").write_text(json.dumps(state))
    reopened = device(world, tmp_path, key=key)
    assert reopened.pending() == [] and reopened.verify_pending() == []
    assert reopened.decision("model-training") is not None
    reopened.close()


class AcknowledgeWithoutAppending(httpx.BaseTransport):
    """A service that appends the first statement, then answers 201 to the next ones
    with that first receipt, appending nothing."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.first: tuple[int, bytes] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/consents":
            if self.first is None:
                response = self.inner.handle_request(request)
                response.read()
                self.first = (response.status_code, response.content)
            return httpx.Response(self.first[0], content=self.first[1])
        return self.inner.handle_request(request)


def test_a_decision_the_log_does_not_hold_stays_pending(world: World, tmp_path: Path) -> None:
    key = DeviceKey.generate()
    client = device(world, tmp_path, key=key, transport=AcknowledgeWithoutAppending())
    client.grant("model-training", notice=NOTICE)
    with pytest.raises(LogVerificationError, match="different record"):
        client.withdraw("model-training", notice=NOTICE)
    client.close()
    honest = device(world, tmp_path, key=key)
    with pytest.raises(LogVerificationError, match="does not hold this device's withdraw"):
        honest.verify_pending()
    [pending] = honest.pending()
    assert pending.action == "withdraw" and "does not hold" in pending.reason
    decision = honest.decision("model-training")
    assert decision is not None and decision.pending_action == "withdraw" and not decision.active
    # A later decision supersedes it in the gate; the pending one is still listed, not lost.
    honest.grant("model-training", notice=NOTICE)
    regranted = honest.decision("model-training")
    assert regranted is not None and regranted.active and regranted.pending_action is None
    assert [p.action for p in honest.pending()] == ["withdraw"]
    honest.close()
