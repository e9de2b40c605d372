"""Slow-client benchmark: ``moodfed consent serve`` while N clients trickle their requests.

Run from the repository root::

    python benchmarks/slow_clients_bench.py                    # 2,000 slow clients
    python benchmarks/slow_clients_bench.py --connections 5000 --header-timeout 10

What it measures, against a real ``moodfed consent serve`` process on SQLite:

1. Latency of normal requests (``GET /v1/log/checkpoint`` and a signed
   ``POST /v1/consents``, one new connection each) with no attack, then while
   ``--connections`` slow clients hold connections open: a third send the start of a
   request head, a third a head and a body, a third a chunked body, and each then
   trickles one byte every ``--trickle`` seconds.
2. The server's resident memory (VmRSS) before, while all slow clients are open, and
   after they are cut off.
3. How each slow client ended (the server's 408, its close, or still open when the
   benchmark gave up) and how long the server held it.

The figures belong here; the test (tests/consent/test_slow_clients.py) asserts only
generous bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.consent.signing import Signer  # noqa: E402  (the repository on sys.path first)

MOODFED = [sys.executable, "-c", "from server.cli import main; main()"]
PREFIXES = {
    "head": b"POST /v1/consents HTTP/1.1\r\nHost: b\r\nX-Trickle: ",
    "body": b"POST /v1/consents HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
    b"Content-Length: 4000\r\n\r\n",
    "chunks": b"POST /v1/consents HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
}
TRICKLES = {"head": b"a", "body": b" ", "chunks": b"1\r\n \r\n"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def normal_latencies(url: str, count: int) -> list[float]:
    """Milliseconds per request, a new connection each (as a phone would)."""
    out = []
    for i in range(count):
        signer = Signer()
        started = time.perf_counter()
        with httpx.Client(base_url=url, timeout=30) as client:
            if i % 2:
                response = client.post("/v1/consents", json=signer.record("grant"))
            else:
                response = client.get("/v1/log/checkpoint")
        out.append((time.perf_counter() - started) * 1000)
        if response.status_code not in (200, 201):
            raise SystemExit(f"a normal request got {response.status_code}: {response.text}")
    return out


async def trickle(
    port: int, kind: str, period: float, give_up: float, opened: asyncio.Queue[None]
) -> tuple[str, str, float]:
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        opened.put_nowait(None)
        return kind, f"connect failed: {type(exc).__name__}", 0.0
    writer.write(PREFIXES[kind])
    started = loop.time()
    opened.put_nowait(None)
    bytes_ = itertools.cycle(TRICKLES[kind])
    try:
        while loop.time() - started < give_up:
            try:
                answer = await asyncio.wait_for(reader.read(65536), timeout=period)
            except TimeoutError:
                writer.write(bytes([next(bytes_)]))
                continue
            status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
            return kind, status, loop.time() - started
        return kind, "still open", loop.time() - started
    except ConnectionError:
        return kind, "reset", loop.time() - started
    finally:
        writer.close()


async def attack(args: argparse.Namespace, url: str, port: int, pid: int) -> dict[str, Any]:
    opened: asyncio.Queue[None] = asyncio.Queue()
    kinds = itertools.islice(itertools.cycle(PREFIXES), args.connections)
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(trickle(port, kind, args.trickle, args.give_up, opened))
        for kind in kinds
    ]
    for _ in range(args.connections):
        await opened.get()
    open_s = time.perf_counter() - started
    latencies = await asyncio.to_thread(normal_latencies, url, args.requests)
    rss_during = rss_mib(pid)
    held_open = sum(not task.done() for task in tasks)
    outcomes = await asyncio.gather(*tasks)
    ends: dict[str, int] = {}
    for _, status, _ in outcomes:
        ends[status] = ends.get(status, 0) + 1
    held = {kind: round(max(s for k, _, s in outcomes if k == kind), 1) for kind in PREFIXES}
    return {
        "open_s": round(open_s, 2),
        "still_open_when_measured": held_open,
        "latency_ms": summary(latencies),
        "rss_during_mib": round(rss_during, 1),
        "ends": ends,
        "longest_held_s": held,
    }


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": round(ordered[-1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--trickle", type=float, default=2.0, help="seconds between bytes")
    parser.add_argument("--requests", type=int, default=40, help="normal requests per phase")
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--body-timeout", type=float, default=20.0)
    parser.add_argument("--max-connections", type=int, default=4096)
    parser.add_argument("--give-up", type=float, default=120.0, help="per slow client")
    parser.add_argument("--port", type=int, default=18_790)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="slow-clients-bench-") as scratch:
        env = {
            **os.environ,
            "MOODFED_DATA_DIR": scratch,
            "MOODFED_ELIGIBILITY_TOKEN": "bench",
            "MOODFED_HEADER_TIMEOUT_SECONDS": str(args.header_timeout),
            "MOODFED_BODY_TIMEOUT_SECONDS": str(args.body_timeout),
            "MOODFED_MAX_CONNECTIONS": str(args.max_connections),
        }
        log_path = Path(scratch) / "serve.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*MOODFED, "consent", "serve", "--port", str(args.port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        url = f"http://127.0.0.1:{args.port}"
        try:
            with httpx.Client(transport=httpx.HTTPTransport(retries=30), timeout=30) as c:
                c.get(f"{url}/healthz").raise_for_status()
            normal_latencies(url, 5)  # warm up
            result: dict[str, Any] = {
                "benchmark": "moodfed.consent.slow_clients",
                "connections": args.connections,
                "trickle_s": args.trickle,
                "header_timeout_s": args.header_timeout,
                "body_timeout_s": args.body_timeout,
                "rss_before_mib": round(rss_mib(process.pid), 1),
                "quiet_latency_ms": summary(normal_latencies(url, args.requests)),
            }
            result["under_attack"] = asyncio.run(attack(args, url, args.port, process.pid))
            result["rss_after_mib"] = round(rss_mib(process.pid), 1)
            result["after_latency_ms"] = summary(normal_latencies(url, args.requests))
            text = log_path.read_text(errors="replace")
            result["log_lines"] = text.count("\n")
            result["tracebacks"] = text.count("Traceback")
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
