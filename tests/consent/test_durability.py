"""Crashes and concurrency: acknowledged records survive kill -9; many writers, no gaps."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from consent.merkle import verify_consistency
from consent.note import NoteVerifier, open_checkpoint
from tests.conftest import ConsentServer
from tests.consent.signing import Signer


def all_entries(client: httpx.Client, size: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for start in range(0, size, 1000):
        page = client.get(
            "/v1/log/entries", params={"start": start, "end": min(size, start + 1000)}
        )
        assert page.status_code == 200, page.text
        entries += page.json()
    return entries


def test_acknowledged_records_survive_kill_9_during_a_burst(
    tmp_path: Path, database_url: str
) -> None:
    server = ConsentServer(data_dir=tmp_path, database_url=database_url).start()
    acknowledged: list[tuple[dict[str, Any], dict[str, Any]]] = []
    lock, stop, enough = threading.Lock(), threading.Event(), threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                record = Signer().record("grant")
                try:
                    response = client.post("/v1/consents", json=record)
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 201:
                    with lock:
                        acknowledged.append((record, response.json()))
                        if len(acknowledged) >= 300:
                            enough.set()

    threads = [threading.Thread(target=writer) for _ in range(16)]
    for thread in threads:
        thread.start()
    enough.wait(timeout=120)  # woken by the 300th acknowledgement
    server.kill()  # SIGKILL mid-burst: requests are in flight
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= 300

    server.start()
    try:
        with server.client() as client:
            verifier = NoteVerifier(client.get("/v1/log/key").text)
            latest = open_checkpoint(client.get("/v1/log/checkpoint").text, verifier)
            entries = all_entries(client, latest.size)
            for record, receipt in acknowledged:
                assert entries[receipt["index"]] == record
                seen = open_checkpoint(receipt["checkpoint"], verifier)
                proof = client.get(
                    "/v1/log/proof/consistency", params={"old": seen.size, "new": latest.size}
                ).json()["proof"]
                verify_consistency(
                    old_size=seen.size,
                    new_size=latest.size,
                    old_root=seen.root_hash,
                    new_root=latest.root_hash,
                    proof=[base64.b64decode(p) for p in proof],
                )
            # The restarted service appends after the surviving entries.
            receipt = client.post("/v1/consents", json=Signer().record("grant")).json()
            assert receipt["index"] == latest.size
    finally:
        server.stop()
    audit = server.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit passed" in audit.stderr


def test_four_worker_processes_append_consecutive_indices(
    tmp_path: Path, database_url: str
) -> None:
    server = ConsentServer(data_dir=tmp_path, database_url=database_url, workers=4).start()
    total = 640
    try:
        records = [Signer().record("grant") for _ in range(total)]

        def post(chunk: list[dict[str, Any]]) -> list[int]:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                out = []
                for record in chunk:
                    response = client.post("/v1/consents", json=record)
                    assert response.status_code == 201, response.text
                    out.append(response.json()["index"])
                return out

        with ThreadPoolExecutor(64) as pool:
            indices = [
                i for chunk in pool.map(post, [records[i::64] for i in range(64)]) for i in chunk
            ]
        assert sorted(indices) == list(range(total))
        with server.client() as client:
            entries = all_entries(client, total)
        assert sorted(e["statement"]["nonce"] for e in entries) == sorted(
            r["statement"]["nonce"] for r in records
        )
    finally:
        server.stop()
    audit = server.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr
