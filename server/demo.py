"""``moodfed demo``: the platform end to end on one machine, on the embedded defaults.

For now: the consent service on SQLite in a temporary folder, SDK devices with
synthetic diaries that grant and withdraw consent over HTTP, every receipt
verified on the device, an eligibility query as the server would make it, and
the ledger audit. Later parts (training, analytics, dashboard) join here.
"""

from __future__ import annotations

import random
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from client_sdk import SyntheticPopulation
from client_sdk.device import Device
from consent import ConsentSettings, audit_log, create_app
from consent.store import migrate

__all__ = ["run_demo"]

NOTICE = (
    "moodfed learns population mood trends from your diary without collecting it: only "
    "clipped, noised model updates and bounded, noised aggregates leave your phone."
)
PURPOSES = ("model-training", "population-analytics")


class _BackgroundServer:
    """A uvicorn server on a free localhost port, in a daemon thread."""

    def __init__(self, app: object) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> _BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the consent service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def run_demo(*, devices: int = 12, seed: int = 7, console: Console | None = None) -> None:
    console = console or Console()
    rng = random.Random(seed)  # noqa: S311 - which synthetic users decide what, reproducibly
    with tempfile.TemporaryDirectory(prefix="moodfed-demo-") as tmp:
        folder = Path(tmp)
        settings = ConsentSettings(data_dir=folder, eligibility_token="demo-token")  # noqa: S106
        migrate(settings.resolved_database_url)
        console.rule("[bold]moodfed demo")
        console.print(f"consent ledger: {settings.resolved_database_url}")
        population = SyntheticPopulation(n_devices=devices, days=60, seed=seed)
        with _BackgroundServer(create_app(settings)) as service:
            log_key = httpx.get(f"{service.url}/v1/log/key").text  # pinned in the app
            console.print(f"consent service: {service.url}  log key: {log_key}")
            rows, phones = [], []
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("devices keep diaries and decide", total=devices)
                for i in range(devices):
                    phone = Device.create(
                        folder / "devices" / f"{i:03d}", consent_url=service.url, log_key=log_key
                    )
                    phone.diary.log_many(population.entries_for(i))
                    phones.append(phone)
                    for purpose in PURPOSES:
                        if rng.random() < 0.85:
                            receipt = phone.consent.grant(purpose, notice=NOTICE)
                            rows.append((phone, purpose, "grant", receipt))
                    progress.advance(task)
                for phone in rng.sample(phones, k=max(1, devices // 4)):
                    purpose = rng.choice(PURPOSES)
                    if phone.consent.decision(purpose) is not None:
                        receipt = phone.consent.withdraw(purpose, notice=NOTICE)
                        rows.append((phone, purpose, "withdraw", receipt))
            table = Table(title="consent decisions (each receipt verified on the device)")
            for column in (
                "device",
                "diary entries",
                "purpose",
                "action",
                "index",
                "tree size",
                "receipt",
            ):
                table.add_column(column)
            for phone, purpose, action, receipt in rows:
                table.add_row(
                    phone.device_key[:10] + "…",
                    str(len(phone.diary)),
                    purpose,
                    action,
                    str(receipt["index"]),
                    str(receipt["tree_size"]),
                    "[green]verified",
                )
            console.print(table)
            for phone in phones:  # each device checks the log still extends what it saw
                phone.consent.refresh_checkpoint()
            keys = [phone.device_key for phone in phones]
            for purpose in PURPOSES:
                eligible = httpx.post(
                    f"{service.url}/v1/eligibility",
                    json={"purpose": purpose, "device_keys": keys},
                    headers={"Authorization": "Bearer demo-token"},
                ).json()["eligible"]
                console.print(f"eligible for {purpose}: {len(eligible)} of {devices} devices")
            for phone in phones:
                phone.close()
        report = audit_log(settings.resolved_database_url, log_key)
        status = "[green]passed" if report.ok else "[red]FAILED"
        console.print(
            f"ledger audit {status}: {report.size} entries, "
            f"{report.checkpoints} checkpoints, root {report.root}"
        )
        if not report.ok:
            raise SystemExit(1)
