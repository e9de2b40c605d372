"""The device's record-level DP-SGD budget: a running RDP curve, persisted on the device."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from privacy.errors import BudgetExceededError, PrivacyError
from privacy.rdp import (
    RDP_ORDERS,
    RdpCurve,
    check_curve,
    rdp_epsilon,
    sampled_gaussian_rdp,
    zero_rdp,
)

__all__ = ["DeviceAccountant"]

_FORMAT_VERSION = 2
_FILE_MODE = 0o600

Step = tuple[float, float, int]
"""(noise_multiplier, sample_rate, steps), Opacus's order, as in the version 1 files."""


def _check_step(noise_multiplier: float, sample_rate: float, steps: int) -> Step:
    if not math.isfinite(noise_multiplier) or noise_multiplier <= 0:
        raise ValueError(
            f"noise_multiplier must be a positive finite number, got {noise_multiplier!r}"
        )
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return float(noise_multiplier), float(sample_rate), steps


def _step_rdp(step: Step) -> RdpCurve:
    noise_multiplier, sample_rate, steps = step
    return sampled_gaussian_rdp(
        sampling_rate=sample_rate, noise_multiplier=noise_multiplier, count=steps
    )


def _appended(history: list[Step], step: Step) -> list[Step]:
    # Merge with the last entry when the settings repeat, as Opacus's own step() does.
    if history and history[-1][:2] == step[:2]:
        return [*history[:-1], (*step[:2], history[-1][2] + step[2])]
    return [*history, step]


def _replayed(history: Sequence[Step]) -> RdpCurve:
    """The curve of a whole history: only to convert a file, never on the hot path."""
    curve = zero_rdp()
    for step in history:
        curve += _step_rdp(step)
    return curve


def _curve_to_json(curve: RdpCurve) -> list[float | None]:
    # Strict JSON has no Infinity: an unusable order (inf) is written as null.
    return [None if math.isinf(value) else float(value) for value in curve]


def _curve_from_json(values: object) -> RdpCurve:
    if not isinstance(values, list):
        raise ValueError("rdp must be a list")
    if any(value is not None and not isinstance(value, int | float) for value in values):
        raise ValueError("rdp values must be numbers or null")
    return check_curve([math.inf if value is None else value for value in values])


class DeviceAccountant:
    """Record-level privacy spent by DP-SGD on this device, kept in a JSON file.

    The file (written atomically, mode 0600) holds the running RDP curve of every step
    recorded so far at the fixed orders :data:`privacy.rdp.RDP_ORDERS`, and the history
    of (noise_multiplier, sample_rate, steps) it came from. Recording adds the new
    steps' curve (each (q, sigma)'s one-step curve is computed once per process, by
    Google's dp-accounting), and epsilon is one RDP -> (epsilon, delta) conversion:
    the cost does not grow with the device's history. The running curve equals
    dp-accounting's ``RdpAccountant`` composing the same steps in the same order.

    Record local training *before* running it (charge, then spend): a crash in
    between leaves the device over-counted, never under-counted. A missing file
    is a fresh device; an unreadable one raises :class:`PrivacyError` rather than
    silently restarting the budget from zero. A version 1 file (the Opacus history
    alone) is converted on reading and rewritten as version 2 by the next record.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dp-sgd.json"
    >>> device = DeviceAccountant(path, epsilon_budget=3.0, delta=1e-5)
    >>> device.record(noise_multiplier=1.1, sample_rate=0.01, steps=100)
    >>> 0 < device.epsilon() <= 3.0, oct(path.stat().st_mode & 0o777)
    (True, '0o600')
    """

    def __init__(
        self, path: str | os.PathLike[str], *, epsilon_budget: float, delta: float
    ) -> None:
        if not math.isfinite(epsilon_budget) or epsilon_budget <= 0:
            raise ValueError(f"epsilon_budget must be positive and finite, got {epsilon_budget!r}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        self.path = Path(path)
        self.epsilon_budget = float(epsilon_budget)
        self.delta = float(delta)
        self._history, self._rdp = self._load()
        self._epsilon: float | None = None if self._history else 0.0  # computed when asked

    @property
    def history(self) -> list[Step]:
        """The recorded (noise_multiplier, sample_rate, steps), oldest first."""
        return list(self._history)

    def _load(self) -> tuple[list[Step], RdpCurve]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return [], zero_rdp()
        try:
            return self._parse(json.loads(text))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise PrivacyError(
                f"device privacy ledger {self.path} is unreadable ({error}); refusing to "
                "assume a fresh budget"
            ) from error

    @staticmethod
    def _parse(document: Any) -> tuple[list[Step], RdpCurve]:
        if not isinstance(document, dict) or document.get("mechanism") != "rdp":
            raise ValueError("unknown format")
        version = document.get("version")
        if version not in (1, _FORMAT_VERSION):
            raise ValueError(f"unknown format version {version!r}")
        history = [_check_step(float(s), float(q), n) for s, q, n in document["history"]]
        if version == 1 or [float(order) for order in document["orders"]] != list(RDP_ORDERS):
            # Version 1 kept only the history (for Opacus); a curve at other orders
            # cannot be reused. The history is the whole record: replay it once.
            return history, _replayed(history)
        curve = _curve_from_json(document["rdp"])
        if bool(history) != bool(curve.any()):
            raise ValueError("the RDP curve does not match the history")
        return history, curve

    def _save(self, history: list[Step], curve: RdpCurve) -> None:
        document = {
            "version": _FORMAT_VERSION,
            "mechanism": "rdp",
            "orders": list(RDP_ORDERS),
            "rdp": _curve_to_json(curve),
            "history": history,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".dp-ledger-")
        try:
            os.fchmod(descriptor, _FILE_MODE)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                json.dump(document, stream, allow_nan=False)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _after(self, step: Step) -> tuple[RdpCurve, float]:
        curve = self._rdp + _step_rdp(step)
        return curve, rdp_epsilon(curve, delta=self.delta)

    def epsilon(self) -> float:
        """Epsilon spent at this device's delta (dp-accounting RDP at :data:`RDP_ORDERS`)."""
        if self._epsilon is None:
            self._epsilon = rdp_epsilon(self._rdp, delta=self.delta)
        return self._epsilon

    def would_exceed(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        """Whether training ``steps`` more steps with these settings would pass the budget."""
        _, epsilon = self._after(_check_step(noise_multiplier, sample_rate, steps))
        return epsilon > self.epsilon_budget

    def record(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Charge ``steps`` DP-SGD steps to the device and persist it before returning.

        Raises :class:`BudgetExceededError` and records nothing if they would pass the
        budget: the device must then not train.
        """
        with self.charging(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps):
            pass

    @contextlib.contextmanager
    def charging(
        self, *, noise_multiplier: float, sample_rate: float, steps: int
    ) -> Iterator[None]:
        """Charge these steps, run the block (the training), and exit only once the charge
        is on disk.

        The budget is checked before the block runs (:class:`BudgetExceededError`, nothing
        recorded). The fsync-ed write then runs in a thread beside the block, so the disk
        and the training overlap; what the block computed may leave the device only after
        this exits, so a crash before then leaves nothing released and, at worst, a
        charge recorded for it (over-counted, never under-counted). A failed write raises
        :class:`PrivacyError` here, after the block.
        """
        step = _check_step(noise_multiplier, sample_rate, steps)
        curve, epsilon = self._after(step)
        if epsilon > self.epsilon_budget:
            raise BudgetExceededError(["this device"], epsilon_budget=self.epsilon_budget)
        history = _appended(self._history, step)
        failures: list[BaseException] = []

        def save() -> None:
            try:
                self._save(history, curve)
            except BaseException as error:  # reported on the caller's thread below
                failures.append(error)

        writer = threading.Thread(target=save, name="dp-ledger-write")
        writer.start()
        try:
            yield
        finally:
            writer.join()
            if not failures:
                self._history, self._rdp, self._epsilon = history, curve, epsilon
        if failures:
            raise PrivacyError(
                f"could not write the device privacy ledger {self.path}: {failures[0]}"
            ) from failures[0]

    @property
    def exhausted(self) -> bool:
        """True when not even one more step with the last used settings fits the budget."""
        if not self._history:
            return False
        noise_multiplier, sample_rate, _ = self._history[-1]
        return self.would_exceed(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=1
        )
