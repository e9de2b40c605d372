"""Simulated devices: where each one keeps its state, and the diary it holds.

In a simulation every virtual device is device ``i`` of a :class:`SyntheticPopulation`
(its key is ``device_key_for(i)``, its diary ``daily_series(i)``), and keeps what a
phone keeps on disk (its consent receipts, ``consent.json``; its DP-SGD ledger,
``dp-sgd.json``) in its own folder under the simulation's root. A folder that holds a
full :class:`~client_sdk.Device` (a ``device.key`` and an encrypted diary) is used as
that device instead, so a test can give one simulated device a real diary.

The root's ``federation.json`` says how to rebuild the population (devices taking
part, held-out devices, days, seed) and which consent service and pinned log key the
devices use. It is written by the server side when it sets a simulation up.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> spec = FederationSpec(devices=3, holdout_devices=1, days=30, seed=1,
...                       consent_url="http://127.0.0.1:1", log_key="k")
>>> spec.save(root)
>>> FederationSpec.load(root) == spec, spec.population().n_devices
(True, 4)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

from client_sdk.errors import SDKError
from client_sdk.sim.synthetic import SyntheticPopulation

__all__ = ["SPEC_FILE", "FederationSpec", "default_sim_root", "device_folder"]

SPEC_FILE: Final = "federation.json"


def default_sim_root(run_id: int) -> Path:
    """Where a run's simulated devices live when nothing else is configured."""
    return Path(tempfile.gettempdir()) / "moodfed-sim" / str(run_id)


def device_folder(root: str | os.PathLike[str], index: int) -> Path:
    """Simulated device ``index``'s own folder."""
    return Path(root) / "devices" / f"{index:06d}"


@lru_cache(maxsize=2)
def _population(n_devices: int, days: int, seed: int) -> SyntheticPopulation:
    return SyntheticPopulation(n_devices, days=days, seed=seed)


@dataclass(frozen=True, slots=True)
class FederationSpec:
    """How to rebuild a simulation's devices. Devices ``0..devices-1`` take part (one per
    Flower node, by partition id); ``devices..devices+holdout_devices-1`` are held out
    for the server's quality metric and never take part."""

    devices: int
    holdout_devices: int
    days: int
    seed: int
    consent_url: str
    log_key: str

    def population(self) -> SyntheticPopulation:
        """The whole synthetic population (cached per process)."""
        return _population(self.devices + self.holdout_devices, self.days, self.seed)

    def save(self, root: str | os.PathLike[str]) -> None:
        path = Path(root) / SPEC_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), sort_keys=True))
        os.replace(temporary, path)

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> FederationSpec:
        """The spec saved in ``root``; parsed once per version of the file (every message a
        simulated device answers loads it: a third of an attestation's time, read each time)."""
        path = Path(root) / SPEC_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise SDKError(
                f"no simulated federation at {root} ({SPEC_FILE} is missing): set the "
                "simulation up first (moodfed train does) or pass device-dir in the node config"
            ) from None
        return _parsed_spec(str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _parsed_spec(path: str, _inode: int, _mtime_ns: int, _size: int) -> FederationSpec:
    """The spec file at ``path`` as it was with that inode, modification time and size
    (:meth:`FederationSpec.save` replaces the file: a new inode)."""
    try:
        return FederationSpec(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise SDKError(f"{path} is not a valid federation spec: {exc}") from None
