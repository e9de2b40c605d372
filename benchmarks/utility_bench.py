"""Utility benchmark: how good is the next-day mood model, and what does privacy cost?

Run from the repository root::

    python benchmarks/utility_bench.py            # 2,000 devices, 20% held out (6-15 min)
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
  device's Opacus RDP epsilon (``privacy.DeviceAccountant``) for the DP-SGD steps it ran;
- DP-FedAvg under secure aggregation with distributed noise (the default mode), at
  ``--distributed-epsilons`` (3 by default): as a secure round runs it, every training
  device is in the sum (the cohort n is all of them; each adds its update when its coin
  says so, zeros otherwise), the round's survivor floor t is the secure plan's
  (``server.secagg.plan_round``, i.e. ``choose_graph(n).min_survivors``), sigma comes
  from ``privacy.skellam_noise_for_budget`` for the same epsilon, rounds and q, and each
  device's vector is encoded with its Skellam noise share (``DistributedSkellam.encode``)
  and the encodings summed modulo 2^32 (``server.secagg.local_sum``: SecAgg+'s masks
  cancel in that sum), decoded and divided by the expected count
  (``server.aggregation.apply_average``), as ``TrainingRound.secure_aggregate`` does.
  The coins are the central rows' Poisson sample (same seed), so the two differ only in
  their noise. With no dropouts all n devices' noise shares are in the sum, so its noise
  std is sigma C sqrt(n / t), about 1.22 sigma C here (the price of tolerating a third
  of the devices dropping out); the accountant charges the Skellam mechanism.

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
from collections.abc import Iterator
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
from client_sdk.secagg import RoundParams  # noqa: E402
from client_sdk.sim.synthetic import SyntheticPopulation  # noqa: E402
from client_sdk.training import LocalTrainingConfig, train_nonprivate  # noqa: E402
from privacy import Accountant, DeviceAccountant, PrivacyEvent, noise_for_budget  # noqa: E402
from privacy.distributed import DistributedSkellam, skellam_noise_for_budget  # noqa: E402
from server.aggregation import apply_average, next_global  # noqa: E402
from server.sampling import poisson_sample, round_rng  # noqa: E402
from server.secagg import local_sum, plan_round  # noqa: E402
from server.training import MODULUS_BITS  # noqa: E402

DELTA = 1e-5
DEVICE_DELTA = 1e-4
TARGET_EPSILON = 3.0
TARGET_OF_CENTRALIZED = 1.10
TARGET_DISTRIBUTED_OF_CENTRAL = 1.02  # distributed noise within 2% of central, same epsilon

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
    distributed: bool = False,
) -> dict[str, Any]:
    """FedAvg (epsilon None) or DP-FedAvg at user-level ``epsilon``, in process: central
    Gaussian noise, or (``distributed``) a secure sum of Skellam-noised encodings."""
    started = time.perf_counter()
    eligible = list(range(len(data.train)))
    q = min(1.0, expected / len(eligible))
    secure = _secure_setup(data, q=q, rounds=rounds, epsilon=epsilon) if distributed else None
    if secure is not None:
        sigma = secure.mechanism.noise_multiplier
    elif epsilon is not None:
        sigma = noise_for_budget(sampling_rate=q, rounds=rounds, epsilon=epsilon, delta=DELTA)
    else:
        sigma = 0.0
    weights = get_weights(create_model(seed=seed))
    participations: Counter[int] = Counter()
    with Accountant("sqlite://", epsilon_budget=epsilon or 1e9, delta=DELTA) as accountant:
        for round_number in range(1, rounds + 1):
            sampled = poisson_sample(eligible, rate=q, rng=round_rng(seed, round_number))
            if epsilon is None:
                weights = _fedavg_round(weights, sampled, data)
                continue
            event = PrivacyEvent.training_round(
                sampling_rate=q,
                noise_multiplier=sigma,
                skellam=secure.mechanism if secure is not None else None,
            )
            accountant.charge(
                data.keys, event, purpose="model-training", release_id=f"round-{round_number}"
            )
            updates: dict[int, list[np.ndarray]] = {}
            for index in sampled:
                X, y = data.train[index]
                updates[index] = clipped_update(
                    weights,
                    X,
                    y,
                    training=LOCAL,
                    clipping_norm=CLIPPING_NORM,
                    accountant=None,
                )
                participations[index] += 1
            if secure is not None:
                weights = secure.round(
                    weights, updates, eligible=eligible, q=q, seed=seed, round_number=round_number
                )
                continue
            weights = next_global(
                weights,
                list(updates.values()),
                clipping_norm=CLIPPING_NORM,
                noise_multiplier=sigma,
                expected_count=q * len(eligible),
                rng=round_rng(seed, round_number, stream=1),
            )
        user_epsilon = accountant.max_epsilon() if epsilon is not None else None
    raw, rounded = model_mae(weights, data)
    if epsilon is None:
        method = "FedAvg, non-private"
    elif secure is not None:
        method = f"DP-FedAvg, SecAgg+ distributed Skellam, ε={epsilon:g}"
    else:
        method = f"DP-FedAvg, ε={epsilon:g}"
    row: dict[str, Any] = {
        "method": method,
        "noise": "none" if epsilon is None else ("distributed" if secure else "central"),
        "mae": raw,
        "mae_rounded": rounded,
        "rounds": rounds,
        "q": q,
        "sigma": sigma,
        "user_epsilon": user_epsilon,
        "seconds": time.perf_counter() - started,
    }
    if epsilon is not None:
        # The std of the noise in each coordinate of the summed updates, over C.
        row["noise_std_over_c"] = (
            secure.mechanism.noise_std(len(eligible)) / CLIPPING_NORM if secure else sigma
        )
        device = device_epsilons(participations, data)
        row["device_epsilon_median"] = device[0]
        row["device_epsilon_max"] = device[1]
    if secure is not None:
        row["cohort"] = len(eligible)
        row["min_survivors"] = secure.params.min_survivors
    return row


@dataclass
class SecureSetup:
    """A secure round's plan over every training device and its Skellam encoding."""

    params: RoundParams
    mechanism: DistributedSkellam

    def round(
        self,
        weights: list[np.ndarray],
        updates: dict[int, list[np.ndarray]],
        *,
        eligible: list[int],
        q: float,
        seed: int,
        round_number: int,
    ) -> list[np.ndarray]:
        """What a secure round reveals and the server makes of it: every device's vector
        (its clipped update, or zeros without one) encoded with its noise share, summed
        modulo 2^k, decoded, over the expected count."""
        zeros = np.zeros(self.mechanism.dimension)

        def inputs() -> Iterator[np.ndarray]:
            for index in eligible:
                update = updates.get(index)
                yield (
                    zeros
                    if update is None
                    else np.concatenate([u.astype(np.float64).ravel() for u in update])
                )

        rng = np.random.default_rng([seed, round_number, 2])  # rounding and noise shares
        total = local_sum(self.params, self.mechanism, inputs(), rng=rng)
        noisy_sum = self.mechanism.decode(total.total)
        return apply_average(weights, noisy_sum / (q * len(eligible)))


def _secure_setup(data: Data, *, q: float, rounds: int, epsilon: float | None) -> SecureSetup:
    """The secure plan for a cohort of every training device, and the Skellam noise that
    keeps ``rounds`` rounds at rate q within ``epsilon`` for its survivor floor."""
    if epsilon is None:
        raise ValueError("distributed noise needs an epsilon")
    n = len(data.train)
    dimension = sum(int(np.prod(w.shape)) for w in get_weights(create_model(seed=0)))
    params = plan_round(
        range(1, n + 1),
        run_id=1,
        round_label="utility",
        modulus_bits=MODULUS_BITS,
        vector_length=dimension,
    )
    sigma = skellam_noise_for_budget(
        epsilon=epsilon,
        delta=DELTA,
        sampling_rate=q,
        rounds=rounds,
        clip_norm=CLIPPING_NORM,
        dimension=dimension,
        max_devices=n,
        min_survivors=params.min_survivors,
        bits=MODULUS_BITS,
    )
    mechanism = DistributedSkellam(
        clip_norm=CLIPPING_NORM,
        dimension=dimension,
        max_devices=n,
        min_survivors=params.min_survivors,
        noise_multiplier=sigma,
        bits=MODULUS_BITS,
    )
    return SecureSetup(params=params, mechanism=mechanism)


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
    runs = [(epsilon, False) for epsilon in args.epsilons]
    runs += [(epsilon, True) for epsilon in args.distributed_epsilons]
    for epsilon, distributed in runs:
        rows.append(
            federated(
                data,
                rounds=args.rounds,
                expected=args.expected,
                seed=args.seed,
                epsilon=epsilon,
                distributed=distributed,
            )
        )
    persistence = rows[0]["mae"]
    central = next(row["mae"] for row in rows if row["method"].startswith("centralized"))

    def at_target(noise: str) -> dict[str, Any] | None:
        return next(
            (
                row
                for row in rows
                if row.get("noise") == noise and row["method"].endswith(f"ε={TARGET_EPSILON:g}")
            ),
            None,
        )

    target, distributed_target = at_target("central"), at_target("distributed")
    targets: dict[str, Any] | None = None
    if target is not None:
        targets = {
            "epsilon": TARGET_EPSILON,
            "beats_persistence": target["mae"] < persistence,
            "within_10pct_of_centralized": target["mae"] <= TARGET_OF_CENTRALIZED * central,
            "ratio_to_centralized": target["mae"] / central,
        }
        if distributed_target is not None:
            targets["distributed"] = {
                "beats_persistence": distributed_target["mae"] < persistence,
                "ratio_to_central_noise": distributed_target["mae"] / target["mae"],
                "within_2pct_of_central_noise": distributed_target["mae"]
                <= TARGET_DISTRIBUTED_OF_CENTRAL * target["mae"],
            }
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
        "targets": targets,
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
            f"user-level ε at δ={result['delta']:g} (RDP, Poisson-subsampled Gaussian or "
            "Skellam, max over users); noise/C: std of the noise in each coordinate of the "
            "summed updates over C (distributed: σ sqrt(n/t), every device's share in the "
            f"sum); device ε: record-level DP-SGD at δ={result['device_delta']:g}, median / "
            "max over devices that trained. MAE rounded: the prediction rounded to the 1-5 "
            "scale."
        ),
    )
    for column in (
        "method",
        "rounds",
        "q",
        "σ",
        "noise/C",
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
            f"{row['noise_std_over_c']:.3f}" if "noise_std_over_c" in row else "-",
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
        distributed = targets.get("distributed")
        if distributed is not None:
            print(
                f"distributed noise at ε={targets['epsilon']:g}: within 2% of central noise: "
                f"{'met' if distributed['within_2pct_of_central_noise'] else 'MISSED'} "
                f"({(distributed['ratio_to_central_noise'] - 1) * 100:+.2f}%); beats "
                f"persistence: {'met' if distributed['beats_persistence'] else 'MISSED'}"
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
    parser.add_argument(
        "--distributed-epsilons",
        type=float,
        nargs="*",
        default=[TARGET_EPSILON],
        help="epsilons of DP-FedAvg under SecAgg+ with distributed Skellam noise",
    )
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
