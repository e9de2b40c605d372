"""The device's record-level DP-SGD budget: Opacus's RDP accountant, persisted on the device."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
from pathlib import Path

from privacy.errors import BudgetExceededError, PrivacyError

__all__ = ["DeviceAccountant"]

_FORMAT_VERSION = 1
_FILE_MODE = 0o600

Step = tuple[float, float, int]


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


def _appended(history: list[Step], step: Step) -> list[Step]:
    # Merge with the last entry when the settings repeat, as Opacus's own step() does.
    if history and history[-1][:2] == step[:2]:
        return [*history[:-1], (*step[:2], history[-1][2] + step[2])]
    return [*history, step]


@functools.lru_cache(maxsize=1024)
def _epsilon(history: tuple[Step, ...], delta: float) -> float:
    """Memoized: Opacus's RDP conversion takes ~80 ms, and a round asks up to three times."""
    if not history:
        return 0.0
    # Imported here: opacus loads torch, which the server side of the package never needs.
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.load_state_dict({"history": list(history), "mechanism": accountant.mechanism()})
    return float(accountant.get_epsilon(delta))


class DeviceAccountant:
    """Record-level privacy spent by DP-SGD on this device, kept in a JSON file.

    The file holds Opacus's RDP accountant history, a list of
    (noise_multiplier, sample_rate, steps), and is written atomically with mode 0600.
    Record local training *before* running it (charge, then spend): a crash in
    between leaves the device over-counted, never under-counted. A missing file
    is a fresh device; an unreadable one raises :class:`PrivacyError` rather than
    silently restarting the budget from zero.

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
        self._history = self._load()

    @property
    def history(self) -> list[Step]:
        """The recorded (noise_multiplier, sample_rate, steps), oldest first."""
        return list(self._history)

    def _load(self) -> list[Step]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            document = json.loads(text)
            if document.get("version") != _FORMAT_VERSION or document.get("mechanism") != "rdp":
                raise ValueError("unknown format")
            return [_check_step(float(s), float(q), int(n)) for s, q, n in document["history"]]
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise PrivacyError(
                f"device privacy ledger {self.path} is unreadable ({error}); refusing to "
                "assume a fresh budget"
            ) from error

    def _save(self, history: list[Step]) -> None:
        document = {"version": _FORMAT_VERSION, "mechanism": "rdp", "history": history}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".dp-ledger-")
        try:
            os.fchmod(descriptor, _FILE_MODE)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                json.dump(document, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def epsilon(self) -> float:
        """Epsilon spent at this device's delta (Opacus RDP, default orders)."""
        return _epsilon(tuple(self._history), self.delta)

    def would_exceed(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        """Whether training ``steps`` more steps with these settings would pass the budget."""
        step = _check_step(noise_multiplier, sample_rate, steps)
        return _epsilon(tuple(_appended(self._history, step)), self.delta) > self.epsilon_budget

    def record(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Charge ``steps`` DP-SGD steps to the device and persist it before returning.

        Raises :class:`BudgetExceededError` and records nothing if they would pass the
        budget: the device must then not train.
        """
        step = _check_step(noise_multiplier, sample_rate, steps)
        history = _appended(self._history, step)
        if _epsilon(tuple(history), self.delta) > self.epsilon_budget:
            raise BudgetExceededError(["this device"], epsilon_budget=self.epsilon_budget)
        self._save(history)
        self._history = history

    @property
    def exhausted(self) -> bool:
        """True when not even one more step with the last used settings fits the budget."""
        if not self._history:
            return False
        noise_multiplier, sample_rate, _ = self._history[-1]
        return self.would_exceed(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=1
        )
