"""Slow, oversized and careless clients against ``moodfed consent serve`` (issue 10, item 2).

The production recipe is the command itself: uvicorn with the service's connection
guard (``consent/api/server.py``). Each test starts it in a subprocess on SQLite (the
limits are the HTTP layer's, the same on every backend) and reads its log. Speed
figures belong to ``benchmarks/slow_clients_bench.py``; the bounds here are generous.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.consent.serving import TOKEN, Service, consent_serve
from tests.consent.signing import Signer

SLOW = 2000  # connections trickling one byte every TRICKLE_S
TRICKLE_S = 2.0
HEAD_TIMEOUT_S = 10  # the default
BODY_TIMEOUT_S = 12
RSS_BOUND = 200 * 2**20  # generous: 2,000 held connections cost ~30 MiB here

JSON_HEAD = b"Content-Type: application/json\r\n"
PREFIXES = {
    "head": b"POST /v1/consents HTTP/1.1\r\nHost: test\r\nX-Trickle: ",
    "body": b"POST /v1/consents HTTP/1.1\r\nHost: test\r\n"
    + JSON_HEAD
    + b"Content-Length: 4000\r\n\r\n",
    "chunks": b"POST /v1/consents HTTP/1.1\r\nHost: test\r\n"
    + JSON_HEAD
    + b"Transfer-Encoding: chunked\r\n\r\n",
}
TRICKLES = {"head": b"a", "body": b" ", "chunks": b"1\r\n \r\n"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "MOODFED_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT_S),
        "MOODFED_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_S),
        "MOODFED_AUTH_LOG_WINDOW_SECONDS": "2",
    }
    with consent_serve(tmp_path_factory.mktemp("slow"), env=env) as running:
        yield running


@dataclass
class Outcome:
    kind: str
    seconds: float  # from the connection's first bytes to the server's answer or close
    answer: bytes


async def _trickle(
    host: str, port: int, kind: str, connected: asyncio.Queue[None], give_up: float
) -> Outcome:
    """One slow client: the start of a request, then a byte every TRICKLE_S until the
    server answers or closes (the read is the event waited on)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(PREFIXES[kind])
    started = loop.time()
    connected.put_nowait(None)
    trickle = itertools.cycle(TRICKLES[kind])
    try:
        while loop.time() - started < give_up:
            try:
                answer = await asyncio.wait_for(reader.read(65536), timeout=TRICKLE_S)
            except TimeoutError:
                writer.write(bytes([next(trickle)]))
                continue
            return Outcome(kind, loop.time() - started, answer)
    except ConnectionError:
        return Outcome(kind, loop.time() - started, b"")
    finally:
        writer.close()
    return Outcome(kind, float("inf"), b"")


def _normal_requests(service: Service) -> list[float]:
    """A read, an append and a state lookup, each of which must answer within 1 s."""
    signer, seconds = Signer(), []
    with httpx.Client(base_url=service.url, timeout=1.0) as client:  # ReadTimeout fails it
        for call in (
            lambda: client.get("/v1/log/checkpoint"),
            lambda: client.post("/v1/consents", json=signer.record("grant")),
            lambda: client.get(f"/v1/consents/{signer.device_key}"),
        ):
            started = time.perf_counter()
            response = call()
            seconds.append(time.perf_counter() - started)
            assert response.status_code in (200, 201), response.text
    return seconds


def test_2000_slow_clients_are_cut_off_while_normal_requests_answer(service: Service) -> None:
    rss_before = service.rss_bytes()

    async def attack() -> tuple[list[Outcome], list[float], int]:
        connected: asyncio.Queue[None] = asyncio.Queue()
        kinds = itertools.islice(itertools.cycle(PREFIXES), SLOW)
        tasks = [
            asyncio.create_task(_trickle("127.0.0.1", service.port, kind, connected, 120))
            for kind in kinds
        ]
        for _ in range(SLOW):
            await connected.get()
        # All 2,000 are open and trickling: the service must still answer others.
        latencies = await asyncio.to_thread(_normal_requests, service)
        rss_during = service.rss_bytes()
        assert not any(task.done() for task in tasks), "a slow client was cut off too early"
        return list(await asyncio.gather(*tasks)), latencies, rss_during

    outcomes, latencies, rss_during = asyncio.run(attack())

    assert max(latencies) < 1.0, latencies
    assert rss_during - rss_before < RSS_BOUND, (rss_before, rss_during)
    for outcome in outcomes:
        status = outcome.answer.split(b"\r\n", 1)[0]
        assert status == b"HTTP/1.1 408 Request Timeout", (outcome.kind, outcome.answer[:200])
        body = json.loads(outcome.answer.split(b"\r\n\r\n", 1)[1])
        limit = HEAD_TIMEOUT_S if outcome.kind == "head" else BODY_TIMEOUT_S
        assert f"within {limit} s" in body["detail"]
        assert outcome.seconds < limit + 10, outcome  # the sweep runs every 0.5 s
    assert service.rss_bytes() - rss_before < RSS_BOUND
    # Each cut-off logged, but not 2,000 times: the first few, then a count.
    cut = service.log.matching(r"moodfed.consent.connections: .* 408, closed")
    assert 1 <= len(cut) <= 20, len(cut)
    assert not service.log.matching("Traceback|Exception in ASGI")
    _normal_requests(service)


def _answer(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """Read one response (the server closes after a refusal); its status and JSON body."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), data[:300]
    detail: dict[str, str] = json.loads(body)
    return status, detail


def test_an_oversized_request_head_is_refused_whole_or_trickled(service: Service) -> None:
    head = b"GET /v1/log/checkpoint HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(head + b"\r\n\r\n")
        status, detail = _answer(sock)
    assert status == 431 and "larger than 16384 bytes" in detail["detail"]
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        for start in range(0, 17_000, 1000):  # never finished: refused on the way
            sock.sendall(head[start : start + 1000])
        status, detail = _answer(sock)
    assert status == 431


def test_a_request_that_is_not_http_gets_a_json_400(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n")
        status, detail = _answer(sock)
    assert status == 400 and "not valid HTTP/1.1" in detail["detail"]


def test_a_client_leaving_mid_body_is_one_log_line_not_a_traceback(service: Service) -> None:
    before = len(service.log.matching(r'"POST /v1/consents" 499'))
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/consents HTTP/1.1\r\nHost: t\r\n"
                + JSON_HEAD
                + b'Content-Length: 500\r\n\r\n{"statement": '
            )
    lines = service.log.wait_for(r'"POST /v1/consents" 499', count=before + 50)
    assert len(lines) == before + 50
    assert not service.log.matching("Traceback|Exception in ASGI|ClientDisconnect")


def test_the_access_log_has_one_line_per_request_with_escaped_paths(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        assert client.get("/v1/log/key").status_code == 200
        assert client.get("/v1/consents/forged%0AINFO%20admin").status_code == 422
    service.log.wait_for(r'"GET /v1/log/key" 200 [\d.]+ms')
    (line,) = service.log.wait_for(r'"GET /v1/consents/forged')
    assert "forged\\x0aINFO admin" in line and " 422 " in line
    assert not service.log.matching(r"^INFO admin")


def test_2400_refused_tokens_are_logged_rate_limited_and_counted(service: Service) -> None:
    pattern = r'"POST /v1/eligibility" 401|(\d+) more requests refused for a missing or wrong'
    before = service.log.matching(pattern)
    body = {"purpose": "model-training", "device_keys": []}
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for guess in range(2400):
            headers = {"Authorization": f"Bearer guess-{guess}"}
            assert client.post("/v1/eligibility", json=body, headers=headers).status_code == 401
        good = client.post(
            "/v1/eligibility", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert good.status_code == 200

    def counted() -> int:
        lines = service.log.matching(pattern)[len(before) :]
        single = sum(1 for line in lines if " 401 " in line)
        summed = sum(int(m.group(1)) for line in lines if (m := re.search(r"(\d+) more", line)))
        return single + summed

    # The count of the last window is written when it closes (2 s here): wait for it.
    deadline = time.monotonic() + 60
    while counted() < 2400 and time.monotonic() < deadline:
        service.log.wait_for(pattern, count=len(service.log.matching(pattern)) + 1, timeout=30)
    lines = service.log.matching(pattern)[len(before) :]
    assert counted() == 2400
    assert 2 <= len(lines) < 150, len(lines)  # a trace of it, not 2,400 lines
    assert not any("guess-" in line for line in service.log.lines)  # tokens never logged


def test_connections_over_the_cap_get_a_json_503_at_once(tmp_path: Path) -> None:
    env = {"MOODFED_MAX_CONNECTIONS": "100"}
    with consent_serve(tmp_path, env=env) as capped:
        idle = [socket.create_connection(("127.0.0.1", capped.port)) for _ in range(100)]
        try:
            with socket.create_connection(("127.0.0.1", capped.port), timeout=30) as extra:
                status, detail = _answer(extra)  # answered before it sent anything
            assert status == 503 and "too many open connections" in detail["detail"]
        finally:
            for sock in idle:
                sock.close()
        # Closed connections free their places (once the server has read their EOFs,
        # which may come after the next connection is accepted: a few tries).
        statuses = []
        for _ in range(50):
            with httpx.Client(base_url=capped.url, timeout=30) as client:
                statuses.append(client.get("/v1/log/checkpoint").status_code)
            if statuses[-1] == 200:
                break
        assert statuses[-1] == 200 and set(statuses) <= {200, 503}, statuses
        assert capped.log.matching(r"503, closed: 100 connections open")
