"""A synthetic federation on one machine: the devices' consent decisions and held-out set.

Used by ``moodfed train``, ``moodfed demo`` and the simulation app (``flwr run .`` with
``simulation=true``). Consent goes through the real service over HTTP and each
simulated device decides with its own :class:`~client_sdk.ConsentClient`, keeping its
verified receipts in its own folder, which is exactly what the device's gates read later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from client_sdk.consent_client import ConsentClient
from client_sdk.protocol import ANALYTICS_PURPOSE, TRAINING_PURPOSE
from client_sdk.sim import FederationSpec, device_folder
from server.evaluation import HoldoutSet
from server.observers import RunObserver
from server.sim.holdout import holdout_from_population
from server.sim.settings import SimSettings

__all__ = ["ANALYTICS_NOTICE", "NOTICES", "TRAINING_NOTICE", "SimulatedFederation"]

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


@dataclass
class SimulatedFederation(RunObserver):
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

    @classmethod
    def for_settings(
        cls,
        root: str | Path,
        settings: SimSettings,
        *,
        devices: int,
        seed: int,
        consent_url: str,
        log_key: str,
    ) -> SimulatedFederation:
        """:meth:`create` with the diary length, held-out devices and withdrawal schedule
        of ``settings``."""
        return cls.create(
            root,
            devices=devices,
            holdout_devices=settings.holdout_devices,
            days=settings.days,
            seed=seed,
            consent_url=consent_url,
            log_key=log_key,
            withdraw_at_round=settings.withdraw_round,
            withdraw_fraction=settings.withdraw_fraction,
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
        progress: Callable[[int], None] | None = None,
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
                for done, _ in enumerate(pool.map(one, indices), 1):
                    if progress is not None:
                        progress(done)

    def grant(
        self,
        indices: Iterable[int],
        *,
        workers: int = 8,
        purposes: Sequence[str] = (TRAINING_PURPOSE,),
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """These devices grant ``purposes`` (signed on the device, sent, verified);
        ``progress`` hears how many devices are done."""
        chosen = list(indices)
        self._decide(chosen, "grant", workers, purposes, progress)
        self.granted = sorted(set(self.granted) | set(chosen))

    def withdraw(self, indices: Iterable[int], *, workers: int = 8) -> None:
        """These devices withdraw ``model-training``."""
        chosen = list(indices)
        self._decide(chosen, "withdraw", workers)
        self.withdrawn = sorted(set(self.withdrawn) | set(chosen))

    def choose_share(self, fraction: float) -> list[int]:
        """A reproducible ``fraction`` of the devices (the ones that will grant)."""
        rng = np.random.default_rng([self.spec.seed, 1])
        return [i for i in range(self.spec.devices) if rng.random() < fraction]

    def grant_share(
        self,
        fraction: float,
        *,
        workers: int = 8,
        purposes: Sequence[str] = (TRAINING_PURPOSE,),
        progress: Callable[[int], None] | None = None,
    ) -> list[int]:
        """:meth:`choose_share` grants; the rest never decide."""
        chosen = self.choose_share(fraction)
        self.grant(chosen, workers=workers, purposes=purposes, progress=progress)
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

    def holdout(self) -> HoldoutSet | None:
        """The server's held-out synthetic devices, if any."""
        if self.spec.holdout_devices == 0:
            return None
        first = self.spec.devices
        return holdout_from_population(
            self.spec.population(), range(first, first + self.spec.holdout_devices)
        )
