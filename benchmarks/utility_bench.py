"""Utility benchmark: how good is the next-day mood model, and what does privacy cost?

Run from the repository root::

    python benchmarks/utility_bench.py            # 2,000 devices, 20% held out (~15 min)
    python benchmarks/utility_bench.py --quick    # a smaller smoke run

A synthetic population (``SyntheticPopulation``, 365 days) is split by device: 80% take
part, 20% are held out and only ever used for the test MAE of next-day mood. Compared:

- persistence: tomorrow = yesterday's mood (the ``mood_lag1`` feature: yesterday's
  logged mood, or the person's mean so far when yesterday was not logged);
- each person's own mean mood so far (the ``person_mean_mood`` feature);
- centralized, non-private: the same model trained on every training device's examples
  pooled (plain SGD), the upper bound no private method should beat;
- FedAvg, non-private: the same rounds and sampling rate, plain local SGD, no clipping,
  no noise, updates averaged over the devices that answered;
- DP-FedAvg at user-level epsilon 1, 3 and 8 (delta 1e-5): sigma from
  ``privacy.noise_for_budget`` for the planned rounds at q = expected / eligible; the
  device side is ``client_sdk.client_app.clipped_update`` (record-level DP-SGD through
  ``train_locally``, then the update clipped to C), the server side
  ``server.aggregation.next_global`` (clip again, Gaussian noise sigma * C, divide by the
  expected count), the sample ``server.sampling.poisson_sample``; every round is charged
  to a ``privacy.Accountant`` for every training device (all of them consent here), whose
  largest epsilon is the one reported. The device-side (record-level) epsilon is each
  device's Opacus RDP epsilon (``privacy.DeviceAccountant``) for the DP-SGD steps it ran.

What is measured: the same server and device functions the ServerApp and ClientApp call,
driven in one process without Flower messaging, Ray, attestation or the consent service
(those do not change the model; ``training_bench.py`` measures their cost). MAE is shown
both as predicted (a real number) and rounded to the 1-5 scale, since diary moods are
integers and the rounded prediction is the better guess of an integer. No timing is
asserted; the targets are printed with whether they are met.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from client_sdk.client_app import clipped_update  # noqa: E402
from client_sdk.features import feature_names, make_examples  # noqa: E402
from client_sdk.model import create_model, get_weights, predict, set_weights  # noqa: E402
from client_sdk.sim.synthetic import SyntheticPopulation  # noqa: E402
from client_sdk.training import LocalTrainingConfig, train_nonprivate  # noqa: E402
from privacy import Accountant, DeviceAccountant, PrivacyEvent, noise_for_budget  # noqa: E402
from server.aggregation import next_global  # noqa: E402
from server.sampling import poisson_sample, round_rng  # noqa: E402

DELTA = 1e-5
DEVICE_DELTA = 1e-4
TARGET_EPSILON = 3.0
TARGET_OF_CENTRALIZED = 1.10

# The settings the DP-FedAvg rows use (chosen on this population; see the report).
CLIPPING_NORM = 0.5
# Two Poisson-sampled steps at q = 0.5 a round (about one pass over a year's diary of
# ~250 examples; the same for every device whatever its diary holds).
LOCAL = LocalTrainingConfig(
    steps=2,
    sample_rate=0.5,
    learning_rate=0.5,
    noise_multiplier=1.0,
    max_grad_norm=1.0,
    delta=DEVICE_DELTA,
)
NONPRIVATE_LOCAL = LocalTrainingConfig(steps=8, sample_rate=0.125, learning_rate=0.1)
# Centralized: five epochs of plain SGD, the learning rate decaying over the last three.
CENTRAL_RATES = (0.05, 0.05, 0.02, 0.01, 0.005)
CENTRAL_BATCH = 64


@dataclass
class Data:
    train: list[tuple[np.ndarray, np.ndarray]]
    X_test: np.ndarray
    y_test: np.ndarray
    keys: list[str]


def load(devices: int, held_out: float, days: int, seed: int) -> Data:
    population = SyntheticPopulation(devices, days=days, seed=seed)
    cut = devices - round(devices * held_out)
    examples = [make_examples(population.daily_series(i)) for i in range(devices)]
    return Data(
        train=examples[:cut],
        X_test=np.concatenate([x for x, _ in examples[cut:]]),
        y_test=np.concatenate([y for _, y in examples[cut:]]),
        keys=[population.device_key_for(i).device_key for i in range(cut)],
    )


def mae(prediction: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """MAE as predicted, and of the prediction rounded to the 1-5 scale."""
    clipped = np.clip(prediction.astype(np.float64), 1.0, 5.0)
    return float(np.mean(np.abs(clipped - y))), float(np.mean(np.abs(np.rint(clipped) - y)))


def model_mae(weights: list[np.ndarray], data: Data) -> tuple[float, float]:
    model = create_model()
    set_weights(model, weights)
    return mae(predict(model, data.X_test), data.y_test)


def baselines(data: Data) -> list[dict[str, Any]]:
    names = feature_names()
    lag1 = 3.0 + 2.0 * data.X_test[:, names.index("mood_lag1")]
    own = 3.0 + 2.0 * data.X_test[:, names.index("person_mean_mood")]
    rows = []
    for name, prediction in (("persistence (yesterday's mood)", lag1), ("own mean so far", own)):
        raw, rounded = mae(prediction, data.y_test)
        rows.append({"method": name, "mae": raw, "mae_rounded": rounded})
    return rows


def centralized(data: Data, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    X = np.concatenate([x for x, _ in data.train])
    y = np.concatenate([y for _, y in data.train])
    model = create_model(seed=seed)
    for epoch, rate in enumerate(CENTRAL_RATES):  # an epoch: n / batch steps at q = batch / n
        config = LocalTrainingConfig(
            steps=-(-len(y) // CENTRAL_BATCH),
            sample_rate=CENTRAL_BATCH / len(y),
            learning_rate=rate,
        )
        train_nonprivate(model, X, y, config=config, seed=seed + epoch)
    raw, rounded = model_mae(get_weights(model), data)
    return {
        "method": "centralized, non-private",
        "mae": raw,
        "mae_rounded": rounded,
        "seconds": time.perf_counter() - started,
        "detail": f"{len(CENTRAL_RATES)} epochs over {len(y):,} pooled examples",
    }


def federated(
    data: Data,
    *,
    rounds: int,
    expected: float,
    seed: int,
    epsilon: float | None,
) -> dict[str, Any]:
    """FedAvg (epsilon None) or DP-FedAvg at user-level ``epsilon``, in process."""
    started = time.perf_counter()
    eligible = list(range(len(data.train)))
    q = min(1.0, expected / len(eligible))
    sigma = (
        noise_for_budget(sampling_rate=q, rounds=rounds, epsilon=epsilon, delta=DELTA)
        if epsilon is not None
        else 0.0
    )
    weights = get_weights(create_model(seed=seed))
    participations: Counter[int] = Counter()
    with Accountant("sqlite://", epsilon_budget=epsilon or 1e9, delta=DELTA) as accountant:
        for round_number in range(1, rounds + 1):
            sampled = poisson_sample(eligible, rate=q, rng=round_rng(seed, round_number))
            if epsilon is None:
                weights = _fedavg_round(weights, sampled, data)
                continue
            event = PrivacyEvent.training_round(sampling_rate=q, noise_multiplier=sigma)
            accountant.charge(
                data.keys, event, purpose="model-training", release_id=f"round-{round_number}"
            )
            updates = []
            for index in sampled:
                X, y = data.train[index]
                updates.append(
                    clipped_update(
                        weights,
                        X,
                        y,
                        training=LOCAL,
                        clipping_norm=CLIPPING_NORM,
                        accountant=None,
                    )
                )
                participations[index] += 1
            weights = next_global(
                weights,
                updates,
                clipping_norm=CLIPPING_NORM,
                noise_multiplier=sigma,
                expected_count=q * len(eligible),
                rng=round_rng(seed, round_number, stream=1),
            )
        user_epsilon = accountant.max_epsilon() if epsilon is not None else None
    raw, rounded = model_mae(weights, data)
    row: dict[str, Any] = {
        "method": "FedAvg, non-private" if epsilon is None else f"DP-FedAvg, ε={epsilon:g}",
        "mae": raw,
        "mae_rounded": rounded,
        "rounds": rounds,
        "q": q,
        "sigma": sigma,
        "user_epsilon": user_epsilon,
        "seconds": time.perf_counter() - started,
    }
    if epsilon is not None:
        device = device_epsilons(participations, data)
        row["device_epsilon_median"] = device[0]
        row["device_epsilon_max"] = device[1]
    return row


def _fedavg_round(weights: list[np.ndarray], sampled: list[int], data: Data) -> list[np.ndarray]:
    if not sampled:
        return weights
    model = create_model()
    total = [np.zeros_like(w, dtype=np.float64) for w in weights]
    for index in sampled:
        set_weights(model, weights)
        X, y = data.train[index]
        result = train_nonprivate(model, X, y, config=NONPRIVATE_LOCAL)
        for running, new, old in zip(total, result.weights, weights, strict=True):
            running += new - old
    return [(w + t / len(sampled)).astype(w.dtype) for w, t in zip(weights, total, strict=True)]


def device_epsilons(participations: Counter[int], data: Data) -> tuple[float, float]:
    """Median and max record-level epsilon over devices that trained (Opacus RDP)."""
    with tempfile.TemporaryDirectory(prefix="moodfed-utility-") as name:
        return _device_epsilons(participations, data, Path(name))


def _device_epsilons(participations: Counter[int], data: Data, folder: Path) -> tuple[float, float]:
    cache: dict[int, float] = {}  # q and steps do not depend on the diary: only on the rounds
    epsilons = []
    for times in participations.values():
        if times not in cache:
            ledger = DeviceAccountant(
                folder / f"{times}.json", epsilon_budget=1e9, delta=DEVICE_DELTA
            )
            ledger.record(
                noise_multiplier=LOCAL.noise_multiplier,
                sample_rate=LOCAL.sample_rate,
                steps=LOCAL.steps * times,
            )
            cache[times] = ledger.epsilon()
        epsilons.append(cache[times])
    return statistics.median(epsilons), max(epsilons)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    logging.getLogger("absl").setLevel(logging.ERROR)
    started = time.perf_counter()
    data = load(args.devices, args.held_out, args.days, args.seed)
    rows = baselines(data)
    rows.append(centralized(data, args.seed))
    rows.append(
        federated(data, rounds=args.rounds, expected=args.expected, seed=args.seed, epsilon=None)
    )
    for epsilon in args.epsilons:
        rows.append(
            federated(
                data, rounds=args.rounds, expected=args.expected, seed=args.seed, epsilon=epsilon
            )
        )
    persistence = rows[0]["mae"]
    central = next(row["mae"] for row in rows if row["method"].startswith("centralized"))
    target = next(
        (row for row in rows if row["method"] == f"DP-FedAvg, ε={TARGET_EPSILON:g}"), None
    )
    return {
        "devices": args.devices,
        "training_devices": len(data.train),
        "held_out_devices": args.devices - len(data.train),
        "test_examples": len(data.y_test),
        "days": args.days,
        "delta": DELTA,
        "device_delta": DEVICE_DELTA,
        "clipping_norm": CLIPPING_NORM,
        "local": {
            "steps": LOCAL.steps,
            "sample_rate": LOCAL.sample_rate,
            "learning_rate": LOCAL.learning_rate,
            "noise_multiplier": LOCAL.noise_multiplier,
            "max_grad_norm": LOCAL.max_grad_norm,
        },
        "rows": rows,
        "targets": None
        if target is None
        else {
            "epsilon": TARGET_EPSILON,
            "beats_persistence": target["mae"] < persistence,
            "within_10pct_of_centralized": target["mae"] <= TARGET_OF_CENTRALIZED * central,
            "ratio_to_centralized": target["mae"] / central,
        },
        "seconds": time.perf_counter() - started,
    }


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = result["rows"]
    persistence = rows[0]["mae"]
    central = next(row["mae"] for row in rows if row["method"].startswith("centralized"))
    table = Table(
        title=(
            f"next-day mood MAE on {result['held_out_devices']} held-out devices "
            f"({result['test_examples']:,} days); {result['training_devices']} training "
            f"devices, {result['days']}-day diaries"
        ),
        caption=(
            f"user-level ε at δ={result['delta']:g} (RDP, Poisson-subsampled Gaussian, "
            f"max over users); device ε: record-level DP-SGD at δ={result['device_delta']:g}, "
            "median / max over devices that trained. MAE rounded: the prediction rounded "
            "to the 1-5 scale."
        ),
    )
    for column in (
        "method",
        "rounds",
        "q",
        "σ",
        "user ε",
        "device ε",
        "MAE",
        "MAE rounded",
        "vs persistence",
        "vs centralized",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        device = (
            f"{row['device_epsilon_median']:.1f} / {row['device_epsilon_max']:.1f}"
            if "device_epsilon_median" in row
            else "-"
        )
        table.add_row(
            row["method"],
            str(row.get("rounds", "-")),
            f"{row['q']:.3f}" if "q" in row else "-",
            f"{row['sigma']:.3f}" if row.get("sigma") else "-",
            f"{row['user_epsilon']:.3f}" if row.get("user_epsilon") is not None else "-",
            device,
            f"{row['mae']:.4f}",
            f"{row['mae_rounded']:.4f}",
            f"{(row['mae'] / persistence - 1) * 100:+.1f}%",
            f"{(row['mae'] / central - 1) * 100:+.1f}%",
        )
    Console(width=140).print(table)
    targets = result["targets"]
    if targets is not None:
        print(
            f"target at ε={targets['epsilon']:g}: beats persistence: "
            f"{'met' if targets['beats_persistence'] else 'MISSED'}; within 10% of "
            f"centralized: {'met' if targets['within_10pct_of_centralized'] else 'MISSED'} "
            f"({(targets['ratio_to_centralized'] - 1) * 100:+.1f}%)"
        )
    print(f"total {result['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--held-out", type=float, default=0.2)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--expected", type=float, default=320.0, help="devices per round")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="400 devices, 10 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.rounds, args.expected = 400, 10, 64.0
    result = run(args)
    show(result)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps({"benchmark": "moodfed.utility", **result}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
