"""Consent ledger benchmark: HTTP appends, eligibility lookups, and the in-process ceiling.

Run from the repository root::

    python benchmarks/consent_bench.py                  # full run, SQLite and PostgreSQL
    python benchmarks/consent_bench.py --quick          # CI smoke run (< 60 s)
    python benchmarks/consent_bench.py --backend sqlite --workers 1 --seconds 20

What it measures, in one run:

1. Acknowledged, durable, signed appends per second over HTTP (``POST /v1/consents``)
   against a real ``moodfed consent serve`` process, with ``--clients`` concurrent
   keep-alive connections, plus p50/p99 latency. Every record is signed before the
   timed window with a fresh device key and nonce. The load generator is a separate
   process running one asyncio loop (uvloop when installed) over raw HTTP/1.1: it
   writes a pre-built request, reads the status line, the headers and
   ``Content-Length`` bytes, and sends the next one. Only 201s are counted; every
   other status and every connection error is reported separately. After the run the
   log size is checked against the number of 201s, and the last receipt of every
   connection is verified (checkpoint signature, inclusion proof, leaf hash).
2. ``POST /v1/eligibility`` for ``--query-keys`` keys (70% granted, 20% withdrawn,
   10% unknown) against a ledger of ``--devices`` devices, p50 over repetitions. The
   ledger is seeded in-process with ``Ledger.accept`` + ``Ledger.append_batch`` (the
   code path the service's group-commit batcher runs), not over HTTP. The answer
   is checked against the expected set.
3. The in-process ceiling on one core: canonicalize (RFC 8785) + Ed25519 verify +
   leaf hash per record (``Ledger.accept`` minus parsing, validation and I/O), and
   the ratio of the HTTP append rate to it.

The appends run on the seeded ledger (it already holds ``--devices`` devices), so the
database and the Merkle tree have a realistic size; PostgreSQL gets an ``ANALYZE`` after
the bulk seed (what autovacuum would do within a minute). Timestamps come from
``time.perf_counter``; percentiles, parsing and checks happen after each window.

The machine may be shared: every window records the CPU used by the service, its
database, the load generator and everything else (from /proc), flags a run as
``contended`` when other processes used more than 15% of a core, and reports the service's
CPU per append, which moves less than appends/s when the machine is busy. ``--py-spy DIR``
records a profile of the server during each append window (it perturbs the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import http.client
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import rfc8785

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Targets (issue 11), each a ratio or a bound checked in the same run.
TARGET_CEILING_SHARE = 0.5  # HTTP appends/s over the in-process ceiling on one core
TARGET_P99_MS = 50.0  # append latency with --clients 64
TARGET_POSTGRES_SHARE = 0.8  # PostgreSQL's in-process append_batch rate over SQLite's
TARGET_ELIGIBILITY_MS = 20.0  # p50 for --query-keys 10,000 among --devices 100,000
CONTENDED_PCT = 15.0  # CPU (% of one core) used by processes outside the benchmark
PURPOSE = "model-training"
NOTICE_SHA256 = hashlib.sha256(b"We learn from your mood diary without collecting it.").hexdigest()
TOKEN = "bench-eligibility-token"
DEFAULT_POSTGRES = os.environ.get(
    "MOODFED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MOODFED = [sys.executable, "-c", "from server.cli import main; main()"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- client-side signing (independent of the service's code: PyNaCl + rfc8785 only) ----


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sign_record(
    key: nacl.signing.SigningKey, action: str, issued_at: str, purpose: str = PURPOSE
) -> dict[str, Any]:
    statement = {
        "v": 1,
        "device_key": _b64url(bytes(key.verify_key)),
        "purpose": purpose,
        "action": action,
        "policy_version": "1",
        "notice_sha256": NOTICE_SHA256,
        "issued_at": issued_at,
        "nonce": _b64url(os.urandom(16)),
    }
    signature = key.sign(rfc8785.dumps(statement)).signature
    return {"statement": statement, "signature": _b64url(signature)}


def _body(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def http_request(body: bytes) -> bytes:
    head = (
        "POST /v1/consents HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _sign_append_chunk(n: int) -> list[bytes]:
    """``n`` complete HTTP requests, each a grant by a fresh device key."""
    issued = _now_rfc3339()
    out = []
    for _ in range(n):
        key = nacl.signing.SigningKey.generate()
        out.append(http_request(_body(sign_record(key, "grant", issued))))
    return out


# Seeding: sign and Ledger.accept in pool workers (both cores), append in the parent.
_SEED_LEDGER: Any = None


def _seed_worker_init(data_dir: str) -> None:
    global _SEED_LEDGER
    from consent.ledger import Ledger
    from consent.settings import ConsentSettings

    _SEED_LEDGER = Ledger(ConsentSettings(data_dir=Path(data_dir), eligibility_token=TOKEN))


def _seed_chunk(spec: tuple[int, int]) -> tuple[list[str], list[str], list[Any], list[Any]]:
    """Sign ``n`` devices' grants (and ``withdrawn`` of them a later withdrawal); accept all.

    Returns the granted and withdrawn device keys, then the accepted grants and the
    accepted withdrawals (``consent.ledger.AcceptedRecord``).
    """
    n, withdrawn = spec
    issued = _now_rfc3339()
    granted_keys, withdrawn_keys, grants, withdrawals = [], [], [], []
    for i in range(n):
        key = nacl.signing.SigningKey.generate()
        device = _b64url(bytes(key.verify_key))
        grants.append(_SEED_LEDGER.accept(_body(sign_record(key, "grant", issued))))
        if i < withdrawn:
            withdrawals.append(_SEED_LEDGER.accept(_body(sign_record(key, "withdraw", issued))))
            withdrawn_keys.append(device)
        else:
            granted_keys.append(device)
    return granted_keys, withdrawn_keys, grants, withdrawals


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


# -- process bookkeeping -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def machine_ticks() -> list[int]:
    """The machine's CPU ticks from /proc/stat: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as handle:
        return [int(x) for x in handle.readline().split()[1:9]]


def machine_usage(before: list[int], after: list[int]) -> dict[str, float]:
    """Busy and steal time between two samples, in % of one core (2 cores: up to 200%)."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta) or 1
    cores = os.cpu_count() or 1
    idle = delta[3] + delta[4]
    return {
        "busy_pct": round((total - idle) / total * 100 * cores, 1),
        "steal_pct": round(delta[7] / total * 100 * cores, 1),
        "iowait_pct": round(delta[4] / total * 100 * cores, 1),
    }


def process_snapshot() -> dict[int, tuple[float, str]]:
    """CPU seconds (utime + stime) and command line of every process on the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read(300).replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out[int(entry)] = ((int(fields[11]) + int(fields[12])) / tick, command)
    return out


_PG_AUX = ("walwriter", "checkpointer", "background writer", "autovacuum", "logical replication")


def attribute_cpu(
    before: dict[int, tuple[float, str]],
    after: dict[int, tuple[float, str]],
    span: float,
    *,
    server: set[int],
    loadgen: int,
    database: str | None,
    profiler: int | None = None,
) -> dict[str, Any]:
    """Split the window's CPU (% of one core) into server, database, loadgen and the rest."""
    groups = {
        "server": 0.0,
        "database": 0.0,
        "loadgen": 0.0,
        "bench": 0.0,
        "profiler": 0.0,
        "others": 0.0,
    }
    by_server_pid: dict[str, float] = {}
    others: dict[str, float] = {}
    for pid, (cpu, command) in after.items():
        used = (cpu - before.get(pid, (0.0, ""))[0]) / span * 100
        if used <= 0:
            continue
        if pid in server:
            group = "server"
            by_server_pid[str(pid)] = round(used, 1)
        elif pid == loadgen:
            group = "loadgen"
        elif pid == os.getpid():
            group = "bench"
        elif pid == profiler:
            group = "profiler"
        elif (
            command.startswith("postgres")
            and database is not None
            and (database in command or any(aux in command for aux in _PG_AUX))
        ):
            group = "database"
        else:
            group = "others"
            others[command[:60] or f"pid {pid}"] = others.get(command[:60], 0.0) + used
        groups[group] += used
    top = sorted(others.items(), key=lambda item: -item[1])[:3]
    return {
        **{f"{key}_cpu_pct": round(value, 1) for key, value in groups.items()},
        "server_cpu_pct_by_pid": by_server_pid,
        "others_top": {command: round(used, 1) for command, used in top},
    }


def wait_for_quiet(args: argparse.Namespace, threshold: float = CONTENDED_PCT) -> None:
    """Wait (up to ``--wait-quiet`` s) for a second in which the machine is idle.

    Called when every process of the benchmark is idle, so any CPU use is someone else's.
    After one wait that runs out, stop waiting: the machine is shared, and the figures
    say so (``contended``).
    """
    if not args.wait_quiet:
        return
    t0 = time.monotonic()
    while True:
        before = machine_ticks()
        time.sleep(1.0)
        busy = machine_usage(before, machine_ticks())["busy_pct"]
        waited = time.monotonic() - t0
        if busy <= threshold:
            return
        if waited >= args.wait_quiet:
            log(f"machine still busy ({busy}% of a core) after {waited:.0f} s: measuring anyway")
            log("the machine is shared: not waiting again in this run")
            args.wait_quiet = 0.0
            return
        if waited < 1.5:
            log(
                f"machine busy ({busy}% of a core in other processes): waiting up to "
                f"{args.wait_quiet:.0f} s"
            )


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process, in seconds (missing processes are left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


@dataclass
class Server:
    """``moodfed consent serve`` in its own process."""

    data_dir: Path
    database_url: str
    workers: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"serve-{self.port}.log"

    def start(self) -> Server:
        env = {
            **os.environ,
            "MOODFED_DATA_DIR": str(self.data_dir),
            "MOODFED_ELIGIBILITY_TOKEN": TOKEN,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
            ),
        }
        command = [
            *MOODFED,
            "consent",
            "serve",
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
            "--workers",
            str(self.workers),
        ]
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "ab"),  # noqa: SIM115
            cwd=self.data_dir,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"consent service exited:\n{self.log_path.read_text()}")
            try:
                status, _ = self.get("/healthz")
            except OSError:
                status = 0
            if status == 200 and len(self.pids()) >= 1 + (self.workers > 1) * self.workers:
                self._wait_idle(deadline)
                return self
            time.sleep(0.1)
        raise RuntimeError("consent service did not start within 90 s")

    def _wait_idle(self, deadline: float) -> None:
        """Wait until no server process uses CPU: every worker has finished its startup.

        With several workers the first one up answers /healthz while the others may still
        be loading; connections opened then would all land on the first.
        """
        before = cpu_seconds(self.pids())
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = cpu_seconds(self.pids())
            if now.keys() == before.keys() and all(now[pid] - before[pid] < 0.03 for pid in now):
                return
            before = now

    def pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid, *descendants(self.process.pid)]

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def log_size(self) -> int:
        status, note = self.get("/v1/log/checkpoint")
        if status != 200:
            raise RuntimeError(f"GET /v1/log/checkpoint answered {status}")
        return int(note.decode().split("\n", 2)[1])

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in self.pids()[::-1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


# -- the load generator (a separate process) --------------------------------------------


def _loadgen_main(
    conn: Any,
    port: int,
    requests: list[bytes],
    clients: int,
    warmup: float,
    seconds: float,
) -> None:
    # The parent's heap (the seed, the request pool) came along with fork: keep the
    # collector away from it, and off during the run (the loop allocates no cycles to speak
    # of), so no collection pause lands in a latency.
    gc.freeze()
    gc.disable()
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    result = asyncio.run(_loadgen(port, requests, clients, warmup, seconds))
    result["loop"] = loop_name
    conn.send(result)
    conn.close()


async def _loadgen(
    port: int,
    requests: list[bytes],
    clients: int,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    perf = time.perf_counter
    pool = iter(requests)
    sent_at: list[float] = []
    done_at: list[float] = []
    statuses: list[int] = []
    conn_errors: list[str] = []
    last_ok: list[tuple[bytes, bytes] | None] = [None] * clients
    state = {"exhausted": math.inf, "stop": math.inf}

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def client(slot: int, reader: Any, writer: Any) -> None:
        while True:
            if perf() >= state["stop"]:
                break
            request = next(pool, None)
            if request is None:
                state["exhausted"] = min(state["exhausted"], perf())
                break
            t0 = perf()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                at = head.lower().find(b"\r\ncontent-length:")
                if at >= 0:
                    length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
                body = await reader.readexactly(length) if length else b""
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                conn_errors.append(type(exc).__name__)
                writer.close()
                try:
                    reader, writer = await connect()
                except OSError as again:
                    conn_errors.append(type(again).__name__)
                    return
                continue
            t1 = perf()
            sent_at.append(t0)
            done_at.append(t1)
            statuses.append(status)
            if status == 201:
                last_ok[slot] = (request, body)
            elif b"connection: close" in head.lower():
                writer.close()
                reader, writer = await connect()
        writer.close()

    connections = [await connect() for _ in range(clients)]
    begin = perf()
    window_start = begin + warmup
    window_end = window_start + seconds
    state["stop"] = window_end
    usage: dict[str, Any] = {}

    async def sample() -> None:
        await asyncio.sleep(max(0.0, window_start - perf()))
        usage["machine0"] = machine_ticks()
        usage["t0"] = perf()
        usage["procs0"] = process_snapshot()
        await asyncio.sleep(max(0.0, window_end - perf()))
        usage["machine1"] = machine_ticks()
        usage["t1"] = perf()
        usage["procs1"] = process_snapshot()

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(client(i, r, w) for i, (r, w) in enumerate(connections)))
    drained = perf()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    return {
        "begin": begin,
        "window_start": window_start,
        "window_end": window_end,
        "drained": drained,
        "exhausted": state["exhausted"],
        "sent_at": sent_at,
        "done_at": done_at,
        "statuses": statuses,
        "conn_errors": conn_errors,
        "last_ok": [x for x in last_ok if x is not None],
        "usage_span": usage["t1"] - usage["t0"],
        "procs0": usage["procs0"],
        "procs1": usage["procs1"],
        "loadgen_pid": os.getpid(),
        "machine": machine_usage(usage["machine0"], usage["machine1"]),
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run_appends(
    server: Server,
    requests: list[bytes],
    args: argparse.Namespace,
    profiler: subprocess.Popen[bytes] | None = None,
) -> dict[str, Any]:
    size_before = server.log_size()
    parent, child = mp.get_context("fork").Pipe(duplex=False)
    process = mp.get_context("fork").Process(
        target=_loadgen_main,
        args=(child, server.port, requests, args.clients, args.warmup, args.seconds),
    )
    server_pids = set(server.pids())
    process.start()
    child.close()
    raw = parent.recv()
    process.join()
    # -- everything below is after the timed window --
    start = raw["window_start"]
    end = min(raw["window_end"], raw["exhausted"])
    in_window = [
        (t1 - t0, status)
        for t0, t1, status in zip(raw["sent_at"], raw["done_at"], raw["statuses"], strict=True)
        if start <= t1 <= end
    ]
    ok_latency = [lat for lat, status in in_window if status == 201]
    errors: dict[str, int] = {}
    for status in raw["statuses"]:
        if status != 201:
            errors[str(status)] = errors.get(str(status), 0) + 1
    for name in raw["conn_errors"]:
        errors[name] = errors.get(name, 0) + 1
    ok_total = sum(1 for status in raw["statuses"] if status == 201)
    size_after = server.log_size()
    database = None
    if not server.database_url.startswith("sqlite"):
        database = server.database_url.rsplit("/", 1)[1]
    cpu = attribute_cpu(
        raw["procs0"],
        raw["procs1"],
        raw["usage_span"] or 1.0,
        server=server_pids,
        loadgen=raw["loadgen_pid"],
        database=database,
        profiler=profiler.pid if profiler is not None else None,
    )
    checked = verify_receipts(server, raw["last_ok"])
    return {
        "workers": server.workers,
        "clients": args.clients,
        "window_s": round(end - start, 3),
        "pool_exhausted": raw["exhausted"] < raw["window_end"],
        "appends_per_s": round(len(ok_latency) / (end - start), 1),
        "p50_ms": round(percentile(ok_latency, 50) * 1e3, 2) if ok_latency else None,
        "p99_ms": round(percentile(ok_latency, 99) * 1e3, 2) if ok_latency else None,
        "max_ms": round(max(ok_latency) * 1e3, 2) if ok_latency else None,
        "ok_in_window": len(ok_latency),
        "ok_total": ok_total,
        "errors": errors,
        "log_growth": size_after - size_before,
        "durable_count_matches": size_after - size_before == ok_total,
        "receipts_verified": checked,
        **cpu,
        "loadgen_loop": raw["loop"],
        "machine": raw["machine"],
        "contended": cpu["others_cpu_pct"] > CONTENDED_PCT,
        # CPU the service (and its database) spent per acknowledged append: less sensitive
        # than appends/s to other work on a shared machine.
        "cpu_ms_per_append": round(
            (cpu["server_cpu_pct"] + cpu["database_cpu_pct"])
            / 100
            / max(len(ok_latency) / (end - start), 1e-9)
            * 1e3,
            3,
        ),
    }


def verify_receipts(server: Server, last_ok: list[tuple[bytes, bytes]]) -> str:
    """Check each connection's last receipt: signed checkpoint, inclusion proof, leaf hash."""
    from consent.merkle import hash_leaf, verify_inclusion
    from consent.note import NoteVerifier, open_checkpoint

    status, key = server.get("/v1/log/key")
    if status != 200:
        return f"no verifier key ({status})"
    verifier = NoteVerifier(key.decode())
    for request, body in last_ok:
        record = json.loads(request.split(b"\r\n\r\n", 1)[1])
        receipt = json.loads(body)
        checkpoint = open_checkpoint(receipt["checkpoint"], verifier)
        leaf_hash = hash_leaf(rfc8785.dumps(record))
        if base64.b64decode(receipt["leaf_hash"]) != leaf_hash:
            return "FAILED: leaf hash differs from the record sent"
        verify_inclusion(
            index=receipt["index"],
            size=checkpoint.size,
            leaf_hash=leaf_hash,
            proof=[base64.b64decode(h) for h in receipt["inclusion_proof"]],
            root=checkpoint.root_hash,
        )
    return f"{len(last_ok)}/{len(last_ok)} ok"


# -- eligibility over HTTP ------------------------------------------------------------------


@dataclass
class EligibilityQuery:
    keys: list[str]
    expected: list[str]
    body: bytes
    mix: dict[str, int]


def make_query(
    granted: list[str], withdrawn: list[str], n: int, rng: random.Random
) -> EligibilityQuery:
    n_granted, n_withdrawn = round(n * 0.7), round(n * 0.2)
    n_unknown = n - n_granted - n_withdrawn
    if n_granted > len(granted) or n_withdrawn > len(withdrawn):
        raise SystemExit(
            f"--query-keys {n} needs {n_granted} granted and {n_withdrawn} withdrawn devices; "
            f"the ledger has {len(granted)} and {len(withdrawn)}: raise --devices"
        )
    chosen_granted = rng.sample(granted, n_granted)
    unknown = [_b64url(rng.randbytes(32)) for _ in range(n_unknown)]
    keys = chosen_granted + rng.sample(withdrawn, n_withdrawn) + unknown
    rng.shuffle(keys)
    wanted = set(chosen_granted)
    body = json.dumps({"purpose": PURPOSE, "device_keys": keys}, separators=(",", ":")).encode()
    mix = {"granted": n_granted, "withdrawn": n_withdrawn, "unknown": n_unknown}
    return EligibilityQuery(keys, [k for k in keys if k in wanted], body, mix)


def run_eligibility(server: Server, query: EligibilityQuery, reps: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    perf = time.perf_counter
    timings, answers = [], []
    before, t_before = process_snapshot(), perf()
    try:
        for rep in range(reps + 2):  # two untimed warm-up queries
            t0 = perf()
            connection.request("POST", "/v1/eligibility", body=query.body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            t1 = perf()
            if rep >= 2:
                timings.append(t1 - t0)
                answers.append((response.status, payload))
    finally:
        connection.close()
    after, t_after = process_snapshot(), perf()
    database = None
    if not server.database_url.startswith("sqlite"):
        database = server.database_url.rsplit("/", 1)[1]
    cpu = attribute_cpu(
        before, after, t_after - t_before, server=set(server.pids()), loadgen=-1, database=database
    )
    statuses = sorted({status for status, _ in answers})
    correct = all(
        status == 200 and json.loads(payload)["eligible"] == query.expected
        for status, payload in answers
    )
    return {
        "keys": len(query.keys),
        "reps": reps,
        "p50_ms": round(statistics.median(timings) * 1e3, 2),
        "min_ms": round(min(timings) * 1e3, 2),
        "max_ms": round(max(timings) * 1e3, 2),
        "statuses": statuses,
        "correct": correct,
        "eligible": len(query.expected),
        "others_cpu_pct": cpu["others_cpu_pct"],
        "others_top": cpu["others_top"],
        "contended": cpu["others_cpu_pct"] > CONTENDED_PCT,
    }


# -- the in-process ceiling -------------------------------------------------------------


def measure_ceiling(sample_bodies: list[bytes], seconds: float) -> dict[str, Any]:
    """Records/s on one core of canonicalize + verify + leaf hash, and of full accept."""
    from consent.ledger import Ledger
    from consent.merkle import hash_leaf
    from consent.settings import ConsentSettings
    from consent.statement import (
        SignedRecord,
        canonical_record,
        canonical_statement,
        parse_json_strict,
        verify_record_signature,
    )
    from consent.store import migrate

    records = [SignedRecord.model_validate_json(body) for body in sample_bodies]
    leaves = [canonical_record(r) for r in records]
    perf = time.perf_counter

    def rates(tasks: dict[str, tuple[Any, list[Any], float]], reps: int = 5) -> dict[str, float]:
        """Per task, the median rate over ``reps`` slices; slices of all tasks interleave.

        Interleaving spreads any slowdown of a shared, noisy VM over every task alike.
        """
        for fn, items, _ in tasks.values():
            for item in items[:200]:  # warm caches
                fn(item)
        seen: dict[str, list[float]] = {name: [] for name in tasks}
        for _ in range(reps):
            for name, (fn, items, budget) in tasks.items():
                done, t0 = 0, perf()
                while perf() - t0 < budget / reps:
                    for item in items[:500]:
                        fn(item)
                    done += len(items[:500])
                seen[name].append(done / (perf() - t0))
        return {name: statistics.median(values) for name, values in seen.items()}

    def core(record: Any) -> None:
        verify_record_signature(record)
        hash_leaf(canonical_record(record))

    with tempfile.TemporaryDirectory(prefix="consent-bench-ceiling-") as scratch:
        settings = ConsentSettings(data_dir=Path(scratch), eligibility_token=TOKEN)
        migrate(settings.resolved_database_url)
        ledger = Ledger(settings)
        try:
            affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {min(affinity)})
            before, t_before = process_snapshot(), perf()
            try:
                result = rates(
                    {
                        "core_per_s": (core, records, seconds),
                        "accept_per_s": (ledger.accept, sample_bodies, seconds / 2),
                        "verify_per_s": (verify_record_signature, records, seconds / 4),
                        "canonical_statement_per_s": (canonical_statement, records, seconds / 4),
                        "canonical_record_per_s": (canonical_record, records, seconds / 4),
                        "hash_leaf_per_s": (hash_leaf, leaves, seconds / 4),
                        "parse_validate_per_s": (
                            lambda body: SignedRecord.model_validate(parse_json_strict(body)),
                            sample_bodies,
                            seconds / 4,
                        ),
                    }
                )
            finally:
                os.sched_setaffinity(0, affinity)
            cpu = attribute_cpu(
                before,
                process_snapshot(),
                perf() - t_before,
                server=set(),
                loadgen=-1,
                database=None,
            )
        finally:
            ledger.close()
    out: dict[str, Any] = {key: round(value, 1) for key, value in result.items()}
    out["others_cpu_pct"] = cpu["others_cpu_pct"]
    out["contended"] = cpu["others_cpu_pct"] > CONTENDED_PCT
    return out


# -- backends -----------------------------------------------------------------------------


def _postgres_admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=3
    )


@contextlib.contextmanager
def backend_database(backend: str, data_dir: Path, postgres_url: str) -> Any:
    if backend == "sqlite":
        yield (
            f"sqlite:///{data_dir / 'ledger.db'}",
            {
                "journal_mode": "WAL",
                "synchronous": "FULL",
            },
        )
        return
    name = f"moodfed_bench_{uuid.uuid4().hex[:12]}"
    with _postgres_admin(postgres_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        info = {
            key: admin.execute(f"SHOW {key}").fetchone()[0]
            for key in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        }
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name, info
    finally:
        with _postgres_admin(postgres_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_reachable(url: str) -> str | None:
    try:
        _postgres_admin(url).close()
    except Exception as exc:
        return str(exc).strip().splitlines()[0]
    return None


@dataclass
class Seed:
    granted: list[str]
    withdrawn: list[str]
    batches: list[list[Any]]
    records: int
    sign_accept_s: float


def prepare_seed(devices: int, withdrawn_share: float, batch: int, scratch: Path) -> Seed:
    """Sign every seed record and run ``Ledger.accept`` on it, on all cores (untimed)."""
    from consent.settings import ConsentSettings
    from consent.store import migrate

    migrate(ConsentSettings(data_dir=scratch, eligibility_token=TOKEN).resolved_database_url)
    chunk = 2000
    sizes = _chunks(devices, chunk)
    specs = [(n, round(n * withdrawn_share)) for n in sizes]
    t0 = time.perf_counter()
    granted, withdrawn, grants, withdrawals = [], [], [], []
    with mp.get_context("fork").Pool(
        os.cpu_count() or 1, initializer=_seed_worker_init, initargs=(str(scratch),)
    ) as pool:
        for g, w, ga, wa in pool.imap(_seed_chunk, specs):
            granted += g
            withdrawn += w
            grants += ga
            withdrawals += wa
    elapsed = time.perf_counter() - t0
    ordered = grants + withdrawals  # every grant before any withdrawal
    batches = [ordered[i : i + batch] for i in range(0, len(ordered), batch)]
    return Seed(granted, withdrawn, batches, len(ordered), elapsed)


def seed_ledger(
    url: str, data_dir: Path, seed: Seed, query: EligibilityQuery, reps: int
) -> dict[str, Any]:
    """Append the seed in-process (``Ledger.append_batch``) and time an in-process lookup."""
    from consent.ledger import Ledger, LedgerError
    from consent.settings import ConsentSettings
    from consent.store import migrate

    settings = ConsentSettings(data_dir=data_dir, database_url=url, eligibility_token=TOKEN)
    migrate(url)
    ledger = Ledger(settings)
    try:
        refused = 0
        t0 = time.perf_counter()
        for batch in seed.batches:
            results = ledger.append_batch(batch)
            refused += sum(isinstance(r, LedgerError) for r in results)
        elapsed = time.perf_counter() - t0
        if refused:
            raise RuntimeError(f"the ledger refused {refused} seed records")
        if not url.startswith("sqlite"):
            # What autovacuum does within a minute of a bulk load; without statistics the
            # planner's choices for the first minute are guesses.
            with ledger.writer.connect() as connection:
                connection.exec_driver_sql("ANALYZE")
                connection.commit()
        timings = []
        for rep in range(reps + 1):
            t = time.perf_counter()
            eligible = ledger.eligible(PURPOSE, query.keys)
            if rep:
                timings.append(time.perf_counter() - t)
        if eligible != query.expected:
            raise RuntimeError("in-process eligibility disagrees with the seed")
        size = ledger.size()
    finally:
        ledger.close()
    return {
        "records": seed.records,
        "log_size": size,
        "append_batch_per_s": round(seed.records / elapsed, 1),
        "append_batch_s": round(elapsed, 2),
        "eligible_inprocess_p50_ms": round(statistics.median(timings) * 1e3, 2),
    }


def run_backend(
    backend: str,
    args: argparse.Namespace,
    seed: Seed,
    query: EligibilityQuery,
) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "runs": []}
    with (
        tempfile.TemporaryDirectory(prefix=f"consent-bench-{backend}-") as scratch,
        backend_database(backend, Path(scratch), args.postgres_url) as (url, info),
    ):
        data_dir = Path(scratch)
        out["database"] = info
        log(f"{backend}: seeding {seed.records} records in-process (Ledger.append_batch)")
        out["seed"] = seed_ledger(url, data_dir, seed, query, args.eligibility_reps)
        log(
            f"{backend}: seeded at {out['seed']['append_batch_per_s']:.0f} records/s; "
            f"in-process eligible() p50 {out['seed']['eligible_inprocess_p50_ms']} ms"
        )
        for workers in args.workers:
            pool_size = math.ceil((args.warmup + args.seconds) * args.pool_rate) + args.clients
            t0 = time.perf_counter()
            with mp.get_context("fork").Pool(os.cpu_count() or 1) as pool:
                requests = [
                    r
                    for chunk in pool.map(_sign_append_chunk, _chunks(pool_size, 2000))
                    for r in chunk
                ]
            log(
                f"{backend} workers={workers}: pre-signed {len(requests)} records in "
                f"{time.perf_counter() - t0:.1f} s; starting `moodfed consent serve`"
            )
            server = Server(data_dir=data_dir, database_url=url, workers=workers).start()
            profiler = None
            try:
                wait_for_quiet(args)
                eligibility = run_eligibility(server, query, args.eligibility_reps)
                log(
                    f"{backend} workers={workers}: eligibility p50 {eligibility['p50_ms']} ms; "
                    f"appending with {args.clients} clients for {args.warmup}+{args.seconds} s"
                )
                wait_for_quiet(args)
                if args.py_spy:
                    profiler = start_py_spy(server, args, backend, workers)
                appends = run_appends(server, requests, args, profiler)
            finally:
                if profiler is not None:
                    profiler.wait(timeout=args.warmup + args.seconds + 60)
                server.stop()
            log(
                f"{backend} workers={workers}: {appends['appends_per_s']:.0f} appends/s, "
                f"p50 {appends['p50_ms']} ms, p99 {appends['p99_ms']} ms, "
                f"errors {appends['errors'] or 'none'}"
            )
            out["runs"].append({**appends, "eligibility": eligibility})
    return out


def start_py_spy(
    server: Server, args: argparse.Namespace, backend: str, workers: int
) -> subprocess.Popen[bytes]:
    """Sample the server during warm-up + window (this steals CPU: figures are perturbed)."""
    if shutil.which("py-spy") is None:
        raise SystemExit("--py-spy needs py-spy on PATH (pip install py-spy)")
    Path(args.py_spy).mkdir(parents=True, exist_ok=True)
    target = f"{args.py_spy}/{backend}-w{workers}"
    command = [
        "py-spy",
        "record",
        "--pid",
        str(server.process.pid if server.process else 0),
        "--subprocesses",
        "--duration",
        str(math.ceil(args.warmup + args.seconds)),
        "--rate",
        "100",
        *(["--gil"] if args.py_spy_gil else []),
        "--format",
        args.py_spy_format,
        "-o",
        f"{target}.{'svg' if args.py_spy_format == 'flamegraph' else 'txt'}",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- report ---------------------------------------------------------------------------------


def headline_run(runs: list[dict[str, Any]], workers: int) -> dict[str, Any] | None:
    return next((r for r in runs if r["workers"] == workers), runs[0] if runs else None)


def verdict(value: float | None, target: float, *, higher_is_better: bool) -> str:
    if value is None:
        return "[red]n/a[/]"
    ok = value >= target if higher_is_better else value <= target
    return "[green]meets[/]" if ok else "[red]misses[/]"


def print_report(result: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    ceiling = result["ceiling"]
    table = Table(title="moodfed consent ledger benchmark", show_lines=False)
    for name, justify in (
        ("backend", "left"),
        ("workers", "right"),
        ("metric", "left"),
        ("value", "right"),
        ("target", "right"),
        ("", "left"),
        ("notes", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for backend in result["backends"]:
        name = backend["backend"]
        if "skipped" in backend:
            table.add_row(name, "", "skipped", "", "", "", backend["skipped"])
            table.add_section()
            continue
        for run in backend["runs"]:
            w = str(run["workers"])
            star = " *" if run["workers"] == args.headline_workers else ""
            notes = (
                f"{run['ok_in_window']} x 201 in {run['window_s']} s; CPU % of one core: "
                f"server {run['server_cpu_pct']}, database {run['database_cpu_pct']}, "
                f"loadgen {run['loadgen_cpu_pct']}, other processes {run['others_cpu_pct']}, "
                f"machine {run['machine']['busy_pct']} of {100 * result['machine']['cpus']} "
                f"(steal {run['machine']['steal_pct']})"
            )
            if run["contended"]:
                top = ", ".join(f"{c} {u}%" for c, u in run["others_top"].items())
                notes += f"; [red]machine shared with other work: {top}[/]"
            if run["pool_exhausted"]:
                notes += "; [red]pre-signed pool ran out: window shortened[/]"
            share = run["appends_per_s"] / ceiling["core_per_s"]
            table.add_row(
                name,
                w + star,
                "appends/s (HTTP, 201 only) / ceiling",
                f"{run['appends_per_s']:,.0f} = {share:.1%}",
                f">= {TARGET_CEILING_SHARE:.0%} "
                f"({TARGET_CEILING_SHARE * ceiling['core_per_s']:,.0f}/s)",
                verdict(share, TARGET_CEILING_SHARE, higher_is_better=True),
                notes,
            )
            table.add_row(
                name,
                w + star,
                "append latency p50 / p99",
                f"{run['p50_ms']} / {run['p99_ms']} ms",
                f"p99 <= {TARGET_P99_MS:.0f} ms",
                verdict(run["p99_ms"], TARGET_P99_MS, higher_is_better=False),
                f"max {run['max_ms']} ms; service CPU per append {run['cpu_ms_per_append']} ms"
                + (" (server + PostgreSQL)" if name == "postgres" else ""),
            )
            errors = ", ".join(f"{k}: {v}" for k, v in run["errors"].items()) or "none"
            durable = "yes" if run["durable_count_matches"] else "[red]NO[/]"
            table.add_row(
                name,
                w + star,
                "errors / checks",
                errors,
                "none",
                "[green]ok[/]" if not run["errors"] else "[red]errors[/]",
                f"log grew {run['log_growth']} = {run['ok_total']} x 201: {durable}; "
                f"receipts {run['receipts_verified']}",
            )
            elig = run["eligibility"]
            table.add_row(
                name,
                w + star,
                f"eligibility, {elig['keys']:,} keys, p50",
                f"{elig['p50_ms']} ms",
                f"<= {TARGET_ELIGIBILITY_MS:.0f} ms",
                verdict(elig["p50_ms"], TARGET_ELIGIBILITY_MS, higher_is_better=False),
                f"min {elig['min_ms']} max {elig['max_ms']} ms over {elig['reps']}; "
                f"answer {'correct' if elig['correct'] else '[red]WRONG[/]'} "
                f"({elig['eligible']} eligible)"
                + (
                    f"; [red]other processes used {elig['others_cpu_pct']}% of a core[/]"
                    if elig["contended"]
                    else ""
                ),
            )
        seed = backend["seed"]
        pg_share = result.get("postgres_share")
        shown = pg_share is not None and name == "postgres"
        table.add_row(
            name,
            "-",
            "in-process append_batch (no HTTP)" + (" / SQLite's" if shown else ""),
            f"{seed['append_batch_per_s']:,.0f}/s" + (f" = {pg_share:.0%}" if shown else ""),
            f">= {TARGET_POSTGRES_SHARE:.0%}" if shown else "",
            verdict(pg_share, TARGET_POSTGRES_SHARE, higher_is_better=True) if shown else "",
            f"seeding {seed['records']:,} records via Ledger.accept + Ledger.append_batch "
            f"(batches of 512){'; then ANALYZE' if name == 'postgres' else ''}",
        )
        table.add_row(
            name,
            "-",
            "in-process Ledger.eligible p50",
            f"{seed['eligible_inprocess_p50_ms']} ms",
            "",
            "",
            f"ledger of {result['devices']:,} devices, {seed['log_size']:,} entries",
        )
        table.add_section()
    table.add_row(
        "-",
        "-",
        "ceiling: JCS + Ed25519 verify + leaf hash",
        f"{ceiling['core_per_s']:,.0f}/s",
        "",
        "",
        "in-process, one core (Ledger.accept minus parsing, validation, I/O)",
    )
    table.add_row(
        "-",
        "-",
        "full Ledger.accept(bytes)",
        f"{ceiling['accept_per_s']:,.0f}/s",
        "",
        "",
        f"verify {ceiling['verify_per_s']:,.0f}/s, JCS statement "
        f"{ceiling['canonical_statement_per_s']:,.0f}/s, JCS record "
        f"{ceiling['canonical_record_per_s']:,.0f}/s, JSON parse + pydantic "
        f"{ceiling['parse_validate_per_s']:,.0f}/s, hash {ceiling['hash_leaf_per_s']:,.0f}/s"
        + (
            f"; [red]other processes used {ceiling['others_cpu_pct']}% of a core[/]"
            if ceiling["contended"]
            else ""
        ),
    )
    console.print(table)
    cpus = result["machine"]["cpus"]
    why = (
        "the service's default; "
        if args.headline_workers == 1
        else "as asked with --headline-workers; "
    )
    console.print(
        f"* headline: --workers {args.headline_workers} ({why}on this {cpus}-CPU machine a "
        "second worker shares the cores with the load generator and the database, so the "
        "other rows show scaling on busy cores, not on dedicated ones). The load generator is "
        f"one process, one {result.get('loop', 'asyncio')} loop, {args.clients} keep-alive "
        "connections. Appends run on the seeded ledger. Seeding and the in-process rows use "
        "the service's own code path (Ledger.accept + Ledger.append_batch), not HTTP."
    )
    for backend in result["backends"]:
        lead = backend.get("headline")
        if lead is None:
            continue
        meets = lead["meets"]
        console.print(
            f"[bold]{backend['backend']}[/] (workers={lead['workers']}): "
            f"{lead['appends_per_s']:,.0f} appends/s = {lead['ceiling_share']:.1%} of the ceiling "
            f"({'meets' if meets['ceiling_share'] else 'misses'} >= "
            f"{TARGET_CEILING_SHARE:.0%}), "
            f"p50 {lead['p50_ms']} ms, p99 {lead['p99_ms']} ms "
            f"({'meets' if meets['append_p99_ms'] else 'misses'} <= {TARGET_P99_MS:.0f}), "
            f"eligibility p50 {lead['eligibility_p50_ms']} ms "
            f"({'meets' if meets['eligibility_ms'] else 'misses'} <= "
            f"{TARGET_ELIGIBILITY_MS:.0f})"
            + ("; [red]measured on a shared, busy machine[/]" if lead["contended"] else "")
        )
    pg_share = result.get("postgres_share")
    if pg_share is not None:
        console.print(
            f"PostgreSQL's in-process append_batch {pg_share:.0%} of SQLite's "
            f"({'meets' if pg_share >= TARGET_POSTGRES_SHARE else 'misses'} >= "
            f"{TARGET_POSTGRES_SHARE:.0%})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seconds", type=float, help="timed window per run (default 10)")
    parser.add_argument("--warmup", type=float, help="untimed load before the window (2)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--workers", default=None, help="comma-separated --workers values to run (default 1,2)"
    )
    parser.add_argument(
        "--headline-workers", type=int, default=1, help="which run the summary leads with"
    )
    parser.add_argument("--devices", type=int, help="devices in the ledger (default 100000)")
    parser.add_argument("--query-keys", type=int, default=10_000)
    parser.add_argument("--withdrawn-share", type=float, default=0.2)
    parser.add_argument("--eligibility-reps", type=int, help="timed queries per run (15)")
    parser.add_argument(
        "--pool-rate",
        type=float,
        default=6000.0,
        help="appends/s the pre-signed pool must cover (the window is cut if it runs out)",
    )
    parser.add_argument("--ceiling-seconds", type=float, help="time for the ceiling loop (2)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--py-spy", metavar="DIR", help="profile the server with py-spy")
    parser.add_argument("--py-spy-format", default="flamegraph", choices=("flamegraph", "raw"))
    parser.add_argument(
        "--py-spy-gil",
        action="store_true",
        help="sample only threads holding the GIL: where the Python CPU goes, without the "
        "waits (fsync, the database, the next request) that plain samples also count",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        help="before each timed phase, wait up to this many s for other processes to go idle "
        "(default 20; 0 in --quick); after one wait runs out, no more waits",
    )
    parser.add_argument("--seed", type=int, default=20261122, help="RNG seed of the query")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 60 s)")
    args = parser.parse_args(argv)

    quick = args.quick
    args.seconds = args.seconds or (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.devices = args.devices or (12_000 if quick else 100_000)
    args.eligibility_reps = args.eligibility_reps or (5 if quick else 15)
    args.ceiling_seconds = args.ceiling_seconds or (0.5 if quick else 2.0)
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if quick else 20.0
    args.workers = [int(w) for w in (args.workers or ("1" if quick else "1,2")).split(",")]
    if quick and args.pool_rate == 6000.0:
        args.pool_rate = 5000.0
    started = time.perf_counter()

    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    result: dict[str, Any] = {
        "benchmark": "moodfed.consent",
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "targets": {
            "ceiling_share": TARGET_CEILING_SHARE,
            "append_p99_ms": TARGET_P99_MS,
            "postgres_share": TARGET_POSTGRES_SHARE,
            "eligibility_ms": TARGET_ELIGIBILITY_MS,
        },
        "clients": args.clients,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "devices": args.devices,
        "headline_workers": args.headline_workers,
        "backends": [],
    }

    log("ceiling: pre-signing a sample and timing it in-process on one core")
    sample = [r.split(b"\r\n\r\n", 1)[1] for r in _sign_append_chunk(1000 if quick else 4000)]
    wait_for_quiet(args)
    result["ceiling"] = measure_ceiling(sample, args.ceiling_seconds)
    log(f"ceiling: {result['ceiling']['core_per_s']:.0f} records/s")

    with tempfile.TemporaryDirectory(prefix="consent-bench-seed-") as scratch:
        log(f"seed: signing and accepting {args.devices} devices on {os.cpu_count()} cores")
        seed = prepare_seed(args.devices, args.withdrawn_share, 512, Path(scratch))
    log(f"seed: {seed.records} records signed and accepted in {seed.sign_accept_s:.1f} s")
    gc.collect()
    gc.freeze()  # the seed lives until the end: spare the timed in-process lookups its GC
    query = make_query(seed.granted, seed.withdrawn, args.query_keys, random.Random(args.seed))
    result["eligibility_query"] = query.mix

    for backend in backends:
        if backend == "postgres":
            problem = postgres_reachable(args.postgres_url)
            if problem is not None:
                if args.backend == "postgres":
                    raise SystemExit(f"PostgreSQL unreachable at {args.postgres_url}: {problem}")
                log(f"postgres: skipped ({problem})")
                result["backends"].append({"backend": backend, "skipped": problem})
                continue
        result["backends"].append(run_backend(backend, args, seed, query))

    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    for backend in result["backends"]:
        for run in backend.get("runs", []):
            result["loop"] = run["loadgen_loop"]
            run["ratio_to_ceiling"] = round(
                run["appends_per_s"] / result["ceiling"]["core_per_s"], 4
            )
        runs = backend.get("runs", [])
        lead = headline_run(runs, args.headline_workers)
        if lead is not None:
            backend["headline"] = {
                "workers": lead["workers"],
                "appends_per_s": lead["appends_per_s"],
                "ceiling_share": lead["ratio_to_ceiling"],
                "p50_ms": lead["p50_ms"],
                "p99_ms": lead["p99_ms"],
                "eligibility_p50_ms": lead["eligibility"]["p50_ms"],
                "cpu_ms_per_append": lead["cpu_ms_per_append"],
                "contended": lead["contended"] or lead["eligibility"]["contended"],
                "meets": {
                    "ceiling_share": lead["ratio_to_ceiling"] >= TARGET_CEILING_SHARE,
                    "append_p99_ms": (lead["p99_ms"] or math.inf) <= TARGET_P99_MS,
                    "eligibility_ms": lead["eligibility"]["p50_ms"] <= TARGET_ELIGIBILITY_MS,
                },
            }
    seeded = {
        b["backend"]: b["seed"]["append_batch_per_s"] for b in result["backends"] if "seed" in b
    }
    if len(seeded) == 2:
        result["postgres_share"] = round(seeded["postgres"] / seeded["sqlite"], 4)
    result["machine_shared"] = result["ceiling"]["contended"] or any(
        run["contended"] or run["eligibility"]["contended"]
        for backend in result["backends"]
        for run in backend.get("runs", [])
    )
    print_report(result, args)
    print(json.dumps(result, separators=(",", ":")))
    log(f"done in {result['elapsed_s']} s")
    failed = any(
        run["errors"] or not run["durable_count_matches"] or not run["eligibility"]["correct"]
        for backend in result["backends"]
        for run in backend.get("runs", [])
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
