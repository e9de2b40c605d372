"""A synthetic federation on one machine: consent service, devices' decisions, held-out set.

Used by ``moodfed train`` and by the ServerApp when a run has no consent service
configured (``flwr run .`` in local simulation). Consent goes through the real
service over HTTP and each simulated device decides with its own
:class:`~client_sdk.ConsentClient`, keeping its verified receipts in its own folder,
which is exactly what the device's training gate reads later.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from pydantic import SecretStr

from client_sdk.analytics import ANALYTICS_PURPOSE
from client_sdk.consent_client import ConsentClient
from client_sdk.simulated import FederationSpec, device_folder
from server.evaluation import HoldoutSet
from server.settings import TRAINING_PURPOSE

__all__ = [
    "ANALYTICS_NOTICE",
    "TRAINING_NOTICE",
    "LocalConsentService",
    "SimulatedFederation",
    "local_consent_service",
]

log = logging.getLogger(__name__)

TRAINING_NOTICE = (
    "moodfed trains a next-day mood model without collecting your diary: your phone "
    "trains on it and sends only a clipped, noised model update, and every published "
    "model carries its privacy cost (epsilon, delta)."
)
ANALYTICS_NOTICE = (
    "moodfed publishes weekly population mood figures without collecting your diary: your "
    "phone sends one bounded summary a week, the server adds noise and releases a figure "
    "only when enough people contributed, and every figure carries its privacy cost."
)
NOTICES = {TRAINING_PURPOSE: TRAINING_NOTICE, ANALYTICS_PURPOSE: ANALYTICS_NOTICE}


@dataclass(frozen=True, slots=True)
class LocalConsentService:
    """A running consent service: where it is, its token and its pinned log key."""

    url: str
    token: SecretStr
    log_key: str


@contextmanager
def local_consent_service(folder: str | Path) -> Iterator[LocalConsentService]:
    """The consent service on SQLite in ``folder``, on a free localhost port, in a thread."""
    from consent import ConsentSettings, create_app
    from consent.store import migrate

    folder = Path(folder)
    token = SecretStr(secrets.token_urlsafe(32))
    settings = ConsentSettings(data_dir=folder, eligibility_token=token)
    migrate(settings.resolved_database_url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="moodfed-consent")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the consent service did not start (data in {folder})")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    try:
        log_key = httpx.get(f"{url}/v1/log/key", timeout=10).text
        yield LocalConsentService(url=url, token=token, log_key=log_key)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class SimulatedFederation:
    """The simulated devices of one run and their consent decisions.

    ``withdraw_at_round``/``withdraw_fraction``: before that round, that share of the
    devices that granted withdraw (through the service, with their own key), to show
    the server's and the devices' consent gates at work.
    """

    root: Path
    spec: FederationSpec
    withdraw_at_round: int = 0
    withdraw_fraction: float = 0.0
    seed: int | None = None
    granted: list[int] = field(default_factory=list)
    withdrawn: list[int] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        root: str | Path,
        *,
        devices: int,
        holdout_devices: int,
        days: int,
        seed: int,
        consent_url: str,
        log_key: str,
        withdraw_at_round: int = 0,
        withdraw_fraction: float = 0.0,
    ) -> SimulatedFederation:
        """Write the federation's spec under ``root`` (the devices read it)."""
        spec = FederationSpec(
            devices=devices,
            holdout_devices=holdout_devices,
            days=days,
            seed=seed,
            consent_url=consent_url,
            log_key=log_key,
        )
        root = Path(root)
        spec.save(root)
        return cls(
            root=root,
            spec=spec,
            withdraw_at_round=withdraw_at_round,
            withdraw_fraction=withdraw_fraction,
            seed=seed,
        )

    def device_key(self, index: int) -> str:
        return self.spec.population().device_key_for(index).device_key

    def consent_client(self, index: int, *, http: httpx.Client | None = None) -> ConsentClient:
        """Device ``index``'s own consent client (its receipts live in its folder)."""
        return ConsentClient(
            key=self.spec.population().device_key_for(index),
            url=self.spec.consent_url,
            log_key=self.spec.log_key,
            state_path=device_folder(self.root, index) / "consent.json",
            http=http,
        )

    def _decide(
        self,
        indices: Sequence[int],
        action: str,
        workers: int,
        purposes: Sequence[str] = (TRAINING_PURPOSE,),
    ) -> None:
        # One connection pool for all the simulated devices: an httpx client costs about
        # 40 ms to make, which would dominate registering thousands of devices.
        with httpx.Client(base_url=self.spec.consent_url, timeout=60) as http:

            def one(index: int) -> None:
                client = self.consent_client(index, http=http)
                for purpose in purposes:
                    if action == "grant":
                        client.grant(purpose, notice=NOTICES[purpose])
                    else:
                        client.withdraw(purpose, notice=NOTICES[purpose])

            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                list(pool.map(one, indices))

    def grant(
        self,
        indices: Iterable[int],
        *,
        workers: int = 8,
        purposes: Sequence[str] = (TRAINING_PURPOSE,),
    ) -> None:
        """These devices grant ``purposes`` (signed on the device, sent, verified)."""
        chosen = list(indices)
        self._decide(chosen, "grant", workers, purposes)
        self.granted = sorted(set(self.granted) | set(chosen))

    def withdraw(self, indices: Iterable[int], *, workers: int = 8) -> None:
        """These devices withdraw ``model-training``."""
        chosen = list(indices)
        self._decide(chosen, "withdraw", workers)
        self.withdrawn = sorted(set(self.withdrawn) | set(chosen))

    def grant_share(
        self,
        fraction: float,
        *,
        workers: int = 8,
        purposes: Sequence[str] = (TRAINING_PURPOSE,),
    ) -> list[int]:
        """A reproducible ``fraction`` of the devices grant; the rest never decide."""
        rng = np.random.default_rng([self.spec.seed, 1])
        chosen = [i for i in range(self.spec.devices) if rng.random() < fraction]
        self.grant(chosen, workers=workers, purposes=purposes)
        return chosen

    def before_round(self, round_number: int) -> None:
        """Run the withdrawal schedule (a round observer hook)."""
        if round_number != self.withdraw_at_round or self.withdraw_fraction <= 0:
            return
        rng = np.random.default_rng([self.spec.seed, 2])
        candidates = [i for i in self.granted if i not in self.withdrawn]
        count = round(self.withdraw_fraction * len(candidates))
        chosen = sorted(int(i) for i in rng.choice(candidates, size=count, replace=False))
        if chosen:
            self.withdraw(chosen)
            log.info("Before round %s, %d device(s) withdrew consent", round_number, len(chosen))

    def after_round(self, report: object) -> None:
        """Nothing to do after a round (a round observer hook)."""

    def holdout(self) -> HoldoutSet | None:
        """The server's held-out synthetic devices, if any."""
        if self.spec.holdout_devices == 0:
            return None
        first = self.spec.devices
        return HoldoutSet.from_population(
            self.spec.population(), range(first, first + self.spec.holdout_devices)
        )
