"""The SDK's consent flow against the real consent service, and a log that lies to it."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_sdk.consent_client import (
    ConsentClient,
    ConsentRefusedError,
    LogVerificationError,
)
from client_sdk.keys import DeviceKey
from consent.models import Receipt
from tests.conftest import ConsentServer
from tests.consent.signing import Signer

NOTICE = "We learn from your mood diary without collecting it."


class Tampering(httpx.BaseTransport):
    """Forwards to the real service and rewrites the receipts it answers with."""

    def __init__(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.inner = httpx.HTTPTransport()
        self.change = change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/consents":
            response.read()
            return httpx.Response(
                response.status_code, json=self.change(json.loads(response.content))
            )
        return response


def client_for(server: ConsentServer, folder: Path, key: DeviceKey, **http: Any) -> ConsentClient:
    log_key = httpx.get(f"{server.url}/v1/log/key").text
    return ConsentClient(
        key=key,
        url=server.url,
        log_key=log_key,
        state_path=folder / "consent.json",
        http=httpx.Client(base_url=server.url, **http) if http else None,
    )


def test_grant_status_and_withdraw_round_trip(
    sqlite_consent_server: ConsentServer, tmp_path: Path
) -> None:
    key = DeviceKey.generate()
    client = client_for(sqlite_consent_server, tmp_path, key)
    receipt = client.grant("model-training", notice=NOTICE)
    assert isinstance(receipt, Receipt)
    assert receipt.pii_principal_id == key.device_key
    assert client.decision("model-training").active
    assert client.status().purposes["model-training"].active is True
    withdrawal = client.withdraw("model-training", notice=NOTICE)
    assert not client.decision("model-training").active
    assert client.status().purposes["model-training"].action == "withdraw"
    reopened = client_for(sqlite_consent_server, tmp_path, key)  # receipts persist on the device
    assert reopened.decision("model-training").action == "withdraw"
    held = reopened.receipts()
    assert [h.receipt for h in held] == [receipt, withdrawal]
    assert [h.record.statement.action for h in held] == ["grant", "withdraw"]
    assert (tmp_path / "consent.json").stat().st_mode & 0o777 == 0o600


def test_a_refused_statement_raises_with_the_service_reason(
    sqlite_consent_server: ConsentServer, tmp_path: Path
) -> None:
    client = client_for(sqlite_consent_server, tmp_path, DeviceKey.generate())
    with pytest.raises(ConsentRefusedError, match="unknown purpose"):
        client.grant("advertising", notice=NOTICE)
    assert client.receipts() == []


def forge_checkpoint_signature(receipt: dict[str, Any]) -> dict[str, Any]:
    text, signature = receipt["checkpoint"].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(signature))
    raw[10] ^= 1
    return receipt | {"checkpoint": f"{text} {base64.b64encode(bytes(raw)).decode()}\n"}


def corrupt_inclusion_proof(receipt: dict[str, Any]) -> dict[str, Any]:
    proof = list(receipt["inclusion_proof"])
    raw = bytearray(base64.b64decode(proof[0]))
    raw[0] ^= 1
    proof[0] = base64.b64encode(bytes(raw)).decode()
    return receipt | {"inclusion_proof": proof}


def claim_another_leaf(receipt: dict[str, Any]) -> dict[str, Any]:
    return receipt | {"index": receipt["index"] - 1}


def name_another_device(receipt: dict[str, Any]) -> dict[str, Any]:
    return receipt | {"pii_principal_id": Signer().device_key}


def flip_the_decision(receipt: dict[str, Any]) -> dict[str, Any]:
    return receipt | {"purposes": [receipt["purposes"][0] | {"action": "withdraw"}]}


def drop_the_checkpoint(receipt: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in receipt.items() if k != "checkpoint"}


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (forge_checkpoint_signature, "not signed by the pinned log key"),
        (corrupt_inclusion_proof, "inclusion proof does not verify"),
        (claim_another_leaf, "inclusion proof does not verify"),
        (name_another_device, "do not match the statement signed"),
        (flip_the_decision, "do not match the statement signed"),
        (drop_the_checkpoint, "receipt is malformed"),
    ],
)
def test_a_receipt_that_does_not_verify_is_caught_and_not_kept(
    sqlite_consent_server: ConsentServer,
    tmp_path: Path,
    tamper: Callable[..., dict[str, Any]],
    words: str,
) -> None:
    with sqlite_consent_server.client() as raw:  # a few entries, so proofs are not empty
        for _ in range(3):
            raw.post("/v1/consents", json=Signer().record("grant"))
    client = client_for(
        sqlite_consent_server, tmp_path, DeviceKey.generate(), transport=Tampering(tamper)
    )
    with pytest.raises(LogVerificationError, match=words):
        client.grant("model-training", notice=NOTICE)
    assert client.decision("model-training") is None
    assert client.receipts() == []


def test_a_log_that_rewrote_its_history_is_caught(tmp_path: Path) -> None:
    honest_dir, fork_dir = tmp_path / "honest", tmp_path / "fork"
    honest_dir.mkdir()
    honest = ConsentServer(
        data_dir=honest_dir, database_url=f"sqlite:///{honest_dir / 'l.db'}"
    ).start()
    key = DeviceKey.generate()
    try:
        client = client_for(honest, tmp_path, key)
        client.grant("model-training", notice=NOTICE)
        client.grant("population-analytics", notice=NOTICE)
    finally:
        honest.stop()
    # The operator restarts the log from a different history, signed with the same key.
    fork_dir.mkdir()
    shutil.copy(honest.key_file, fork_dir / "consent-log.key")
    fork = ConsentServer(data_dir=fork_dir, database_url=f"sqlite:///{fork_dir / 'l.db'}").start()
    try:
        with fork.client() as raw:
            for _ in range(3):
                assert raw.post("/v1/consents", json=Signer().record("grant")).status_code == 201
        forked_client = client_for(fork, tmp_path, key)
        with pytest.raises(LogVerificationError, match="rewrote its history"):
            forked_client.refresh_checkpoint()
        with pytest.raises(LogVerificationError, match="rewrote its history"):
            forked_client.withdraw("model-training", notice=NOTICE)
        assert forked_client.decision("model-training").action == "grant"
    finally:
        fork.stop()
