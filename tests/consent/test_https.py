"""``moodfed consent serve --ssl-certfile/--ssl-keyfile``: the service speaks only TLS.

A device on a hostile network reaches the service over HTTPS with a certificate its
platform trusts (here a test CA); plain HTTP to the same port gets no answer, and a
client that does not trust the certificate refuses to talk.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from client_sdk import ConsentClient, DeviceKey
from consent.cli import app
from tests.consent.serving import consent_serve
from tests.pki import local_pki


def test_a_device_grants_over_https_and_plain_http_gets_nothing(tmp_path: Path) -> None:
    ca, cert, key = local_pki(tmp_path / "pki")
    args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    with consent_serve(tmp_path / "data", args=args, ca=ca) as service:
        assert service.url.startswith("https://")
        service.log.wait_for(r"moodfed consent.* on https://127\.0\.0\.1")
        trusting = httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=30)
        with trusting:
            log_key = trusting.get(f"{service.url}/v1/log/key").text
            client = ConsentClient(
                key=DeviceKey.generate(),
                url=service.url,
                log_key=log_key,
                state_path=tmp_path / "device" / "consent.json",
                http=trusting,
            )
            client.grant("model-training", notice="notice shown on the device")
            decision = client.decision("model-training")
            assert decision is not None and decision.active
            assert client.pending() == []

        plain = service.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{plain}/healthz", timeout=10)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{service.url}/healthz", timeout=10)  # the system CAs: not ours


@pytest.mark.parametrize("missing", ["--ssl-certfile", "--ssl-keyfile"])
def test_a_certificate_without_its_key_is_refused_and_nothing_starts(
    tmp_path: Path, missing: str
) -> None:
    _, cert, key = local_pki(tmp_path / "pki")
    given = {"--ssl-certfile": str(cert), "--ssl-keyfile": str(key)}
    given.pop(missing)
    data = tmp_path / "data"
    env = {k: None for k in os.environ if k.startswith("MOODFED_")} | {
        "MOODFED_DATA_DIR": str(data)
    }
    result = CliRunner().invoke(app, ["serve", *[x for kv in given.items() for x in kv]], env=env)
    assert result.exit_code == 2
    assert "needs both --ssl-certfile and --ssl-keyfile" in result.output
    assert not data.exists()
