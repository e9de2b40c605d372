"""moodfed's Flower ClientApp: the device's side of attested, consent-gated DP-FedAvg.

Two handlers (the contract is :mod:`client_sdk.protocol`):

- ``query.attest``: sign the server's nonce with the device key (who this node is).
- ``train``: the device's own gate first: its latest *verified* consent record for
  ``model-training`` must be an active grant (``ConsentClient.decision``), whatever
  the server believes, and its own DP-SGD budget must allow another run; then build
  examples from the diary, train with record-level DP-SGD charged to the device's
  :class:`~privacy.DeviceAccountant`, and answer with the update (new - global) clipped
  to the server's norm C. Nothing else leaves: no loss, no counts, no exception text
  (any failure answers with a fixed error code and reason; details stay in the
  device's own log).

Which device a node is comes from its node config: ``device-dir`` (a
:class:`~client_sdk.Device` folder) with ``consent-url`` and ``log-key`` (the log's
verifier key, pinned in the app). Simulations pass their own ``open_device`` to
:func:`make_client_app` (:mod:`client_sdk.sim.client_app`); nothing here knows about them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client_sdk.consent_client import ConsentClient
from client_sdk.device import Device
from client_sdk.entry import Entry
from client_sdk.features import DailySeries, make_examples
from client_sdk.keys import DeviceKey
from client_sdk.protocol import (
    ANALYTICS_CONFIG_RECORD,
    ANALYTICS_PURPOSE,
    ATTESTATION_RECORD,
    CHALLENGE_RECORD,
    CONTRIBUTION_RECORD,
    FAILED,
    FAILED_REASON,
    GLOBAL_MODEL_RECORD,
    REFUSED,
    REFUSED_REASON,
    TRAIN_CONFIG_RECORD,
    TRAINING_PURPOSE,
    UPDATE_RECORD,
    TrainConfig,
    sign_attestation,
)
from privacy import BudgetExceededError, DeviceAccountant, clip_update

if TYPE_CHECKING:
    from client_sdk.training import LocalTrainingConfig

__all__ = [
    "DEVICE_LEDGER_FILE",
    "DeviceOpener",
    "LocalDevice",
    "app",
    "clipped_update",
    "make_client_app",
    "node_config",
    "open_device_folder",
    "open_local_device",
]

log = logging.getLogger(__name__)

DEVICE_LEDGER_FILE = "dp-sgd.json"
CONSENT_STATE_FILE = "consent.json"


@lru_cache(maxsize=8)
def _http_for(url: str) -> httpx.Client:
    """One HTTP client per consent service per process: making one costs about 40 ms
    (its TLS context), far more than the consent gate itself."""
    return httpx.Client(base_url=url, timeout=30)


@dataclass
class LocalDevice:
    """What a node knows about the device it runs on: key, diary, own consent state.

    The consent client and the diary are opened on first use: answering an attestation
    challenge needs neither.
    """

    key: DeviceKey
    folder: Path
    consent_url: str
    log_key: str
    _diary: Callable[[], Sequence[Entry] | DailySeries] = field(repr=False)
    _device: Device | None = field(default=None, repr=False)
    cohort: tuple[str, str] | None = None
    """(age band, region), as the device's user declared it; only analytics uses it."""

    @cached_property
    def consent(self) -> ConsentClient:
        """This device's own consent client (its verified receipts live in its folder)."""
        return ConsentClient(
            key=self.key,
            url=self.consent_url,
            log_key=self.log_key,
            state_path=self.folder / CONSENT_STATE_FILE,
            http=_http_for(self.consent_url),
        )

    @cached_property
    def diary(self) -> Sequence[Entry] | DailySeries:
        return self._diary()

    def close(self) -> None:
        # The consent client's HTTP connection pool is shared (see _http_for).
        if self._device is not None:
            self._device.close()

    def __enter__(self) -> LocalDevice:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


DeviceOpener = Callable[[Context, Mapping[str, Any]], LocalDevice]
"""How a ClientApp finds the device its node stands for: (context, app defaults) -> device."""


def node_config(context: Context, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a node runs with: its own node config wins over the app's defaults,
    which win over the run config."""
    return {**dict(context.run_config), **defaults, **dict(context.node_config)}


def open_local_device(context: Context, defaults: Mapping[str, Any] | None = None) -> LocalDevice:
    """The real device this node stands for: ``device-dir``, ``consent-url``, ``log-key``."""
    config = node_config(context, defaults or {})
    if not config.get("device-dir"):
        raise ValueError(
            "this node has no device-dir in its node config: a device node needs device-dir "
            "(a client_sdk.Device folder), consent-url and log-key"
        )
    folder = Path(str(config["device-dir"]))
    url, log_key = config.get("consent-url"), config.get("log-key")
    if not url or not log_key:
        raise ValueError(
            "a device-dir node needs consent-url and log-key in its node config "
            "(the consent service and its pinned verifier key)"
        )
    device = open_device_folder(folder, url=str(url), log_key=str(log_key))
    if config.get("age-band") and config.get("region"):
        device.cohort = (str(config["age-band"]), str(config["region"]))
    return device


def open_device_folder(folder: Path, *, url: str, log_key: str) -> LocalDevice:
    """A :class:`~client_sdk.Device` folder as this node's device (passphrase from
    ``MOODFED_DEVICE_PASSPHRASE`` if its key is sealed)."""
    device = Device.open(folder, passphrase=os.environ.get("MOODFED_DEVICE_PASSPHRASE"))
    return LocalDevice(
        key=device.key,
        folder=folder,
        consent_url=url,
        log_key=log_key,
        _diary=device.diary.read,
        _device=device,
    )


def _error(message: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=message)


def handle_attest(
    message: Message, context: Context, defaults: Mapping[str, Any], open_device: DeviceOpener
) -> Message:
    """Sign (run id, node id, nonce): the node proves which device key it holds."""
    try:
        nonce = message.content[CHALLENGE_RECORD]["nonce"]
        if not isinstance(nonce, str):
            raise TypeError("the challenge's nonce is not a string")
        with open_device(context, defaults) as device:
            fields = sign_attestation(
                device.key,
                run_id=message.metadata.run_id,
                node_id=message.metadata.dst_node_id,
                nonce=nonce,
            )
    except Exception:
        log.exception("Could not answer the attestation challenge")
        return _error(message, FAILED, FAILED_REASON)
    return Message(RecordDict({ATTESTATION_RECORD: ConfigRecord(dict(fields))}), reply_to=message)


def _consented(device: LocalDevice) -> bool:
    decision = device.consent.decision(TRAINING_PURPOSE)
    return decision is not None and decision.active


def clipped_update(
    global_weights: Sequence[np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    training: LocalTrainingConfig,
    clipping_norm: float,
    accountant: DeviceAccountant | None,
    seed: int | None = None,
) -> list[np.ndarray]:
    """DP-SGD from the global weights on ``(X, y)``; the update (new - global) clipped to C.

    ``train_locally`` charges the whole run to ``accountant`` first and raises
    :class:`~privacy.BudgetExceededError` (nothing charged, nothing trained) when that
    would pass the device's own budget: a spent device stops taking part. The update is
    computed and clipped in float32, the dtype that is sent, so the norm bound holds for
    the bytes that leave the device.
    """
    from client_sdk.model import create_model, set_weights
    from client_sdk.training import train_locally

    model = create_model()
    set_weights(model, global_weights)
    result = train_locally(model, X, y, config=training, accountant=accountant, seed=seed)
    update = [
        np.asarray(new, dtype=np.float32) - np.asarray(old, dtype=np.float32)
        for new, old in zip(result.weights, global_weights, strict=True)
    ]
    clipped, _ = clip_update(update, max_norm=clipping_norm)
    return [np.asarray(value, dtype=np.float32) for value in clipped]


def handle_train(
    message: Message, context: Context, defaults: Mapping[str, Any], open_device: DeviceOpener
) -> Message:
    """The device gate, then DP-SGD on the diary, then the clipped update and nothing else."""
    from client_sdk.training import LocalTrainingConfig

    torch.set_num_threads(1)
    try:
        with open_device(context, defaults) as device:
            if not _consented(device):
                log.info("Refused to train: this device's consent for %s is off", TRAINING_PURPOSE)
                return _error(message, REFUSED, REFUSED_REASON)
            config = TrainConfig.from_record(message.content.config_records[TRAIN_CONFIG_RECORD])
            # The device's own budget (node config), else the one the server proposes.
            own = node_config(context, defaults).get("device-epsilon-budget")
            accountant = DeviceAccountant(
                device.folder / DEVICE_LEDGER_FILE,
                epsilon_budget=float(own or config.device_epsilon_budget),
                delta=config.device_delta,
            )
            X, y = make_examples(device.diary)
            if len(y) == 0:
                log.info("Did not train: the diary has no examples yet")
                return _error(message, FAILED, FAILED_REASON)
            global_weights = message.content.array_records[GLOBAL_MODEL_RECORD].to_numpy_ndarrays()
            try:
                arrays = clipped_update(
                    global_weights,
                    X,
                    y,
                    training=LocalTrainingConfig.from_train_config(config),
                    clipping_norm=config.clipping_norm,
                    accountant=accountant,
                )
            except BudgetExceededError:
                log.info("Refused to train: the run would pass this device's DP-SGD budget")
                return _error(message, REFUSED, REFUSED_REASON)
    except Exception:
        log.exception("Training failed on this device")
        return _error(message, FAILED, FAILED_REASON)
    return Message(RecordDict({UPDATE_RECORD: ArrayRecord(arrays)}), reply_to=message)


def handle_analytics(
    message: Message, context: Context, defaults: Mapping[str, Any], open_device: DeviceOpener
) -> Message:
    """The device gate for analytics, then one bounded vector per query for the week."""
    from client_sdk.analytics import device_contributions
    from client_sdk.queries import queries_from_config

    try:
        config = dict(message.content[ANALYTICS_CONFIG_RECORD])
        with open_device(context, defaults) as device:
            vectors = device_contributions(
                device.diary,
                week=date.fromisoformat(str(config["week"])),
                queries=queries_from_config(config),
                decision=device.consent.decision(ANALYTICS_PURPOSE),
                cohort=device.cohort,
            )
    except Exception:
        log.exception("Could not compute this device's analytics contribution")
        return _error(message, FAILED, FAILED_REASON)
    if not vectors:  # no active grant on the device's own record: nothing leaves
        return _error(message, REFUSED, REFUSED_REASON)
    arrays = ArrayRecord({name: Array(np.asarray(v, np.float64)) for name, v in vectors.items()})
    return Message(RecordDict({CONTRIBUTION_RECORD: arrays}), reply_to=message)


def make_client_app(
    *,
    defaults: Mapping[str, Any] | None = None,
    mods: Sequence[Mod] = (),
    open_device: DeviceOpener = open_local_device,
) -> ClientApp:
    """A ClientApp with node-config ``defaults``, Flower ``mods`` and a device opener
    (a real :class:`~client_sdk.Device` folder by default; simulations pass their own).
    """
    fixed = dict(defaults or {})
    client_app = ClientApp(mods=list(mods))
    # dp-accounting notes the RDP orders it skips (the bound stays valid): not for a device log.
    logging.getLogger("absl").setLevel(logging.ERROR)

    @client_app.query("attest")
    def _attest(message: Message, context: Context) -> Message:
        return handle_attest(message, context, fixed, open_device)

    @client_app.train()
    def _train(message: Message, context: Context) -> Message:
        return handle_train(message, context, fixed, open_device)

    @client_app.query("analytics")
    def _analytics(message: Message, context: Context) -> Message:
        return handle_analytics(message, context, fixed, open_device)

    return client_app


app = make_client_app()
