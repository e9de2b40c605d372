"""The Consent page counts grants from the verified public log, or says it cannot."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from consent.statement import SignedRecord
from dashboard import active_grants_by_day
from tests.conftest import ConsentServer, free_port
from tests.consent.signing import Signer

from .conftest import logged_in_app


def _post(client: httpx.Client, record: dict) -> None:
    response = client.post("/v1/consents", json=record)
    assert response.status_code == 201, response.text


def test_the_consent_page_counts_active_grants_per_purpose(
    dashboard_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    sqlite_consent_server: ConsentServer,
) -> None:
    signers = [Signer() for _ in range(4)]
    with sqlite_consent_server.client() as client:
        for signer in signers:
            _post(client, signer.record("grant", "population-analytics"))
        _post(client, signers[0].record("grant", "model-training"))
        _post(client, signers[1].record("withdraw", "population-analytics"))
        key = client.get("/v1/log/key").text
    monkeypatch.setenv("MOODFED_CONSENT_URL", sqlite_consent_server.url)
    monkeypatch.setenv("MOODFED_CONSENT_LOG_KEY", key)

    app = logged_in_app().switch_page("views/consent.py").run()

    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Log entries"] == "6"
    assert metrics["Checkpoint"] == "verified" and metrics["Verifier key"] == "pinned"
    assert metrics["Active grants: population-analytics"] == "3"
    assert metrics["Active grants: model-training"] == "1"
    assert len(app.get("vega_lite_chart")) == 1


def test_an_unreachable_consent_service_is_said_clearly(
    dashboard_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODFED_CONSENT_URL", f"http://127.0.0.1:{free_port()}")

    app = logged_in_app().switch_page("views/consent.py").run()

    assert not app.exception
    assert "is unreachable" in app.error[0].value
    assert not app.metric


def test_a_log_signed_by_another_key_is_not_shown(
    dashboard_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    sqlite_consent_server: ConsentServer,
) -> None:
    with sqlite_consent_server.client() as client:
        _post(client, Signer().record("grant", "population-analytics"))
    monkeypatch.setenv("MOODFED_CONSENT_URL", sqlite_consent_server.url)
    other = "moodfed.local/consent-log+00000000+AQ" + "A" * 42 + "="
    monkeypatch.setenv("MOODFED_CONSENT_LOG_KEY", other)

    app = logged_in_app().switch_page("views/consent.py").run()

    assert not app.exception
    assert "does NOT verify" in app.error[0].value
    assert not app.metric


def _record(signer: Signer, action: str, issued: str, **extra: str) -> SignedRecord:
    statement = signer.statement(action, "population-analytics", issued_at=issued, **extra)
    return SignedRecord.model_validate(signer.sign(statement))


def test_grants_count_until_withdrawn_or_expired() -> None:
    a, b, c = Signer(), Signer(), Signer()
    records = [
        _record(a, "grant", "2026-01-01T10:00:00Z"),
        _record(b, "grant", "2026-01-01T11:00:00Z", expires_at="2026-01-03T06:00:00Z"),
        _record(c, "grant", "2026-01-02T09:00:00Z"),
        _record(a, "withdraw", "2026-01-03T12:00:00Z"),
        _record(a, "grant", "2026-01-04T12:00:00Z"),
    ]

    counts = active_grants_by_day(records, until=date(2026, 1, 5))

    assert counts["active_grants"].tolist() == [2, 3, 1, 2, 2]
    assert counts["day"].dt.date.tolist()[0] == date(2026, 1, 1)
