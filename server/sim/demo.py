"""``moodfed demo``: the whole platform on one machine, on the embedded defaults.

The consent service on SQLite; a synthetic population of SDK devices, most granting
model training and population analytics (each receipt verified on the device), some
withdrawing part-way; rounds of consent-gated DP-FedAvg with DP-SGD on the devices,
then weekly DP analytics, on Flower's Simulation Engine; the ledger audit; then the
analysts' dashboard over the releases, until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from consent import ConsentSettings, audit_log
from dashboard.serve import serve_dashboard
from server.sim.consent_service import local_consent_service
from server.sim.settings import SimSettings
from server.sim.train import run_train

__all__ = ["run_demo"]


def run_demo(
    *,
    devices: int = 300,
    rounds: int = 4,
    analytics_weeks: int = 3,
    dashboard: bool = True,
    seed: int = 7,
    console: Console | None = None,
) -> int:
    """Run the platform end to end; return the exit code (0 when every check passed)."""
    console = console or Console()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="moodfed-demo-")))
        console.rule("[bold]moodfed demo")
        console.print(f"everything lives in {folder} (removed at the end)")
        service = stack.enter_context(local_consent_service(folder / "consent"))
        settings = SimSettings(
            data_dir=folder,
            consent_url=service.url,
            eligibility_token=service.token,
            rounds=rounds,
            expected_devices=max(10.0, devices / 10),
            noise_multiplier=1.0,
            clipping_norm=1.0,
            epsilon_budget=8.0,
            delta=1e-5,
            seed=seed,
            days=120,
            holdout_devices=50,
            grant_fraction=0.9,
            withdraw_fraction=0.15,
        )
        report = run_train(
            devices=devices,
            settings=settings,
            console=console,
            analytics_weeks=analytics_weeks,
            # Enough that the larger cohorts of these devices clear the release threshold.
            analytics_epsilon=3.0,
        )
        if report.status == "failed":
            return 1
        consent_url = ConsentSettings(data_dir=folder / "consent").resolved_database_url
        audit = audit_log(consent_url, service.log_key)
        status = "[green]passed" if audit.ok else "[red]FAILED"
        console.print(
            f"consent ledger audit {status}: {audit.size} signed records, "
            f"{audit.checkpoints} checkpoints, root {audit.root}"
        )
        if not audit.ok:
            return 1
        if not dashboard:
            return 0
        password = secrets.token_urlsafe(12)
        from dashboard.passwords import hash_password

        env = {
            **os.environ,
            "MOODFED_RELEASES_URL": settings.resolved_release_database_url,
            "MOODFED_CONSENT_URL": service.url,
            "MOODFED_CONSENT_LOG_KEY": service.log_key,
            "MOODFED_ANALYST_USER": "analyst",
            "MOODFED_ANALYST_PASSWORD_HASH": hash_password(password),
        }
        with console.status("starting the dashboard…"):
            served = stack.enter_context(
                serve_dashboard(env=env, log_path=folder / "dashboard.log")
            )
        console.print(
            Panel(
                f"[bold]{served.url}[/]\n"
                f"log in as [bold]analyst[/] with the password [bold]{password}[/] "
                "(made for this demo run)\nCtrl-C stops the demo.",
                title="the analysts' dashboard",
            )
        )
        try:
            served.process.wait()
        except KeyboardInterrupt:
            console.print("stopping")
        return 0
    return 0
