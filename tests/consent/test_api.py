"""The consent service over real HTTP, on SQLite and on PostgreSQL.

The service runs in-process (``tests/consent/conftest.py``) on a clock the tests move,
so expiry and clock skew are tested at their boundaries without waiting.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from consent.merkle import hash_leaf, verify_consistency, verify_inclusion
from consent.note import NoteVerifier, open_checkpoint
from tests.consent.conftest import InProcessService
from tests.consent.signing import Signer, rfc3339

ORIGIN = "moodfed.local/consent-log"


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def verify_receipt(receipt: dict[str, Any], verifier_key: str) -> None:
    checkpoint = open_checkpoint(receipt["checkpoint"], NoteVerifier(verifier_key), origin=ORIGIN)
    assert checkpoint.size == receipt["tree_size"]
    verify_inclusion(
        index=receipt["index"],
        size=receipt["tree_size"],
        leaf_hash=b64(receipt["leaf_hash"]),
        proof=[b64(p) for p in receipt["inclusion_proof"]],
        root=checkpoint.root_hash,
    )


def log_size(client: httpx.Client) -> int:
    return int(client.get("/v1/log/checkpoint").text.split("\n")[1])


def eligible(
    client: httpx.Client, server: InProcessService, keys: list[str], purpose: str = "model-training"
) -> list[str]:
    response = client.post(
        "/v1/eligibility",
        json={"purpose": purpose, "device_keys": keys},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["eligible"]


def test_a_grant_receipt_verifies_against_the_published_key(service: InProcessService) -> None:
    signer = Signer()
    with service.client() as client:
        response = client.post("/v1/consents", json=signer.record("grant"))
        assert response.status_code == 201, response.text
        receipt = response.json()
        verify_receipt(receipt, client.get("/v1/log/key").text)
    assert receipt["pii_principal_id"] == signer.device_key
    assert receipt["purposes"][0]["purpose"] == "model-training"
    for field in (
        "controller",
        "jurisdiction",
        "language",
        "data_categories",
        "recipients",
        "retention",
        "withdrawal_method",
        "policy_version",
        "notice_sha256",
    ):
        assert receipt[field], field


def test_the_leaf_is_the_jcs_of_the_signed_record(service: InProcessService) -> None:
    import rfc8785

    signer = Signer()
    record = signer.record("grant")
    with service.client() as client:
        receipt = client.post("/v1/consents", json=record).json()
        logged = client.get(
            "/v1/log/entries", params={"start": receipt["index"], "end": receipt["index"] + 1}
        ).json()
    assert logged == [record]
    assert b64(receipt["leaf_hash"]) == hash_leaf(rfc8785.dumps(record))


def test_a_withdrawal_flips_the_state_and_eligibility(service: InProcessService) -> None:
    signer, other = Signer(), Signer()
    with service.client() as client:
        for s in (signer, other):
            assert client.post("/v1/consents", json=s.record("grant")).status_code == 201
        assert eligible(client, service, [signer.device_key, other.device_key]) == [
            signer.device_key,
            other.device_key,
        ]
        assert client.post("/v1/consents", json=signer.record("withdraw")).status_code == 201
        state = client.get(f"/v1/consents/{signer.device_key}").json()
        assert state["purposes"]["model-training"]["action"] == "withdraw"
        assert state["purposes"]["model-training"]["active"] is False
        assert eligible(client, service, [signer.device_key, other.device_key]) == [
            other.device_key
        ]


def test_eligibility_is_per_purpose_and_ignores_unknown_devices(
    service: InProcessService,
) -> None:
    signer = Signer()
    with service.client() as client:
        client.post("/v1/consents", json=signer.record("grant", "population-analytics"))
        assert eligible(
            client, service, [signer.device_key, Signer().device_key], "population-analytics"
        ) == [signer.device_key]
        assert eligible(client, service, [signer.device_key]) == []


def test_an_expired_grant_is_not_eligible(service: InProcessService) -> None:
    lasting, expiring = Signer(), Signer()
    now = service.clock()
    keys = [lasting.device_key, expiring.device_key]
    with service.client() as client:
        for signer, lifetime in ((lasting, 3600), (expiring, 60)):
            expires = rfc3339(now + timedelta(seconds=lifetime))
            record = signer.record("grant", issued_at=now, expires_at=expires)
            assert client.post("/v1/consents", json=record).status_code == 201
        service.clock.advance(59)
        assert eligible(client, service, keys) == keys
        service.clock.advance(1)  # the expiry instant itself is already past the grant
        assert eligible(client, service, keys) == [lasting.device_key]
        state = client.get(f"/v1/consents/{expiring.device_key}").json()
        assert state["purposes"]["model-training"]["active"] is False
        assert state["purposes"]["model-training"]["action"] == "grant"


def test_the_clock_skew_window_is_measured_on_the_service_clock(
    service: InProcessService,
) -> None:
    s = Signer()
    now = service.clock()
    with service.client() as client:
        before = log_size(client)
        for offset in (-301, 301):
            late = client.post(
                "/v1/consents", json=s.record("grant", issued_at=now + timedelta(seconds=offset))
            )
            assert late.status_code == 422 and "301 s from the service's clock" in late.text
        assert log_size(client) == before
        within = s.record("grant", issued_at=now - timedelta(seconds=299))
        assert client.post("/v1/consents", json=within).status_code == 201


def test_eligibility_needs_the_bearer_token(service: InProcessService) -> None:
    with service.client() as client:
        body = {"purpose": "model-training", "device_keys": []}
        assert client.post("/v1/eligibility", json=body).status_code == 401
        wrong = client.post("/v1/eligibility", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert "bearer token" in wrong.json()["detail"]


def test_proof_endpoints_agree_with_checkpoints(service: InProcessService) -> None:
    signer = Signer()
    with service.client() as client:
        first = client.post("/v1/consents", json=signer.record("grant")).json()
        receipts = [
            client.post("/v1/consents", json=Signer().record("grant")).json() for _ in range(6)
        ]
        key = NoteVerifier(client.get("/v1/log/key").text)
        old = open_checkpoint(first["checkpoint"], key)
        new = open_checkpoint(client.get("/v1/log/checkpoint").text, key)
        proof = client.get(
            "/v1/log/proof/consistency", params={"old": old.size, "new": new.size}
        ).json()
        verify_consistency(
            old_size=old.size,
            new_size=new.size,
            old_root=old.root_hash,
            new_root=new.root_hash,
            proof=[b64(p) for p in proof["proof"]],
        )
        inclusion = client.get(
            "/v1/log/proof/inclusion", params={"index": receipts[2]["index"], "size": new.size}
        ).json()
        verify_inclusion(
            index=inclusion["index"],
            size=new.size,
            leaf_hash=b64(inclusion["leaf_hash"]),
            proof=[b64(p) for p in inclusion["audit_path"]],
            root=new.root_hash,
        )
        assert inclusion["leaf_hash"] == receipts[2]["leaf_hash"]
        for params in ({"index": 0, "size": new.size + 1}, {"index": new.size, "size": new.size}):
            response = client.get("/v1/log/proof/inclusion", params=params)
            assert response.status_code == 422 and "size" in response.json()["detail"]
        assert (
            client.get("/v1/log/proof/consistency", params={"old": 5, "new": 2}).status_code == 422
        )
        assert (
            client.get("/v1/log/entries", params={"start": 0, "end": new.size + 1}).status_code
            == 422
        )


Body = dict[str, Any] | bytes


def _tampered(s: Signer, now: datetime) -> Body:
    record = s.record("grant", issued_at=now)
    record["statement"]["purpose"] = "population-analytics"  # signature no longer matches
    return record


def _signed_by_another_key(s: Signer, now: datetime) -> Body:
    record = s.record("grant", issued_at=now)
    record["statement"]["device_key"] = Signer().device_key
    return record


def _bad_records() -> list[tuple[str, Callable[[Signer, datetime], Body], int, str]]:
    """(case, body made at test time from a signer and the service's now, status, words)."""
    return [
        ("not json", lambda s, now: b'{"statement": ', 400, "not valid JSON"),
        ("not an object", lambda s, now: b"[1, 2]", 400, "JSON object"),
        (
            "duplicate keys",
            lambda s, now: b'{"signature": "a", "signature": "b"}',
            400,
            "duplicate",
        ),
        (
            "unknown statement field",
            lambda s, now: s.record("grant", issued_at=now, color="blue"),
            422,
            "statement.color",
        ),
        (
            "unknown record field",
            lambda s, now: s.record("grant", issued_at=now) | {"comment": "hi"},
            422,
            "comment",
        ),
        (
            "missing field",
            lambda s, now: s.sign(
                {k: v for k, v in s.statement(issued_at=now).items() if k != "nonce"}
            ),
            422,
            "nonce",
        ),
        (
            "unknown purpose",
            lambda s, now: s.record("grant", "advertising", issued_at=now),
            422,
            "unknown purpose",
        ),
        ("unknown action", lambda s, now: s.record("maybe", issued_at=now), 422, "action"),
        ("version 2", lambda s, now: s.record("grant", issued_at=now, v=2), 422, "v"),
        (
            "version true",
            lambda s, now: s.record("grant", issued_at=now, v=True),
            422,
            "integer 1",
        ),
        (
            "unknown policy",
            lambda s, now: s.record("grant", issued_at=now, policy_version="9"),
            422,
            "policy_version",
        ),
        (
            "bad notice hash",
            lambda s, now: s.record("grant", issued_at=now, notice_sha256="abc"),
            422,
            "notice_sha256",
        ),
        (
            "padded device key",
            lambda s, now: s.record("grant", issued_at=now, device_key=s.device_key + "="),
            422,
            "device_key",
        ),
        (
            "short nonce",
            lambda s, now: s.record("grant", issued_at=now, nonce="AAAA"),
            422,
            "nonce",
        ),
        (
            "local time",
            lambda s, now: s.record("grant", issued_at="2026-11-22T10:00:00+01:00"),
            422,
            "RFC 3339",
        ),
        ("bad signature", _tampered, 422, "signature does not verify"),
        ("signed by another key", _signed_by_another_key, 422, "signature does not verify"),
        (
            "clock skew",
            lambda s, now: s.record("grant", issued_at=now - timedelta(hours=2)),
            422,
            "clock",
        ),
        (
            "expiry in the past",
            lambda s, now: s.record(
                "grant",
                issued_at=now - timedelta(seconds=100),
                expires_at=rfc3339(now - timedelta(seconds=50)),
            ),
            422,
            "in the past",
        ),
        (
            "expiry on a withdrawal",
            lambda s, now: s.record(
                "withdraw", issued_at=now, expires_at=rfc3339(now + timedelta(seconds=60))
            ),
            422,
            "only allowed on a grant",
        ),
        (
            "null expiry",
            lambda s, now: s.record("grant", issued_at=now, expires_at=None),
            422,
            "omitted",
        ),
        (
            "oversized body",
            lambda s, now: s.record("grant", issued_at=now, policy_version="1" + " " * 20_000),
            413,
            "larger than",
        ),
    ]


@pytest.mark.parametrize(
    ("case", "make", "status", "words"),
    _bad_records(),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(
    service: InProcessService,
    case: str,
    make: Callable[[Signer, datetime], Body],
    status: int,
    words: str,
) -> None:
    body = make(Signer(), service.clock())
    with service.client() as client:
        before = log_size(client)
        if isinstance(body, bytes):
            response = client.post(
                "/v1/consents", content=body, headers={"Content-Type": "application/json"}
            )
        else:
            response = client.post("/v1/consents", json=body)
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
        assert log_size(client) == before
        assert client.get("/v1/log/entries", params={"start": 0, "end": before}).status_code == 200


def test_a_reused_nonce_is_refused_and_nothing_written(service: InProcessService) -> None:
    s = Signer()
    with service.client() as client:
        first = s.record("grant")
        assert client.post("/v1/consents", json=first).status_code == 201
        before = log_size(client)
        replay = client.post("/v1/consents", json=first)
        assert replay.status_code == 409 and "nonce" in replay.json()["detail"]
        again = s.record("withdraw", nonce=first["statement"]["nonce"])
        assert client.post("/v1/consents", json=again).status_code == 409
        assert log_size(client) == before
        assert (
            client.get(f"/v1/consents/{s.device_key}").json()["purposes"]["model-training"][
                "action"
            ]
            == "grant"
        )


def test_a_statement_older_than_the_latest_is_refused(service: InProcessService) -> None:
    s = Signer()
    now = service.clock()
    with service.client() as client:
        assert (
            client.post("/v1/consents", json=s.record("withdraw", issued_at=now)).status_code == 201
        )
        before = log_size(client)
        late = client.post(
            "/v1/consents", json=s.record("grant", issued_at=now - timedelta(seconds=30))
        )
        assert late.status_code == 409 and "later statement" in late.json()["detail"]
        assert log_size(client) == before


def test_wrong_content_type_and_chunked_oversize_are_refused(service: InProcessService) -> None:
    with service.client() as client:
        before = log_size(client)
        response = client.post(
            "/v1/consents", content=b"a=b", headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 415
        chunks = (b"x" * 4096 for _ in range(10))  # no Content-Length: streamed
        response = client.post(
            "/v1/consents", content=chunks, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert log_size(client) == before


def test_bad_eligibility_queries_are_refused(service: InProcessService) -> None:
    with service.client() as client:
        auth = {"Authorization": f"Bearer {service.token}"}
        r = client.post(
            "/v1/eligibility", json={"purpose": "nope", "device_keys": []}, headers=auth
        )
        assert r.status_code == 422 and "unknown purpose" in r.json()["detail"]
        r = client.post(
            "/v1/eligibility", json={"purpose": "model-training", "device_keys": "x"}, headers=auth
        )
        assert r.status_code == 422 and "device_keys" in r.json()["detail"]
        r = client.post(
            "/v1/eligibility",
            json={"purpose": "model-training", "device_keys": [], "x": 1},
            headers=auth,
        )
        assert r.status_code == 422


def test_the_openapi_schema_describes_the_protocol(service: InProcessService) -> None:
    with service.client() as client:
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/consents",
        "/v1/consents/{device_key}",
        "/v1/eligibility",
        "/v1/log/checkpoint",
        "/v1/log/key",
        "/v1/log/proof/inclusion",
        "/v1/log/proof/consistency",
        "/v1/log/entries",
    ):
        assert path in paths, path
    body = paths["/v1/consents"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"statement", "signature"}
