"""moodfed's Flower ClientApp: the device's side of attested, consent-gated DP-FedAvg.

Handlers (the contract is :mod:`client_sdk.protocol`):

- ``query.attest``: sign the server's nonce with the device key (who this node is).
- ``query.secagg``: the key, share and unmask stages of a secure sum
  (:mod:`client_sdk.secure_sum`, :mod:`client_sdk.secagg`).
- ``train``: the device's own gates first: its latest *verified* consent record for
  ``model-training`` must be an active grant (``ConsentClient.decision``), whatever the
  server believes, and the request must be no weaker than the device's own policy
  (:class:`~client_sdk.policy.DevicePolicy`; a weaker one is refused before any
  computation, and counted). In a secure round the device then decides in secret
  whether it takes part (probability q), trains with record-level DP-SGD on its diary
  if so (charged to its :class:`~privacy.DeviceAccountant`), clips the update to C and
  sends it encoded, with its share of the noise, and masked. A device that does not
  take part, has no examples or has spent its budget sends zeros the same way: every
  reply has the same shape whatever the diary holds. In a central round (a trusted
  server, only if the policy allows it) it sends the clipped update itself. Nothing else
  leaves: no loss, no counts, no exception text (a failure answers with a fixed error
  code and reason; details stay in the device's own log).
- ``query.analytics``: the same gates for ``population-analytics``, then one bounded
  vector per query for the week, masked and noised the same way (or in the clear, if
  central).

Which device a node is comes from its node config: ``device-dir`` (a
:class:`~client_sdk.Device` folder) with ``consent-url`` and ``log-key`` (the log's
verifier key, pinned in the app). Simulations pass their own ``open_device`` to
:func:`make_client_app` (:mod:`client_sdk.sim.client_app`); nothing here knows about them.
"""

from __future__ import annotations

import logging
import os
import secrets
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
from client_sdk.errors import SDKError
from client_sdk.features import DailySeries, make_examples
from client_sdk.keys import DeviceKey
from client_sdk.policy import DevicePolicy, RefusalCounter
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
from client_sdk.queries import analytics_clip_norm
from client_sdk.secagg import RoundRefused
from client_sdk.secure_sum import has_masked_request, masked_reply, secagg_reply
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
    policy: DevicePolicy = field(default_factory=lambda: DevicePolicy.from_node_config({}))
    """What this device allows, whatever a server asks (built once per process)."""

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
    """The real device this node stands for: ``device-dir``, ``consent-url``, ``log-key``
    and its policy's ``device-*`` keys, from the node's own config (the run config comes
    from the server: nothing in it may say who the device is or what it allows)."""
    config = {**(defaults or {}), **dict(context.node_config)}
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
    device.policy = DevicePolicy.from_node_config(config)
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


def _consented(device: LocalDevice, purpose: str) -> bool:
    """The device's own gate: its latest verified decision, after re-checking any decision
    the log appended but that could not be verified yet (a pending withdrawal already
    closes the gate)."""
    if device.consent.pending():
        try:
            device.consent.verify_pending()
        except SDKError as error:  # stays pending; the gate stays on the safe side
            log.warning("Pending consent decisions not verified yet: %s", error)
    decision = device.consent.decision(purpose)
    return decision is not None and decision.active


def _refuse_weaker(message: Message, device: LocalDevice, reason: str) -> Message:
    total = RefusalCounter(device.folder).add()
    log.warning("Refused a request weaker than this device's policy (%d so far): %s", total, reason)
    return _error(message, REFUSED, REFUSED_REASON)


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
    would pass the device's own budget. The update is computed and clipped in float32,
    the dtype that is sent, so the norm bound holds for the bytes that leave the device.
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


def _takes_part(rate: float) -> bool:
    """The device's own secret coin: True with probability ``rate`` (OS CSPRNG)."""
    return secrets.randbits(53) < rate * (1 << 53)


def _device_update(
    device: LocalDevice, config: TrainConfig, global_weights: list[np.ndarray]
) -> list[np.ndarray]:
    """The clipped DP-SGD update, or zeros when the diary has no example or the device's
    budget is spent (it then stops training but still answers the same way)."""
    from client_sdk.training import LocalTrainingConfig

    zeros = [np.zeros(w.shape, dtype=np.float32) for w in global_weights]
    X, y = make_examples(device.diary)
    if len(y) == 0:
        log.info("Nothing to train on yet: contributing zeros")
        return zeros
    accountant = DeviceAccountant(
        device.folder / DEVICE_LEDGER_FILE,
        epsilon_budget=device.policy.epsilon_budget,
        delta=device.policy.delta,
    )
    try:
        return clipped_update(
            global_weights,
            X,
            y,
            training=LocalTrainingConfig.from_request(config, device.policy),
            clipping_norm=config.clipping_norm,
            accountant=accountant,
        )
    except BudgetExceededError:
        log.info("This device's DP-SGD budget is spent: contributing zeros")
        return zeros


def handle_train(
    message: Message,
    context: Context,
    defaults: Mapping[str, Any],
    open_device: DeviceOpener,
    *,
    noise: bool = True,
) -> Message:
    """The device's gates, then its update: masked and noised in a secure round, clipped
    in the clear in a central one (only if its policy allows it)."""
    torch.set_num_threads(1)
    secure = has_masked_request(message.content)
    try:
        with open_device(context, defaults) as device:
            if not _consented(device, TRAINING_PURPOSE):
                log.info("Refused to train: this device's consent for %s is off", TRAINING_PURPOSE)
                return _error(message, REFUSED, REFUSED_REASON)
            config = TrainConfig.from_record(message.content.config_records[TRAIN_CONFIG_RECORD])
            reason = device.policy.refusal(
                device_noise_multiplier=config.device_noise_multiplier,
                update_noise_multiplier=config.noise_multiplier if secure else None,
                clipping_norm=config.clipping_norm,
            )
            if reason is not None:
                return _refuse_weaker(message, device, reason)
            global_weights = message.content.array_records[GLOBAL_MODEL_RECORD].to_numpy_ndarrays()
            if secure and not _takes_part(config.participation_rate):
                update = [np.zeros(w.shape, dtype=np.float32) for w in global_weights]
            else:
                update = _device_update(device, config, global_weights)
            if not secure:
                return Message(RecordDict({UPDATE_RECORD: ArrayRecord(update)}), reply_to=message)
            flat = np.concatenate([u.astype(np.float64).ravel() for u in update])
            content = masked_reply(
                message,
                context,
                flat,
                clip_norm=config.clipping_norm,
                noise_multiplier=config.noise_multiplier,
                noise=noise,
            )
    except RoundRefused as refusal:
        log.warning("Refused the secure round: %s", refusal)
        return _error(message, REFUSED, REFUSED_REASON)
    except Exception:
        log.exception("Training failed on this device")
        return _error(message, FAILED, FAILED_REASON)
    return Message(content, reply_to=message)


def handle_analytics(
    message: Message,
    context: Context,
    defaults: Mapping[str, Any],
    open_device: DeviceOpener,
    *,
    noise: bool = True,
) -> Message:
    """The device's gates for analytics, then one bounded vector per query for the week:
    all of them concatenated, noised and masked in a secure round; by name, in the clear,
    in a central one."""
    from client_sdk.analytics import device_contributions
    from client_sdk.queries import queries_from_config

    secure = has_masked_request(message.content)
    try:
        config = dict(message.content.config_records[ANALYTICS_CONFIG_RECORD])
        with open_device(context, defaults) as device:
            if not _consented(device, ANALYTICS_PURPOSE):
                log.info("Not contributing: this device's consent for %s is off", ANALYTICS_PURPOSE)
                return _error(message, REFUSED, REFUSED_REASON)
            queries = queries_from_config(config)
            sigma = float(str(config["noise-multiplier"])) if secure else None
            clip = analytics_clip_norm(queries)
            reason = device.policy.refusal(update_noise_multiplier=sigma)
            if reason is not None:
                return _refuse_weaker(message, device, reason)
            vectors = device_contributions(
                device.diary,
                week=date.fromisoformat(str(config["week"])),
                queries=queries,
                decision=device.consent.decision(ANALYTICS_PURPOSE),
                cohort=device.cohort,
            )
            if not secure:
                arrays = {name: Array(np.asarray(v, np.float64)) for name, v in vectors.items()}
                return Message(
                    RecordDict({CONTRIBUTION_RECORD: ArrayRecord(arrays)}), reply_to=message
                )
            assert sigma is not None
            flat = np.concatenate([np.asarray(vectors[q.name], np.float64) for q in queries])
            content = masked_reply(
                message, context, flat, clip_norm=clip, noise_multiplier=sigma, noise=noise
            )
    except RoundRefused as refusal:
        log.warning("Refused the secure round: %s", refusal)
        return _error(message, REFUSED, REFUSED_REASON)
    except Exception:
        log.exception("Could not compute this device's analytics contribution")
        return _error(message, FAILED, FAILED_REASON)
    return Message(content, reply_to=message)


def handle_secagg(
    message: Message, context: Context, defaults: Mapping[str, Any], open_device: DeviceOpener
) -> Message:
    """A secure sum's key, share or unmask stage (:func:`client_sdk.secure_sum.secagg_reply`)."""
    try:
        with open_device(context, defaults) as device:
            content = secagg_reply(message, context, key=device.key, policy=device.policy)
    except RoundRefused as refusal:
        log.warning("Refused the secure round: %s", refusal)
        return _error(message, REFUSED, REFUSED_REASON)
    except Exception:
        log.exception("The secure-aggregation stage failed on this device")
        return _error(message, FAILED, FAILED_REASON)
    return Message(content, reply_to=message)


def make_client_app(
    *,
    defaults: Mapping[str, Any] | None = None,
    mods: Sequence[Mod] = (),
    open_device: DeviceOpener = open_local_device,
    _test_without_noise: bool = False,
) -> ClientApp:
    """A ClientApp with node-config ``defaults``, Flower ``mods`` and a device opener
    (a real :class:`~client_sdk.Device` folder by default; simulations pass their own).

    ``_test_without_noise`` leaves the devices' noise out of secure sums, so a test can
    check that the unmasked sum is exact; no setting, variable or message reaches it, and
    the ``app`` objects Flower loads never set it.
    """
    noise = not _test_without_noise
    fixed = dict(defaults or {})
    client_app = ClientApp(mods=list(mods))
    # dp-accounting notes the RDP orders it skips (the bound stays valid): not for a device log.
    logging.getLogger("absl").setLevel(logging.ERROR)

    @client_app.query("attest")
    def _attest(message: Message, context: Context) -> Message:
        return handle_attest(message, context, fixed, open_device)

    @client_app.query("secagg")
    def _secagg(message: Message, context: Context) -> Message:
        return handle_secagg(message, context, fixed, open_device)

    @client_app.train()
    def _train(message: Message, context: Context) -> Message:
        return handle_train(message, context, fixed, open_device, noise=noise)

    @client_app.query("analytics")
    def _analytics(message: Message, context: Context) -> Message:
        return handle_analytics(message, context, fixed, open_device, noise=noise)

    return client_app


app = make_client_app()
