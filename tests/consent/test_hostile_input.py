"""Careless and hostile input to the consent service (issue 10, items 3-5 and 8), over HTTP.

Every refusal is a JSON 4xx whose ``detail`` says what was wrong, and the log does not
grow. The service runs in-process on each backend with a clock the tests move.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from consent import ConsentSettings
from tests.consent.conftest import InProcessService, start_in_process
from tests.consent.signing import Signer

JSON = {"Content-Type": "application/json"}


def log_size(client: httpx.Client) -> int:
    return int(client.get("/v1/log/checkpoint").text.split("\n")[1])


def auth(service: InProcessService) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.token}", **JSON}


def eligible(client: httpx.Client, service: InProcessService, keys: list[str]) -> list[str]:
    response = client.post(
        "/v1/eligibility",
        json={"purpose": "model-training", "device_keys": keys},
        headers=auth(service),
    )
    assert response.status_code == 200, response.text
    result: list[str] = response.json()["eligible"]
    return result


def assert_refused(response: httpx.Response, status: int, words: str) -> None:
    """A JSON refusal with the expected status whose detail names the problem."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert words in response.json()["detail"], response.text


# -- JSON the parser must not choke on (item 3) -----------------------------------------

NESTED_ARRAYS = b"[" * 4000
NESTED_OBJECTS = b'{"a":' * 1300
HUGE_INTEGER = b'{"statement": {"v": ' + b"7" * 5000 + b'}, "signature": "x"}'


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (NESTED_ARRAYS, "nests deeper than"),
        (NESTED_OBJECTS, "nests deeper than"),
        (HUGE_INTEGER, "5000 digits"),
        (b"[1e" + b"9" * 400 + b"]", "characters"),
    ],
    ids=["4000 [", "1300 {a:", "5000-digit integer", "400-digit exponent"],
)
def test_pathological_json_is_a_json_400_on_consents(
    service: InProcessService, body: bytes, words: str
) -> None:
    assert len(body) < 8192
    with service.client() as client:
        before = log_size(client)
        assert_refused(client.post("/v1/consents", content=body, headers=JSON), 400, words)
        assert log_size(client) == before


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (NESTED_ARRAYS, "nests deeper than"),
        (NESTED_OBJECTS, "nests deeper than"),
        (b'{"purpose": "model-training", "device_keys": [' + b"7" * 5000 + b"]}", "5000"),
    ],
    ids=["4000 [", "1300 {a:", "5000-digit integer"],
)
def test_pathological_json_is_a_json_400_on_eligibility(
    service: InProcessService, body: bytes, words: str
) -> None:
    with service.client() as client:
        response = client.post("/v1/eligibility", content=body, headers=auth(service))
    assert_refused(response, 400, words)


# -- device keys, in the path and in queries (item 8) -----------------------------------


@pytest.mark.parametrize(
    "path_key",
    ["a" * 10_000, "abc%00def", "abc%0Adef", "%0D%0Ainjected", "short", "A" * 43 + "%20"],
    ids=["10000 chars", "NUL", "newline", "CRLF", "short", "trailing space"],
)
def test_a_path_that_is_not_a_device_key_is_refused(
    service: InProcessService, path_key: str
) -> None:
    with service.client() as client:
        response = client.get(f"/v1/consents/{path_key}")
    assert_refused(response, 422, "device_key must be an Ed25519 public key")
    assert len(response.text) < 400  # the refusal quotes the key shortened


def test_a_real_device_key_still_reads_its_state(service: InProcessService) -> None:
    signer = Signer()
    with service.client() as client:
        assert client.post("/v1/consents", json=signer.record("grant")).status_code == 201
        state = client.get(f"/v1/consents/{signer.device_key}")
    assert state.status_code == 200
    assert state.json()["purposes"]["model-training"]["action"] == "grant"


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("x" * 200, "device_keys[1] must be an Ed25519 public key"),
        ("x" * 200, "200 characters"),
        ("A" * 42 + "B", "device_keys[1] must be"),  # 43 characters, stray bits set
        ("key\x00" * 3, "\\x00"),
        (7, "device_keys.1: Input should be a valid string"),
    ],
    ids=["long", "long, shortened", "non-canonical", "NUL", "number"],
)
def test_an_eligibility_entry_that_is_not_a_key_is_refused_naming_it(
    service: InProcessService, entry: Any, words: str
) -> None:
    good = Signer().device_key
    with service.client() as client:
        response = client.post(
            "/v1/eligibility",
            json={"purpose": "model-training", "device_keys": [good, entry]},
            headers=auth(service),
        )
    assert_refused(response, 422, words)


def test_a_4_mb_eligibility_entry_is_refused_before_the_body_is_read(
    service: InProcessService,
) -> None:
    """The answer comes while the client still holds most of the body back."""
    body = b'{"purpose": "model-training", "device_keys": ["' + b"k" * 4_000_000 + b'"]}'
    head = (
        f"POST /v1/eligibility HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {service.token}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body[:131_072])  # 3% of the body; the rest is never sent
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # waits for the answer (socket timeout: 30 s)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"refused before the rest was read" in rest


def test_a_query_of_real_keys_passes_the_key_checks(service: InProcessService) -> None:
    signer = Signer()
    keys = [Signer().device_key for _ in range(50)] + [signer.device_key]
    with service.client() as client:
        assert client.post("/v1/consents", json=signer.record("grant")).status_code == 201
        assert eligible(client, service, keys) == [signer.device_key]


# -- media types and the schema (item 8) ------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["Application/JSON", "APPLICATION/json; charset=UTF-8", "application/json;charset=utf-8"],
)
def test_the_json_media_type_is_case_insensitive(
    service: InProcessService, content_type: str
) -> None:
    import rfc8785

    record = Signer().record("grant")
    with service.client() as client:
        response = client.post(
            "/v1/consents", content=rfc8785.dumps(record), headers={"Content-Type": content_type}
        )
    assert response.status_code == 201, response.text


def test_another_media_type_is_still_refused_by_name(service: InProcessService) -> None:
    with service.client() as client:
        before = log_size(client)
        response = client.post(
            "/v1/consents", content=b"{}", headers={"Content-Type": "Text/Plain"}
        )
        assert_refused(response, 415, "not text/plain")
        assert log_size(client) == before


def _refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from _refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for position, value in enumerate(node):
            yield from _refs(value, f"{where}/{position}")


def test_every_ref_of_the_openapi_document_resolves(service: InProcessService) -> None:
    with service.client() as client:
        document = client.get("/openapi.json").json()
    base = "urn:moodfed:openapi"
    resolver = (
        Registry()
        .with_resource(base, Resource.from_contents(document, default_specification=DRAFT202012))
        .resolver(base_uri=base)
    )
    refs = list(_refs(document))
    assert refs, "the document has references (the response models)"
    for where, ref in refs:
        resolved = resolver.lookup(ref).contents  # raises Unresolvable
        assert isinstance(resolved, dict) and resolved, f"{where}: {ref}"
    body = document["paths"]["/v1/consents"]["post"]["requestBody"]["content"]
    statement = body["application/json"]["schema"]["properties"]["statement"]
    assert "device_key" in statement["properties"]  # inlined, not pointing into the void


# -- time: future-dated statements and withdrawals (items 5 and 8) ----------------------


def test_a_statement_from_the_future_beyond_the_margin_is_refused(
    service: InProcessService,
) -> None:
    signer, now = Signer(), service.clock()
    with service.client() as client:
        before = log_size(client)
        for ahead in (6, 250):
            response = client.post(
                "/v1/consents",
                json=signer.record("grant", issued_at=now + timedelta(seconds=ahead)),
            )
            assert_refused(response, 422, f"issued_at is {ahead} s from the service's clock")
            assert "in the future" in response.json()["detail"]
        assert log_size(client) == before
        within = signer.record("grant", issued_at=now + timedelta(seconds=5))
        assert client.post("/v1/consents", json=within).status_code == 201


def test_the_issue_scenario_a_grant_250_s_ahead_cannot_block_the_withdrawal(
    service: InProcessService,
) -> None:
    """Issue 10 item 5, step by step: before the fix the grant was accepted (201), the
    withdrawal signed at the right time afterwards got 409, and eligibility still listed
    the device."""
    signer, now = Signer(), service.clock()
    with service.client() as client:
        ahead = signer.record("grant", issued_at=now + timedelta(seconds=250))
        assert_refused(client.post("/v1/consents", json=ahead), 422, "in the future")
        on_time = signer.record("grant", issued_at=now)
        assert client.post("/v1/consents", json=on_time).status_code == 201
        service.clock.advance(10)
        withdrawal = signer.record("withdraw", issued_at=service.clock())
        assert client.post("/v1/consents", json=withdrawal).status_code == 201
        assert eligible(client, service, [signer.device_key]) == []


def test_a_withdrawal_is_accepted_after_a_grant_dated_at_the_margin(
    service: InProcessService,
) -> None:
    signer, now = Signer(), service.clock()
    with service.client() as client:
        grant = signer.record("grant", issued_at=now + timedelta(seconds=5))
        assert client.post("/v1/consents", json=grant).status_code == 201
        service.clock.advance(1)  # the withdrawal is signed 4 s before the grant's date
        withdrawal = signer.record("withdraw", issued_at=service.clock())
        assert client.post("/v1/consents", json=withdrawal).status_code == 201, "refused"
        assert eligible(client, service, [signer.device_key]) == []
        state = client.get(f"/v1/consents/{signer.device_key}").json()
        assert state["purposes"]["model-training"]["action"] == "withdraw"


def test_a_statement_older_than_when_the_latest_was_logged_is_still_stale(
    service: InProcessService,
) -> None:
    """The cap ranks a future-dated grant at its log time, not lower: older is refused."""
    signer, now = Signer(), service.clock()
    with service.client() as client:
        grant = signer.record("grant", issued_at=now + timedelta(seconds=5))
        assert client.post("/v1/consents", json=grant).status_code == 201
        before = log_size(client)
        old = signer.record("withdraw", issued_at=now - timedelta(seconds=1))
        assert_refused(client.post("/v1/consents", json=old), 409, "later statement")
        assert log_size(client) == before


def test_a_withdrawal_beats_a_future_grant_stored_before_the_fix(
    service: InProcessService,
) -> None:
    """A row written by the old code ranks the grant at its (future) date: read capped."""
    signer, now = Signer(), service.clock()
    with service.client() as client:
        grant = signer.record("grant", issued_at=now)
        assert client.post("/v1/consents", json=grant).status_code == 201
        engine = sa.create_engine(service.database_url)
        with engine.begin() as connection:  # as the old code stored a grant 250 s ahead
            connection.execute(
                sa.text(
                    "UPDATE consent_states SET issued_epoch = issued_epoch + 250 "
                    "WHERE device_key = :key"
                ),
                {"key": signer.device_key},
            )
        engine.dispose()
        service.clock.advance(2)
        withdrawal = signer.record("withdraw", issued_at=service.clock())
        assert client.post("/v1/consents", json=withdrawal).status_code == 201
        assert eligible(client, service, [signer.device_key]) == []


@pytest.fixture
def lenient_service(database_url: str, tmp_path: Path) -> Iterator[InProcessService]:
    """A service whose operator allows 300 s into the future (the old window)."""
    settings = ConsentSettings(
        data_dir=tmp_path,
        database_url=database_url,
        eligibility_token=SecretStr("t"),
        future_skew_seconds=300,
    )
    with ExitStack() as stack:
        yield start_in_process(settings, stack)


def test_a_withdrawal_signed_on_time_beats_a_grant_250_s_ahead(
    lenient_service: InProcessService,
) -> None:
    """Even where the operator lets a grant 250 s ahead in, it cannot out-rank the
    withdrawal its device signs afterwards (issue 10 item 5, with the old window)."""
    service, signer = lenient_service, Signer()
    now = service.clock()
    with service.client() as client:
        ahead = signer.record("grant", issued_at=now + timedelta(seconds=250))
        assert client.post("/v1/consents", json=ahead).status_code == 201
        assert eligible(client, service, [signer.device_key]) == [signer.device_key]
        service.clock.advance(3)
        withdrawal = signer.record("withdraw", issued_at=service.clock())
        response = client.post("/v1/consents", json=withdrawal)
        assert response.status_code == 201, response.text
        assert eligible(client, service, [signer.device_key]) == []
        service.clock.advance(300)  # past the grant's date: still withdrawn
        assert eligible(client, service, [signer.device_key]) == []


# -- a database that fails (item 4) -----------------------------------------------------


@pytest.fixture
def broken_service(database_url: str, tmp_path: Path) -> Iterator[InProcessService]:
    """A service whose database loses its tables after startup."""
    settings = ConsentSettings(
        data_dir=tmp_path, database_url=database_url, eligibility_token=SecretStr("t")
    )
    with ExitStack() as stack:
        service = start_in_process(settings, stack)
        engine = sa.create_engine(database_url)
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE log_head"))
            connection.execute(sa.text("DROP TABLE consent_states"))
        engine.dispose()
        yield service


def test_a_database_failure_is_a_generic_503_and_the_detail_goes_to_the_log(
    broken_service: InProcessService, caplog: pytest.LogCaptureFixture
) -> None:
    service, signer = broken_service, Signer()
    caplog.set_level(logging.ERROR, logger="moodfed.consent")
    with service.client() as client:
        answers = [
            client.post("/v1/consents", json=signer.record("grant")),
            client.get("/v1/log/checkpoint"),
            client.get(f"/v1/consents/{signer.device_key}"),
            client.post(
                "/v1/eligibility",
                json={"purpose": "model-training", "device_keys": [signer.device_key]},
                headers=auth(service),
            ),
        ]
    for response in answers:
        assert_refused(response, 503, "database is unavailable; retry later")
        text = response.text.lower()
        for leak in ("sql", "select", "insert", "sqlalche.me", "log_head", "consent_states"):
            assert leak not in text, response.text
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "moodfed.consent")
    assert "log_head" in logged or "consent_states" in logged  # the operator's detail
    assert all("\n" not in r.getMessage() for r in caplog.records)  # one line each
