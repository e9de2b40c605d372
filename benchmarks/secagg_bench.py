"""Secure-aggregation benchmark: what one training round costs under SecAgg+ with distributed DP.

Run from the repository root::

    python benchmarks/secagg_bench.py                    # 50, 200 and 500 devices (~75 min)
    python benchmarks/secagg_bench.py --quick            # 20 and 50 devices (~1 min)
    python benchmarks/secagg_bench.py --devices 200 --repetitions 5 --flower-repetitions 2
    python benchmarks/secagg_bench.py --flower-max-devices 200   # no Flower at 500 (~20 min)

One training round over ``n`` devices, every one of them training (q = 1, so the
secure sum's cohort and the plain round's sample are the same ``n`` devices), three ways:

(a) **secure**: moodfed's round as the ServerApp runs it (``server.training.TrainingRound``
    with ``aggregation="secure"``): consent query over HTTP, hard-stop check and charge of
    every eligible user, the SecAgg+ plan (``server.secagg.plan_round``) and its Skellam
    encoding (``privacy.DistributedSkellam``), the four exchanges of
    ``server.secagg.secure_sum``, decoding, the release store write. On each device
    (``client_sdk.sim.client_app``, the production handlers): signed key advertisement,
    encrypted shares, consent and policy gate, DP-SGD with the device's ledger, clipping,
    encoding with its noise share, masking, unmasking shares.
(b) **plain**: the same round with ``aggregation="central"`` (a trusted server: clipped
    updates in the clear, Gaussian noise added on the server); same devices, same gate,
    charge, DP-SGD and ledger.
(c) **Flower SecAgg+**: Flower 1.41's own SecAgg+ as its ``flower-secure-aggregation``
    example runs it: ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` over a
    ``LegacyContext`` with the legacy ``FedAvg`` (every device, unweighted:
    ``num_examples = max_weight = 1``), and a ClientApp with ``secaggplus_mod`` whose
    ``fit`` runs the same DP-SGD and clipping (``client_sdk.client_app.clipped_update``,
    same steps, rate and noise) on the same diary, with no consent gate, no device
    ledger, no attestation and no noise share. Its graph has the same degree and
    threshold as moodfed's plan (``num_shares = degree + 1``).

All three run on the same in-process grid (``server.sim.grid.InProcessGrid``: Flower's
Grid interface, ClientApps called in this process; Flower's workflow runs on it
unchanged), so no Ray and no network are timed. Devices are handled one at a time by
default (``--workers 1``): the round's wall time is then the server's and every
device's work end to end, as on one core, and the process's CPU time during a device's
call is that device's, threads it starts included (Flower's Shamir sharing runs in a
thread pool). Attestation (once per run, not per round) runs before the rounds and is
shown apart.

Every message and reply crosses a protobuf round trip (``flwr.common.serde``'s
``message_to_proto`` and back), as on the wire, in all three: each device gets its own
copy (Flower's SecAgg+ workflow sends one shared record to every node and its client mod
changes it, so it cannot run without copies) and the serialized sizes are the bytes.

Measured per round: wall time (the round trips included); per-device CPU (a Flower mod
placed first around the app, so the handlers and Flower's own mods are in it, the round
trip is not; summed per device over the round); server CPU (the process's CPU time over
the round less the devices' calls and round trips: the ServerApp logic, and the consent
service answering its eligibility query); bytes down and up per device. With more than
one worker, per-device and server CPU are per thread (a device's helper threads then
count as nobody's). The contenders run interleaved, in rotating order, after one
warm-up round: moodfed's two rounds ``--repetitions`` times; Flower's SecAgg+, which
takes minutes a round from 200 devices on, ``--flower-repetitions`` times (its warm-up
only at the first size). ``--flower-max-devices N`` leaves Flower's SecAgg+ out above N
devices (at 500 it takes about 55 minutes a round); those rows show no Flower figures and
no ratio against it. Each figure is the median over its rounds, each ratio the
median of the ratios within a repetition both ran. Targets (issue 9): secure <= 3x
plain, and secure no slower than Flower's SecAgg+.

The result is a rich table and one JSON line.
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
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flwr
import numpy as np
import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from server.secagg import choose_graph  # noqa: E402
from server.settings import Aggregation, TrainSettings  # noqa: E402
from server.sim.grid import InProcessGrid  # noqa: E402
from server.training import TrainingRound, TrainingRun, initial_weights  # noqa: E402

TARGET_VS_PLAIN = 3.0
TARGET_VS_FLOWER = 1.0
FED_DAYS = 120
# The local training every contender runs (as benchmarks/training_bench.py part (b)).
LOCAL_STEPS = 3
SAMPLE_RATE = 0.3
LEARNING_RATE = 0.1
DEVICE_NOISE = 1.0
DEVICE_DELTA = 1e-4
CLIPPING_NORM = 1.0
NOISE_MULTIPLIER = 1.0

CONTENDERS = ("secure", "plain", "flower")
LABELS = {
    "secure": "(a) moodfed secure (SecAgg+, Skellam)",
    "plain": "(b) moodfed plain (central)",
    "flower": "(c) Flower SecAgg+",
}


# -- metering the devices ---------------------------------------------------------------


class Meter:
    """A Flower mod, first around a ClientApp: the wire and the device's CPU.

    Every message and reply crosses a protobuf round trip
    (``flwr.common.serde.message_to_proto`` and back), as it would on the wire: the
    device gets its own copy (Flower's SecAgg+ workflow sends one shared record to every
    node, which its client mod then changes) and the serialized sizes are the bytes down
    and up. The rest of the call (Flower's other mods and the app) is the device's CPU:
    the process's CPU time when devices run one at a time (``serial``: threads a handler
    starts are then counted, e.g. Flower's Shamir sharing runs in a thread pool), else
    the CPU time of the thread running it.
    """

    def __init__(self, *, serial: bool) -> None:
        self.clock = time.process_time if serial else time.thread_time
        self._lock = threading.Lock()
        self.cpu: dict[int, float] = {}
        self.down: dict[int, int] = {}
        self.up: dict[int, int] = {}
        self.calls = 0
        self.errors = 0
        self.metered_cpu = 0.0
        self._main = threading.get_ident()

    def reset(self) -> None:
        """Start a new round: forget the last one's figures."""
        with self._lock:
            self.cpu, self.down, self.up = {}, {}, {}
            self.calls = 0
            self.errors = 0
            self.metered_cpu = 0.0
            self._main = threading.get_ident()

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        entered = self.clock()
        delivered, down = _wire(message)
        started = self.clock()
        reply = call_next(delivered, context)
        spent = self.clock() - started
        returned, up = _wire(reply)
        node = message.metadata.dst_node_id
        with self._lock:
            self.cpu[node] = self.cpu.get(node, 0.0) + spent
            self.down[node] = self.down.get(node, 0) + down
            self.up[node] = self.up.get(node, 0) + up
            self.calls += 1
            self.errors += reply.has_error()
            if self.clock is time.process_time or threading.get_ident() == self._main:
                self.metered_cpu += self.clock() - entered  # not the server's
        return returned


def _wire(message: Message) -> tuple[Message, int]:
    """The message as the other end would get it, and its size in bytes."""
    from flwr.common.serde import message_from_proto, message_to_proto

    proto = message_to_proto(message)
    return message_from_proto(proto), int(proto.ByteSize())


@dataclass
class RoundCost:
    """One round of one contender."""

    wall_s: float
    server_cpu_s: float
    device_cpu_s: list[float]
    bytes_down: list[int]
    bytes_up: list[int]


def _collect(
    meter: Meter, *, wall: float, server_cpu: float, n: int, calls: int, name: str
) -> RoundCost:
    """The round's figures, once every device answered every one of its ``calls`` messages."""
    if meter.errors or len(meter.cpu) != n or meter.calls != n * calls:
        raise SystemExit(
            f"{name}: {meter.errors} error repl(ies), {len(meter.cpu)} of {n} devices reached, "
            f"{meter.calls} of {n * calls} messages handled"
        )
    return RoundCost(
        wall_s=wall,
        server_cpu_s=server_cpu - meter.metered_cpu,
        device_cpu_s=list(meter.cpu.values()),
        bytes_down=list(meter.down.values()),
        bytes_up=list(meter.up.values()),
    )


# -- (a) and (b): moodfed's round --------------------------------------------------------


def _device_defaults(sim_root: Path) -> dict[str, Any]:
    """The simulated devices' node config: their federation and their own policy (a
    budget that never runs out during the benchmark; central allowed for round (b))."""
    return {
        "sim-root": str(sim_root),
        "device-epsilon-budget": 1e9,
        "device-delta": DEVICE_DELTA,
        "device-allow-central": True,
    }


def _training_run(
    grid: InProcessGrid,
    *,
    aggregation: Aggregation,
    devices: int,
    rounds: int,
    data_dir: Path,
    stack: ExitStack,
    eligibility: Any,
    attestations: Any,
) -> TrainingRun:
    from server.releases import ReleaseStore

    settings = TrainSettings(
        rounds=rounds,
        expected_devices=float(devices),  # q = 1: every eligible device trains
        noise_multiplier=NOISE_MULTIPLIER,
        clipping_norm=CLIPPING_NORM,
        epsilon_budget=1e9,
        delta=1e-5,
        local_steps=LOCAL_STEPS,
        sample_rate=SAMPLE_RATE,
        learning_rate=LEARNING_RATE,
        device_noise_multiplier=DEVICE_NOISE,
        aggregation=aggregation,
        round_timeout=3600.0,
        data_dir=data_dir,
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    store = stack.enter_context(ReleaseStore(settings.resolved_release_database_url))
    accountant = stack.enter_context(settings.open_accountant())
    run = TrainingRun(
        grid=grid,
        settings=settings,
        eligibility=eligibility,
        accountant=accountant,
        store=store,
        attestations=attestations,
    )
    run.record_start(model="benchmark", metric_label="none")
    return run


def _moodfed_round(
    run: TrainingRun, number: int, weights: list[np.ndarray], meter: Meter
) -> RoundCost:
    meter.reset()
    cpu, wall = meter.clock(), time.perf_counter()
    report, _ = TrainingRound(run, number)(weights)
    wall, cpu = time.perf_counter() - wall, meter.clock() - cpu
    name = f"moodfed {run.settings.aggregation} round {number}"
    if report.aborted is not None or report.contributed != len(report.eligible):
        raise SystemExit(f"{name}: {report.contributed} contributed, aborted: {report.aborted}")
    calls = 4 if run.settings.aggregation == "secure" else 1  # SecAgg+'s four exchanges
    return _collect(
        meter, wall=wall, server_cpu=cpu, n=len(report.eligible), calls=calls, name=name
    )


# -- (c): Flower's SecAgg+ ----------------------------------------------------------------


def _flower_client_app(sim_root: Path, meter: Meter) -> ClientApp:
    """Flower's SecAgg+ ClientApp (``secaggplus_mod``, as in Flower's example) whose ``fit``
    is the same DP-SGD and clipping on the same diary; nothing else."""
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod

    from client_sdk.client_app import clipped_update
    from client_sdk.features import make_examples
    from client_sdk.sim import FederationSpec
    from client_sdk.training import LocalTrainingConfig

    spec = FederationSpec.load(sim_root)
    training = LocalTrainingConfig(
        steps=LOCAL_STEPS,
        sample_rate=SAMPLE_RATE,
        learning_rate=LEARNING_RATE,
        noise_multiplier=DEVICE_NOISE,
        max_grad_norm=1.0,
        delta=DEVICE_DELTA,
    )

    class DPClient(NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(
            self, parameters: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            torch.set_num_threads(1)
            X, y = make_examples(spec.population().daily_series(self.index))
            update = clipped_update(
                parameters, X, y, training=training, clipping_norm=CLIPPING_NORM, accountant=None
            )
            weights = [(w + u).astype(w.dtype) for w, u in zip(parameters, update, strict=True)]
            return weights, 1, {}

    def client_fn(context: Context) -> Any:
        return DPClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=[meter, secaggplus_mod])


def _flower_round(grid: InProcessGrid, weights: list[np.ndarray], meter: Meter) -> RoundCost:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    n = len(list(grid.get_node_ids()))
    graph = choose_graph(n)
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(weights),
        fit_metrics_aggregation_fn=lambda _: {},  # no metrics (and no warning about them)
    )
    context = LegacyContext(
        context=Context(
            run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
        ),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=graph.degree + 1,
            reconstruction_threshold=graph.threshold,
            max_weight=1.0,
        )
    )
    meter.reset()
    cpu, wall = meter.clock(), time.perf_counter()
    workflow(grid, context)
    wall, cpu = time.perf_counter() - wall, meter.clock() - cpu
    aggregated = context.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    if all(np.array_equal(a, b) for a, b in zip(aggregated, weights, strict=True)):
        raise SystemExit("Flower's SecAgg+ round released no new model")
    return _collect(meter, wall=wall, server_cpu=cpu, n=n, calls=4, name="Flower SecAgg+")


# -- one cohort size ----------------------------------------------------------------------


def measure_size(
    n: int,
    *,
    root: Path,
    eligibility: Any,
    repetitions: int,
    flower_repetitions: int,
    flower_warm_up: bool,
    workers: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Every contender over the same ``n`` devices, interleaved; medians and ratios.

    Flower's SecAgg+ runs only its first ``flower_repetitions`` timed rounds (hundreds of
    seconds each from 200 devices on; none with ``flower_repetitions=0``), and its
    warm-up only if ``flower_warm_up``.
    """
    from client_sdk.sim.client_app import make_sim_client_app
    from server.attestation import attest_nodes

    sim_root = root / "sim"
    serial = workers == 1
    moodfed_meter, flower_meter = Meter(serial=serial), Meter(serial=serial)  # moodfed: one grid
    moodfed_grid = InProcessGrid(
        make_sim_client_app(defaults=_device_defaults(sim_root), mods=[moodfed_meter]),
        num_nodes=n,
        workers=workers,
    )
    # One Flower run id for both grids: InProcessGrid sets the process's task identity,
    # which stamps every message, and attestations are bound to the run id.
    flower_grid = InProcessGrid(
        _flower_client_app(sim_root, flower_meter),
        num_nodes=n,
        workers=workers,
        run_id=moodfed_grid.run.run_id,
    )
    weights = initial_weights(0)
    results: dict[str, dict[int, RoundCost]] = {name: {} for name in CONTENDERS}
    with ExitStack() as stack:
        started = time.perf_counter()
        attestations = attest_nodes(moodfed_grid, moodfed_grid.get_node_ids(), timeout=3600)
        attestation_s = time.perf_counter() - started
        runs = {
            name: _training_run(
                moodfed_grid,
                aggregation="secure" if name == "secure" else "central",
                devices=n,
                rounds=repetitions + 1,
                data_dir=root / f"server-{n}-{name}",
                stack=stack,
                eligibility=eligibility,
                attestations=attestations,
            )
            for name in ("secure", "plain")
        }
        for repetition in range(repetitions + 1):  # the first is a warm-up
            warm_up = repetition == 0
            shift = repetition % len(CONTENDERS)
            for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
                if name == "flower" and not (
                    (warm_up and flower_warm_up and flower_repetitions)
                    or 1 <= repetition <= flower_repetitions
                ):
                    continue
                progress(f"n={n} {'warm-up' if warm_up else f'rep {repetition}'}: {name}")
                if name == "flower":
                    cost = _flower_round(flower_grid, weights, flower_meter)
                else:
                    cost = _moodfed_round(runs[name], repetition + 1, weights, moodfed_meter)
                results[name][repetition] = cost
    graph = choose_graph(n)
    return summarize(n, results, attestation_s=attestation_s, graph=graph)


def summarize(
    n: int, results: dict[str, dict[int, RoundCost]], *, attestation_s: float, graph: Any
) -> dict[str, Any]:
    """Medians over the timed rounds; each ratio the median over repetitions both ran."""
    timed = {
        name: {rep: cost for rep, cost in costs.items() if rep > 0}
        for name, costs in results.items()
    }
    contenders: dict[str, dict[str, float]] = {}
    for name, by_rep in timed.items():
        costs = list(by_rep.values())
        if not costs:  # Flower's SecAgg+ left out at this size
            continue
        contenders[name] = {
            "rounds": len(costs),
            "wall_s": statistics.median(c.wall_s for c in costs),
            "server_cpu_s": statistics.median(c.server_cpu_s for c in costs),
            "device_cpu_ms_median": 1e3
            * statistics.median(statistics.median(c.device_cpu_s) for c in costs),
            "device_cpu_ms_p95": 1e3
            * statistics.median(float(np.percentile(c.device_cpu_s, 95)) for c in costs),
            "device_cpu_s_total": statistics.median(sum(c.device_cpu_s) for c in costs),
            "bytes_down_median": statistics.median(statistics.median(c.bytes_down) for c in costs),
            "bytes_up_median": statistics.median(statistics.median(c.bytes_up) for c in costs),
            "bytes_down_max": float(max(max(c.bytes_down) for c in costs)),
            "bytes_up_max": float(max(max(c.bytes_up) for c in costs)),
        }

    def ratio(a: str, b: str, key: str) -> float | None:
        pairs = [(timed[a][rep], timed[b][rep]) for rep in timed[a] if rep in timed[b]]
        if not pairs:
            return None
        if key == "device_cpu":
            return statistics.median(
                statistics.median(x.device_cpu_s) / statistics.median(y.device_cpu_s)
                for x, y in pairs
            )
        return statistics.median(float(getattr(x, key)) / float(getattr(y, key)) for x, y in pairs)

    ratios: dict[str, float | None] = {
        "secure_vs_plain_wall": ratio("secure", "plain", "wall_s"),
        "secure_vs_flower_wall": ratio("secure", "flower", "wall_s"),
        "secure_vs_plain_device_cpu": ratio("secure", "plain", "device_cpu"),
        "secure_vs_flower_device_cpu": ratio("secure", "flower", "device_cpu"),
        "flower_vs_plain_wall": ratio("flower", "plain", "wall_s"),
    }
    return {
        "devices": n,
        "degree": graph.degree,
        "threshold": graph.threshold,
        "min_survivors": graph.min_survivors,
        "complete_graph": graph.degree == n - 1,
        "repetitions": len(timed["secure"]),
        "attestation_s": attestation_s,
        "contenders": contenders,
        "ratios": ratios,
        "targets": {
            "secure_vs_plain_max": TARGET_VS_PLAIN,
            "secure_vs_flower_max": TARGET_VS_FLOWER,
            "vs_plain_met": _at_most(ratios["secure_vs_plain_wall"], TARGET_VS_PLAIN),
            "vs_flower_met": _at_most(ratios["secure_vs_flower_wall"], TARGET_VS_FLOWER),
        },
        "wall_s_all": {name: [c.wall_s for c in by.values()] for name, by in timed.items()},
    }


def _at_most(value: float | None, target: float) -> bool | None:
    """Whether a ratio meets its target; None when it was not measured."""
    return None if value is None else value <= target


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "not run" if value is None else format(value, spec)


# -- driver ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from server.eligibility import EligibilityClient
    from server.sim import SimulatedFederation, local_consent_service

    torch.set_num_threads(1)
    for name, level in (("absl", logging.ERROR), ("flwr", logging.WARNING)):
        logging.getLogger(name).setLevel(level)
    sizes: Sequence[int] = args.devices or ((20, 50) if args.quick else (50, 200, 500))
    repetitions = args.repetitions or (2 if args.quick else 3)

    def progress(line: str) -> None:
        if args.progress:
            print(line, file=sys.stderr, flush=True)

    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="moodfed-secagg-bench-"))
        root = Path(folder)
        service = stack.enter_context(local_consent_service(root / "consent"))
        started = time.perf_counter()
        federation = SimulatedFederation.create(
            root / "sim",
            devices=max(sizes),
            holdout_devices=0,
            days=FED_DAYS,
            seed=5,
            consent_url=service.url,
            log_key=service.log_key,
        )
        federation.grant(range(max(sizes)), workers=8)
        setup_s = time.perf_counter() - started
        eligibility = stack.enter_context(EligibilityClient(service.url, token=service.token))
        flower_sizes = [
            n for n in sizes if args.flower_max_devices is None or n <= args.flower_max_devices
        ]
        rows = [
            measure_size(
                n,
                root=root,
                eligibility=eligibility,
                repetitions=repetitions,
                flower_repetitions=(
                    min(repetitions, args.flower_repetitions) if n in flower_sizes else 0
                ),
                flower_warm_up=n == flower_sizes[0] if flower_sizes else False,
                workers=args.workers,
                progress=progress,
            )
            for n in sizes
        ]
    return {
        "sizes": list(sizes),
        "workers": args.workers,
        "repetitions": repetitions,
        "flower_repetitions": min(repetitions, args.flower_repetitions),
        "flower_max_devices": args.flower_max_devices,
        "setup_s": setup_s,
        "rows": rows,
    }


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            "one training round, every device trains (q = 1); in process (InProcessGrid, "
            f"{result['workers']} worker(s), messages serialized, no network); medians of "
            f"{result['repetitions']} interleaved repetitions (Flower SecAgg+: "
            f"{result['flower_repetitions']})"
        ),
        caption=(
            "device CPU: ClientApp calls of one device over the round (median device); "
            "bytes: serialized messages per device (median); server CPU: the process less "
            "the devices. x plain / x Flower: median of per-repetition wall-time ratios. "
            "moodfed's rounds include the consent query, accounting and the release store; "
            "its devices a consent gate and a DP-SGD ledger Flower's do not have."
        ),
    )
    for column in (
        "devices (d, t)",
        "round",
        "wall s",
        "x plain",
        "x Flower",
        "server CPU s",
        "device CPU ms",
        "down KiB",
        "up KiB",
        "target",
    ):
        table.add_column(column, justify="left" if column in ("round", "target") else "right")

    def verdict(met: bool | None) -> str:
        return "not run" if met is None else ("met" if met else "MISSED")

    for row in result["rows"]:
        ratios, targets = row["ratios"], row["targets"]
        for name in CONTENDERS:
            figures = row["contenders"].get(name)
            if figures is None:
                table.add_row(
                    "", LABELS[name], "not run", *[""] * 7, end_section=name == CONTENDERS[-1]
                )
                continue
            x_plain = (
                _fmt(ratios["secure_vs_plain_wall"])
                if name == "secure"
                else ("1.00" if name == "plain" else _fmt(ratios["flower_vs_plain_wall"]))
            )
            x_flower = _fmt(ratios["secure_vs_flower_wall"]) if name == "secure" else ""
            target = ""
            if name == "secure":
                target = (
                    f"<= {TARGET_VS_PLAIN:g}x plain: {verdict(targets['vs_plain_met'])}; "
                    f"<= Flower: {verdict(targets['vs_flower_met'])}"
                )
            table.add_row(
                f"{row['devices']} ({row['degree']}, {row['threshold']})"
                if name == "secure"
                else "",
                LABELS[name],
                f"{figures['wall_s']:.2f}",
                x_plain,
                x_flower,
                f"{figures['server_cpu_s']:.2f}",
                f"{figures['device_cpu_ms_median']:.1f}",
                f"{figures['bytes_down_median'] / 1024:.1f}",
                f"{figures['bytes_up_median'] / 1024:.1f}",
                target,
                end_section=name == CONTENDERS[-1],
            )
    Console(width=160).print(table)
    for row in result["rows"]:
        print(
            f"n={row['devices']}: attestation (once per run, not in the round) "
            f"{row['attestation_s']:.2f} s; device CPU secure/plain "
            f"{_times(row['ratios']['secure_vs_plain_device_cpu'])}, secure/Flower "
            f"{_times(row['ratios']['secure_vs_flower_device_cpu'])}"
        )


def _times(ratio: float | None) -> str:
    return _fmt(ratio) + ("" if ratio is None else "x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 and 50 devices, 2 repetitions")
    parser.add_argument("--devices", type=int, nargs="+", help="cohort sizes (default 50 200 500)")
    parser.add_argument("--repetitions", type=int, help="timed moodfed rounds (default 3)")
    parser.add_argument(
        "--flower-repetitions", type=int, default=1, help="timed Flower SecAgg+ rounds (default 1)"
    )
    parser.add_argument(
        "--flower-max-devices",
        type=int,
        help="run Flower's SecAgg+ only at cohorts of at most this many devices "
        "(default: at every size; at 500 it takes about 55 minutes a round)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="devices handled at once (default 1: per-device CPU then counts their threads)",
    )
    parser.add_argument("--progress", action="store_true", help="say what runs, on stderr")
    args = parser.parse_args(argv)
    if args.devices and min(args.devices) < 3:
        parser.error("secure aggregation needs at least 3 devices")
    if args.flower_repetitions < 1 or (args.repetitions is not None and args.repetitions < 1):
        parser.error("repetitions must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.flower_max_devices is not None and args.flower_max_devices < 0:
        parser.error("--flower-max-devices must be at least 0")
    previous_threads = torch.get_num_threads()
    try:
        result = run(args)
    finally:
        torch.set_num_threads(previous_threads)
    show(result)
    result["quick"] = args.quick
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": flwr.__version__,
        "platform": platform.platform(),
    }
    print(json.dumps({"benchmark": "moodfed.secagg", **result}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
