"""The consent service wired to witnesses: it submits each new checkpoint, serves it with
their cosignatures, and a device requiring them verifies its decision through them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from client_sdk.consent_client import ConsentClient
from client_sdk.keys import DeviceKey
from consent import ConsentSettings, create_app
from consent.ledger import load_or_create_log_key
from consent.note import NoteSigner
from consent.store import migrate
from consent.verify import verify_cosignatures
from consent.witness import CosignatureVerifier
from tests.consent.conftest import serve_in_thread
from tests.sdk.witnessing import RunningWitness, run_witness

NOTICE = "We learn from your mood diary without collecting it."


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, RunningWitness]]:
    with ExitStack() as stack:
        settings = ConsentSettings(
            data_dir=tmp_path, eligibility_token=SecretStr("t"), witness_urls=[], witness_keys=[]
        )
        log_key = NoteSigner(
            settings.log_origin, load_or_create_log_key(settings.resolved_key_file)
        ).verifier_key
        witness = run_witness(stack, tmp_path / "witness", log_keys=[log_key], name="w.example/1")
        wired = settings.model_copy(
            update={"witness_urls": [witness.url], "witness_keys": [witness.verifier_key]}
        )
        migrate(wired.resolved_database_url)
        yield serve_in_thread(create_app(wired), stack), witness


def test_the_served_checkpoint_carries_the_witness_cosignature_and_a_device_verifies_it(
    tmp_path: Path, service: tuple[str, RunningWitness]
) -> None:
    url, witness = service
    log_key = httpx.get(f"{url}/v1/log/key", timeout=10).text
    client = ConsentClient(
        key=DeviceKey.generate(),
        url=url,
        log_key=log_key,
        state_path=tmp_path / "device" / "consent.json",
        witness_keys=[witness.verifier_key],
    )

    client.grant("model-training", notice=NOTICE)
    for _ in range(50):  # the witness cosigns in the background, once per new checkpoint
        if not client.pending():
            break
        client.verify_pending()

    assert client.pending() == []
    decision = client.decision("model-training")
    assert decision is not None and decision.active
    note = httpx.get(f"{url}/v1/log/checkpoint", timeout=10).text
    assert verify_cosignatures(note, [CosignatureVerifier(witness.verifier_key)], quorum=1)
