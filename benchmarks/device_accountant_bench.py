"""Device accountant benchmark: the old Opacus history replay against the running RDP curve.

Run from the repository root::

    python benchmarks/device_accountant_bench.py           # full run (a minute or two)
    python benchmarks/device_accountant_bench.py --quick   # smoke run (seconds)

What a device pays for its DP-SGD ledger in each training round, timed in one process
for both implementations on the same settings:

- old: ``privacy.DeviceAccountant`` as it was until issue 8 (commit 23342ce), copied
  below as ``OpacusDeviceAccountant``: the file holds the (sigma, q, steps) history and
  every epsilon is Opacus's ``RDPAccountant`` over the whole history (memoized per
  history, which never repeats once a step is added).
- new: ``privacy.DeviceAccountant``: the file also holds the running RDP curve at
  dp-accounting's default orders; a record adds the new steps' curve (one-step curve
  cached per (q, sigma) in the process) and epsilon is one RDP -> DP conversion.

Two diaries, one record per round, ``--rounds`` rounds each:

- steady: the same diary size every round (q = 32/110, 3 steps at sigma 1): the history
  stays one merged entry, as in a simulation. The new path computes its one-step curve
  in round 1 only; later rounds are warm.
- growing: one more example every round (q = 32/n, n = 90, 91, ...), as on a phone that
  keeps a diary: every round is a new (q, sigma), so the new path computes one curve per
  round (its cold cost), while the old history grows by one entry per round.

Each scenario runs twice per ledger. Warm process (a simulation's long-lived actor): one
open ledger, ``record()`` each round, caches kept. Fresh process (a SuperNode starting
a ClientApp process per message): every in-process cache cleared, then open the file and
``record()``; then, caches cleared again, open the file and call ``epsilon()`` (the
per-epsilon cost). Every record includes the fsync-ed atomic write, also timed alone.
Figures are medians over the rounds, and the last round's (the old cost grows with the
history).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import privacy.rdp  # noqa: E402
from privacy import DeviceAccountant  # noqa: E402

DELTA = 1e-4  # the device delta moodfed's TrainSettings propose
NOISE_MULTIPLIER = 1.0
BATCH = 32

Step = tuple[float, float, int]


# -- the old implementation, verbatim in what it computes ------------------------------


@functools.lru_cache(maxsize=1024)
def _opacus_epsilon(history: tuple[Step, ...], delta: float) -> float:
    if not history:
        return 0.0
    from opacus.accountants import RDPAccountant  # type: ignore[import-untyped]  # no py.typed

    accountant = RDPAccountant()
    accountant.load_state_dict({"history": list(history), "mechanism": accountant.mechanism()})
    return float(accountant.get_epsilon(delta))


def _appended(history: list[Step], step: Step) -> list[Step]:
    if history and history[-1][:2] == step[:2]:
        return [*history[:-1], (*step[:2], history[-1][2] + step[2])]
    return [*history, step]


def _atomic_write(path: Path, document: dict[str, Any]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".dp-ledger-")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(document, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class OpacusDeviceAccountant:
    """The pre-issue-8 device ledger: Opacus RDP over the whole history (version 1 file)."""

    def __init__(self, path: Path, *, epsilon_budget: float, delta: float) -> None:
        self.path, self.epsilon_budget, self.delta = path, epsilon_budget, delta
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            self._history = [(float(s), float(q), int(n)) for s, q, n in document["history"]]
        except FileNotFoundError:
            self._history = []

    def epsilon(self) -> float:
        return _opacus_epsilon(tuple(self._history), self.delta)

    def record(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        history = _appended(self._history, (noise_multiplier, sample_rate, steps))
        if _opacus_epsilon(tuple(history), self.delta) > self.epsilon_budget:
            raise RuntimeError("over budget")
        _atomic_write(self.path, {"version": 1, "mechanism": "rdp", "history": history})
        self._history = history


# -- timing ------------------------------------------------------------------------------

Ledger = Any  # OpacusDeviceAccountant | DeviceAccountant
Kind = Callable[..., Ledger]

KINDS: dict[str, tuple[Kind, Callable[[], None]]] = {
    "old (Opacus, history replay)": (OpacusDeviceAccountant, _opacus_epsilon.cache_clear),
    "new (dp-accounting, running curve)": (DeviceAccountant, privacy.rdp._step_rdp.cache_clear),
}


def _diary_sizes(scenario: str, rounds: int) -> list[int]:
    return [110] * rounds if scenario == "steady" else [90 + index for index in range(rounds)]


def _ms(seconds: list[float]) -> float:
    return 1e3 * statistics.median(seconds)


def _record(ledger: Ledger, n: int) -> None:
    ledger.record(noise_multiplier=NOISE_MULTIPLIER, sample_rate=BATCH / n, steps=round(n / BATCH))


def _run(kind: str, scenario: str, rounds: int, folder: Path) -> dict[str, Any]:
    make, clear_caches = KINDS[kind]
    label = "old" if kind.startswith("old") else "new"
    sizes = _diary_sizes(scenario, rounds)

    # A long-lived process (a simulation's actor): one open ledger, caches kept.
    clear_caches()
    warm = make(folder / f"{scenario}-{label}-warm.json", epsilon_budget=1e9, delta=DELTA)
    records = []
    for n in sizes:
        started = time.perf_counter()
        _record(warm, n)
        records.append(time.perf_counter() - started)

    # A fresh process per round (a SuperNode's ClientApp process): nothing cached but the
    # file; open + record, then open + epsilon() as the next process would.
    path = folder / f"{scenario}-{label}-fresh.json"
    fresh_records, opens = [], []
    for n in sizes:
        clear_caches()
        started = time.perf_counter()
        _record(make(path, epsilon_budget=1e9, delta=DELTA), n)
        fresh_records.append(time.perf_counter() - started)
        clear_caches()
        started = time.perf_counter()
        epsilon = make(path, epsilon_budget=1e9, delta=DELTA).epsilon()
        opens.append(time.perf_counter() - started)
    if epsilon != warm.epsilon():
        raise SystemExit(f"{kind}: the two passes disagree ({epsilon} vs {warm.epsilon()})")
    return {
        "record_ms": _ms(records),
        "record_last_ms": 1e3 * records[-1],
        "fresh_record_ms": _ms(fresh_records),
        "fresh_record_last_ms": 1e3 * fresh_records[-1],
        "open_epsilon_ms": _ms(opens),
        "open_epsilon_last_ms": 1e3 * opens[-1],
        "epsilon": epsilon,
        "file_bytes": path.stat().st_size,
    }


def _write_ms(folder: Path, repetitions: int) -> float:
    """The fsync-ed atomic write alone (the same for both ledgers)."""
    path, times = folder / "write.json", []
    for _ in range(repetitions):
        started = time.perf_counter()
        _atomic_write(path, {"history": [[1.0, 0.3, 3]]})
        times.append(time.perf_counter() - started)
    return _ms(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")  # Opacus: "optimal order is the largest alpha"
    rounds = 4 if args.quick else args.rounds
    result: dict[str, Any] = {
        "rounds": rounds,
        "delta": DELTA,
        "python": platform.python_version(),
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="moodfed-device-bench-") as name:
        folder = Path(name)
        for scenario in ("steady", "growing"):
            result["scenarios"][scenario] = {
                kind: _run(kind, scenario, rounds, folder) for kind in KINDS
            }
        result["write_ms"] = _write_ms(folder, 50)
    return result


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"device DP-SGD ledger, {result['rounds']} rounds per scenario, "
            f"delta {result['delta']:g} (medians; the fsync-ed write alone, 50 times: "
            f"{result['write_ms']:.2f} ms)"
        ),
        caption=(
            "warm: one open ledger, caches kept. fresh: caches cleared, the file opened. "
            "Every record includes the fsync-ed write. steady: same q every round; "
            "growing: q = 32/n with n + 1 each round."
        ),
    )
    table.add_column("scenario")
    table.add_column("ledger")
    columns = {
        "record_ms": "record ms (warm process)",
        "record_last_ms": "last round",
        "fresh_record_ms": "open+record ms (fresh process)",
        "fresh_record_last_ms": "last round",
        "open_epsilon_ms": "open+epsilon ms (fresh process)",
        "open_epsilon_last_ms": "last round",
    }
    for title in [*columns.values(), "epsilon", "file bytes"]:
        table.add_column(title, justify="right")
    for scenario, kinds in result["scenarios"].items():
        for kind, row in kinds.items():
            table.add_row(
                scenario,
                kind,
                *(f"{row[key]:.2f}" for key in columns),
                f"{row['epsilon']:.4f}",
                str(row["file_bytes"]),
            )
    Console(width=150).print(table)
    for scenario, kinds in result["scenarios"].items():
        old, new = kinds.values()
        print(
            f"{scenario}: record {old['record_ms']:.1f} ms -> {new['record_ms']:.2f} ms "
            f"({old['record_ms'] / new['record_ms']:.0f}x), fresh open+record "
            f"{old['fresh_record_ms']:.1f} ms -> {new['fresh_record_ms']:.2f} ms "
            f"({old['fresh_record_ms'] / new['fresh_record_ms']:.1f}x), open+epsilon "
            f"{old['open_epsilon_ms']:.1f} ms -> {new['open_epsilon_ms']:.2f} ms "
            f"({old['open_epsilon_ms'] / new['open_epsilon_ms']:.0f}x); epsilon "
            f"{old['epsilon']:.4f} (Opacus) vs {new['epsilon']:.4f} (dp-accounting), "
            f"{100 * (new['epsilon'] / old['epsilon'] - 1):+.2f}%"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds per scenario")
    parser.add_argument("--quick", action="store_true", help="a few rounds: a smoke run")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    result = run(args)
    show(result)
    print(json.dumps(result, default=lambda value: None if math.isnan(value) else value))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
