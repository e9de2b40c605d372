"""Training benchmark: what record-level DP-SGD costs on the device, per step.

Run from the repository root::

    python benchmarks/training_bench.py               # every part, full repetitions
    python benchmarks/training_bench.py --part a      # one part
    python benchmarks/training_bench.py --quick       # CI smoke run (a few seconds)

Parts:

(a) One local DP-SGD step against one non-private SGD step: the same model
    (``create_model``, 43 -> 32 -> 1), the same batch (``--batch-size`` real synthetic
    examples, 64 by default), one torch thread, plain SGD (``torch.optim.SGD``). A
    step is everything between two parameter updates: the gradients (per-example,
    clipped and noised for DP-SGD, with the noise drawn by ``privacy.gaussian_noise``
    from ``privacy.secure_rng()``'s generator, as on a device) and the optimizer step.
    Poisson sampling is left out: it is the same index draw for every contender. The
    non-private step is PyTorch's usual one (``mse_loss(...).backward()``), as
    ``train_nonprivate`` runs it. The headline is ``DPSGD`` as ``train_locally`` runs it
    (engine ``"auto"``, which is ``"mlp"`` for this model). Timed alongside: the same
    without the noise draw (what the noise costs), ``DPSGD``'s other two engines (ghost
    norms through autograd; ``torch.func`` vmap), Opacus 1.x's ``make_private`` in hooks
    mode (the classic ``GradSampleModule``) and in ghost clipping mode, and both
    moodfed steps with two threads.

    The contenders run round-robin in blocks of steps, so bursts of background load hit
    neighbouring blocks of all of them. Each time is the median over every timed step
    (wall clock, and this thread's CPU time); each ratio is the median over blocks of
    (contender's median / the 1-thread non-private median in the same block). The
    headline ratio is checked against a target of 1.5x.

The result is a rich table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from client_sdk.dpsgd import DPSGD, PerExample  # noqa: E402
from client_sdk.model import create_model  # noqa: E402
from client_sdk.sim.synthetic import SyntheticPopulation  # noqa: E402
from client_sdk.training import nonprivate_gradients  # noqa: E402
from privacy import secure_rng  # noqa: E402

TARGET_STEP_RATIO = 1.5
NOISE_MULTIPLIER = 1.0
MAX_GRAD_NORM = 1.0
LEARNING_RATE = 0.1
BASELINE = "non-private SGD"
HEADLINE = "DP-SGD, moodfed (train_locally)"

Step = Callable[[], None]


# -- part (a): one DP-SGD step vs one non-private step ---------------------------------


def _batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    X, y, _ = SyntheticPopulation(max(2, size // 40 + 1), days=90, seed=7).examples()
    if len(X) < size:
        raise SystemExit(f"the synthetic population has only {len(X)} examples")
    return torch.from_numpy(X[:size].copy()), torch.from_numpy(y[:size].copy())


def _nonprivate_step(x: torch.Tensor, y: torch.Tensor) -> Step:
    model = create_model(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

    def step() -> None:
        nonprivate_gradients(model, x, y)
        optimizer.step()

    return step


def _moodfed_step(
    x: torch.Tensor,
    y: torch.Tensor,
    per_example: PerExample,
    noise_multiplier: float = NOISE_MULTIPLIER,
) -> Step:
    model = create_model(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    dpsgd = DPSGD(
        model,
        max_grad_norm=MAX_GRAD_NORM,
        noise_multiplier=noise_multiplier,
        expected_batch_size=float(len(x)),
        rng=secure_rng(),  # what a device uses: one OS-seeded generator per training run
        per_example=per_example,
    )

    def step() -> None:
        dpsgd.gradients(x, y)
        optimizer.step()

    step()  # the engine is settled by the first batch
    ENGINES[per_example] = dpsgd.per_example
    return step


ENGINES: dict[str, str] = {}
"""The engine each requested ``per_example`` mode ended up using."""


def _opacus_step(x: torch.Tensor, y: torch.Tensor, mode: str) -> Step:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    model = create_model(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    criterion: Any = torch.nn.MSELoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the secure_mode notice: it is off, as ours
        engine = PrivacyEngine(accountant="rdp")
        if mode == "ghost":
            model, optimizer, criterion, _ = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                criterion=criterion,
                noise_multiplier=NOISE_MULTIPLIER,
                max_grad_norm=MAX_GRAD_NORM,
                grad_sample_mode="ghost",
            )
        else:
            model, optimizer, _ = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=NOISE_MULTIPLIER,
                max_grad_norm=MAX_GRAD_NORM,
                grad_sample_mode=mode,
            )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()

    return step


def _time_interleaved(
    contenders: dict[str, tuple[Step, int]], *, blocks: int, per_block: int, warmup: int
) -> dict[str, dict[str, list[list[float]]]]:
    """Wall and thread-CPU seconds per step, per block, of each contender, run round-robin.

    Every block runs ``per_block`` steps of each contender in turn, so a burst of
    background load lands on neighbouring blocks of all of them.
    """
    times: dict[str, dict[str, list[list[float]]]] = {
        name: {"wall": [], "cpu": []} for name in contenders
    }
    wall, cpu = time.perf_counter, time.thread_time
    for step, threads in contenders.values():
        torch.set_num_threads(threads)
        for _ in range(warmup):
            step()
    for _ in range(blocks):
        for name, (step, threads) in contenders.items():
            torch.set_num_threads(threads)
            walls: list[float] = []
            cpus: list[float] = []
            for _ in range(per_block):
                started, started_cpu = wall(), cpu()
                step()
                cpus.append(cpu() - started_cpu)
                walls.append(wall() - started)
            times[name]["wall"].append(walls)
            times[name]["cpu"].append(cpus)
    torch.set_num_threads(1)
    return times


def _paired_ratio(blocks: list[list[float]], base: list[list[float]]) -> float:
    """Median over blocks of (this block's median / the baseline's median in the same block)."""
    return statistics.median(
        statistics.median(mine) / statistics.median(theirs)
        for mine, theirs in zip(blocks, base, strict=True)
    )


def _median_us(blocks: list[list[float]]) -> float:
    return statistics.median(t for block in blocks for t in block) * 1e6


def part_a(args: argparse.Namespace) -> dict[str, Any]:
    """One DP-SGD step vs one non-private step; the rows of the table and the summary."""
    torch.set_num_threads(1)
    x, y = _batch(args.batch_size)
    contenders: dict[str, tuple[Step, int]] = {
        BASELINE: (_nonprivate_step(x, y), 1),
        HEADLINE: (_moodfed_step(x, y, "auto"), 1),
        "DP-SGD, moodfed mlp, sigma 0 (no noise draw)": (_moodfed_step(x, y, "mlp", 0.0), 1),
        "DP-SGD, moodfed ghost norms (autograd)": (_moodfed_step(x, y, "ghost"), 1),
        "DP-SGD, Opacus hooks": (_opacus_step(x, y, "hooks"), 1),
        "DP-SGD, Opacus ghost clipping": (_opacus_step(x, y, "ghost"), 1),
        "DP-SGD, moodfed torch.func (vmap)": (_moodfed_step(x, y, "vmap"), 1),
        "non-private SGD, 2 threads": (_nonprivate_step(x, y), 2),
        "DP-SGD, moodfed (train_locally), 2 threads": (
            _moodfed_step(x, y, "auto"),
            2,
        ),
    }
    blocks, per_block, warmup = (10, 20, 50) if args.quick else (60, 40, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus ghost mode warns on every double backward
        times = _time_interleaved(contenders, blocks=blocks, per_block=per_block, warmup=warmup)
    base = times[BASELINE]
    rows = []
    for name, (_, threads) in contenders.items():
        measured = times[name]
        rows.append(
            {
                "path": name,
                "threads": threads,
                "wall_us": round(_median_us(measured["wall"]), 1),
                "cpu_us": round(_median_us(measured["cpu"]), 1),
                "ratio": round(_paired_ratio(measured["wall"], base["wall"]), 2),
                "cpu_ratio": round(_paired_ratio(measured["cpu"], base["cpu"]), 2),
            }
        )
    by_path = {row["path"]: row for row in rows}
    headline, hooks = by_path[HEADLINE], by_path["DP-SGD, Opacus hooks"]
    return {
        "batch_size": args.batch_size,
        "dpsgd_engine": ENGINES["auto"],
        "steps_timed": blocks * per_block,
        "blocks": blocks,
        "noise_multiplier": NOISE_MULTIPLIER,
        "max_grad_norm": MAX_GRAD_NORM,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "nonprivate_us": by_path[BASELINE]["wall_us"],
        "dpsgd_us": headline["wall_us"],
        "ratio": headline["ratio"],
        "cpu_ratio": headline["cpu_ratio"],
        "target_ratio": TARGET_STEP_RATIO,
        "meets_target": headline["ratio"] <= TARGET_STEP_RATIO,
        "opacus_hooks_us": hooks["wall_us"],
        "opacus_hooks_ratio": hooks["ratio"],
        "rows": rows,
    }


def print_part_a(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"(a) one local step: batch {result['batch_size']}, model 43-32-1, sigma "
            f"{result['noise_multiplier']:g}, C {result['max_grad_norm']:g}, moodfed engine "
            f"{result['dpsgd_engine']!r}; medians of "
            f"{result['steps_timed']} steps in {result['blocks']} interleaved blocks"
        ),
        caption=(
            "x non-private: median over blocks of the ratio to the 1-thread non-private "
            "step in the same block (wall clock; CPU: this thread's CPU time). "
            f"1-min load average {result['load_average_1min']:g} on "
            f"{os.cpu_count()} cores."
        ),
    )
    table.add_column("path")
    table.add_column("threads", justify="right")
    table.add_column("wall µs/step", justify="right")
    table.add_column("CPU µs/step", justify="right")
    table.add_column("x non-private", justify="right")
    table.add_column("x (CPU)", justify="right")
    table.add_column("target", justify="right")
    for row in result["rows"]:
        headline = row["path"] == HEADLINE
        target = ""
        if headline:
            verdict = "met" if result["meets_target"] else "MISSED"
            target = f"<= {result['target_ratio']:g}x: {verdict}"
        single = row["threads"] == 1
        table.add_row(
            row["path"],
            str(row["threads"]),
            f"{row['wall_us']:.1f}",
            f"{row['cpu_us']:.1f}" if single else "-",
            f"{row['ratio']:.2f}",
            f"{row['cpu_ratio']:.2f}" if single else "-",
            target,
            style="bold" if headline else None,
        )
    Console(width=140).print(table)


# -- parts (b) and (c): federated rounds, moodfed's ServerApp and ClientApp -------------
#
# Both parts drive the real ServerApp loop (server.run.run_training) and the real
# ClientApp (client_sdk.client_app) through server.sim.grid's InProcessGrid:
# Flower's Grid interface, delivered in this process (no Ray, no SuperLink, no
# serialization; one thread per CPU, as the Simulation Engine runs one ClientApp per CPU),
# against a real consent service over HTTP (in a thread, SQLite) and
# real SQLite stores. Flower's transport and Ray's scheduling are not measured.

FED_DAYS = 120
# Devices handled at once, as the Simulation Engine runs one ClientApp per CPU; the same
# for moodfed and the bare baseline.
WORKERS = os.cpu_count() or 1


def _federation(root: Path, devices: int, seed: int) -> tuple[Any, Any, Any]:
    """A consent service (entered), a simulated federation where every device granted."""
    from contextlib import ExitStack

    from server.sim import SimulatedFederation, local_consent_service

    stack = ExitStack()
    service = stack.enter_context(local_consent_service(root / "consent"))
    federation = SimulatedFederation.create(
        root / "sim",
        devices=devices,
        holdout_devices=0,
        days=FED_DAYS,
        seed=seed,
        consent_url=service.url,
        log_key=service.log_key,
    )
    federation.grant(range(devices), workers=8)
    return stack, service, federation


def _fed_settings(
    root: Path, service: Any, *, devices: int, expected: float, rounds: int, seed: int
) -> Any:
    from server.sim import SimSettings

    return SimSettings(
        rounds=rounds,
        expected_devices=expected,
        noise_multiplier=1.0,
        clipping_norm=1.0,
        epsilon_budget=1e6,
        delta=1e-5,
        seed=seed,
        sample_rate=0.3,
        local_steps=3,
        learning_rate=0.1,
        device_epsilon_budget=1e6,
        min_nodes=devices,
        node_wait_seconds=0.0,
        consent_url=service.url,
        eligibility_token=service.token,
        data_dir=root / f"server-{seed}",
        sim_root=root / "sim",
        # Part (b) compares with a bare FedAvg round: the central round does the same
        # exchange (benchmarks/secagg_bench.py measures what secure aggregation adds).
        aggregation="central",
        device_allow_central=True,
    )


class _LedgerTimer:
    """Time spent writing the devices' DP-SGD ledgers (``DeviceAccountant._save``: the
    fsync-ed file write, which runs in a thread beside the device's training)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> _LedgerTimer:
        from privacy.device import DeviceAccountant

        self._original = DeviceAccountant._save
        timer = self

        def save(ledger: DeviceAccountant, *args: Any) -> None:
            started = time.perf_counter()
            try:
                timer._original(ledger, *args)
            finally:
                timer.seconds += time.perf_counter() - started

        DeviceAccountant._save = save  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        from privacy.device import DeviceAccountant

        DeviceAccountant._save = self._original  # type: ignore[method-assign]


def _moodfed_run(root: Path, service: Any, settings: Any, devices: int) -> dict[str, Any]:
    """One run of moodfed's ServerApp loop over an InProcessGrid; timed in parts."""
    from client_sdk.sim.client_app import make_sim_client_app
    from server.attestation import attest_nodes
    from server.eligibility import EligibilityClient
    from server.observers import RunObserver
    from server.releases import ReleaseStore
    from server.run import run_training
    from server.sim.grid import InProcessGrid
    from server.training import RoundReport

    grid = InProcessGrid(
        make_sim_client_app(
            defaults={"sim-root": str(root / "sim"), **settings.device_node_config()}
        ),
        num_nodes=devices,
        workers=WORKERS,
    )
    reports: list[RoundReport] = []

    class _Timer(RunObserver):
        def after_round(self, report: RoundReport) -> None:
            reports.append(report)

    with (
        _LedgerTimer() as ledger,
        EligibilityClient(service.url, token=service.token) as eligibility,
        ReleaseStore(settings.resolved_release_database_url) as store,
        settings.open_accountant() as accountant,
    ):
        started = time.perf_counter()
        attestations = attest_nodes(grid, grid.get_node_ids(), timeout=600)
        attested = time.perf_counter()
        result = run_training(
            grid,
            settings=settings,
            eligibility=eligibility,
            store=store,
            accountant=accountant,
            observers=[_Timer()],
            attestations=attestations,
        )
        finished = time.perf_counter()
    if result.status != "completed":
        raise SystemExit(f"the benchmark run did not complete: {result.reason}")
    return {
        "attestation_s": attested - started,
        "rounds_s": finished - attested,
        "total_s": finished - started,
        "device_ledger_s": ledger.seconds,
        "round_s": [report.seconds for report in reports],
        "sampled": [len(report.sampled) for report in reports],
        "epsilon": result.epsilon,
    }


def _bare_client_app(sim_root: Path) -> Any:
    """A bare Flower ClientApp: the same local DP-SGD on the same diary, nothing else
    (no consent gate, no device ledger, no clipping, no attestation)."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from client_sdk.features import make_examples
    from client_sdk.model import create_model, set_weights
    from client_sdk.sim import FederationSpec
    from client_sdk.training import LocalTrainingConfig, train_locally

    app = ClientApp()
    spec = FederationSpec.load(sim_root)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        index = int(context.node_config["partition-id"])
        X, y = make_examples(spec.population().daily_series(index))
        model = create_model()
        set_weights(model, message.content["arrays"].to_numpy_ndarrays())
        config = LocalTrainingConfig(
            steps=3, sample_rate=0.3, learning_rate=0.1, noise_multiplier=1.0, delta=1e-4
        )
        result = train_locally(model, X, y, config=config)
        content = RecordDict(
            {
                "arrays": ArrayRecord(result.weights),
                "metrics": MetricRecord({"num-examples": len(y)}),
            }
        )
        return Message(content, reply_to=message)

    return app


def _bare_round(sim_root: Path, devices: int, sampled: int) -> float:
    """One round of Flower's own FedAvg strategy over the same devices, ``sampled`` of them."""
    import logging

    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    from client_sdk.model import create_model, get_weights
    from server.sim.grid import InProcessGrid

    logging.getLogger("flwr").setLevel(logging.WARNING)
    grid = InProcessGrid(_bare_client_app(sim_root), num_nodes=devices, workers=WORKERS)
    strategy = FedAvg(
        fraction_train=sampled / devices,
        fraction_evaluate=0.0,
        min_train_nodes=sampled,
        min_available_nodes=devices,
    )
    started = time.perf_counter()
    strategy.start(
        grid=grid, initial_arrays=ArrayRecord(get_weights(create_model(seed=0))), num_rounds=1
    )
    return time.perf_counter() - started


def part_b(args: argparse.Namespace) -> dict[str, Any]:
    """One round of moodfed (attestation, consent gating, accounting, DP) vs a bare
    Flower FedAvg round on the same devices, interleaved repetitions, medians."""
    import logging
    import tempfile

    torch.set_num_threads(1)
    logging.getLogger("absl").setLevel(logging.ERROR)
    devices, expected, repetitions = (60, 15.0, 2) if args.quick else (200, 50.0, 5)
    folder = tempfile.TemporaryDirectory(prefix="moodfed-bench-b-")
    root = Path(folder.name)
    stack, service, _ = _federation(root, devices, seed=3)
    stack.callback(folder.cleanup)
    ours: list[dict[str, Any]] = []
    bare: list[float] = []
    with stack:
        for repetition in range(repetitions + 1):  # the first of each is a warm-up
            settings = _fed_settings(
                root, service, devices=devices, expected=expected, rounds=1, seed=100 + repetition
            )
            run = _moodfed_run(root, service, settings, devices)
            seconds = _bare_round(root / "sim", devices, max(1, run["sampled"][0]))
            if repetition:
                ours.append(run)
                bare.append(seconds)
    total = statistics.median(r["total_s"] for r in ours)
    round_only = statistics.median(r["rounds_s"] for r in ours)
    bare_s = statistics.median(bare)
    return {
        "devices": devices,
        "expected_per_round": expected,
        "repetitions": repetitions,
        "sampled": [r["sampled"][0] for r in ours],
        "moodfed_total_s": total,
        "moodfed_attestation_s": statistics.median(r["attestation_s"] for r in ours),
        "moodfed_round_s": round_only,
        "bare_fedavg_round_s": bare_s,
        "ratio_with_attestation": total / bare_s,
        "ratio_round_only": round_only / bare_s,
        "moodfed_device_ledger_s": statistics.median(r["device_ledger_s"] for r in ours),
        "target_ratio": 2.0,
    }


def print_part_b(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"(b) one round, {result['devices']} devices, ~{result['expected_per_round']:g} "
            f"trained (sampled: {result['sampled']}); medians of {result['repetitions']} "
            "interleaved repetitions, in process (InProcessGrid, no Ray)"
        ),
        caption=(
            "moodfed: attest every node (signed nonce), consent query over HTTP, hard-stop "
            "check and charge of every eligible user (SQLite), Poisson sample, device gate "
            "+ device ledger + DP-SGD + clipping, DP-FedAvg, release store write. bare: "
            "Flower's FedAvg strategy, same devices and count, same DP-SGD, nothing else."
        ),
    )
    table.add_column("path")
    table.add_column("seconds", justify="right")
    table.add_column("x bare", justify="right")
    table.add_column("target", justify="right")
    bare = result["bare_fedavg_round_s"]
    table.add_row("bare Flower FedAvg round", f"{bare:.3f}", "1.00", "")
    table.add_row(
        "moodfed round incl. attestation",
        f"{result['moodfed_total_s']:.3f}",
        f"{result['ratio_with_attestation']:.2f}",
        f"<= {result['target_ratio']:g}: "
        + ("met" if result["ratio_with_attestation"] <= result["target_ratio"] else "MISSED"),
    )
    table.add_row(
        "  of which attestation (once per run)", f"{result['moodfed_attestation_s']:.3f}", "", ""
    )
    table.add_row(
        "  devices' ledger writes (fsync, overlapped with training)",
        f"{result['moodfed_device_ledger_s']:.3f}",
        "",
        "",
    )
    table.add_row(
        "moodfed round without attestation",
        f"{result['moodfed_round_s']:.3f}",
        f"{result['ratio_round_only']:.2f}",
        "",
    )
    Console(width=130).print(table)


def part_c(args: argparse.Namespace) -> dict[str, Any]:
    """10,000 devices, 100 expected per round, 20 rounds: the wall time of the run."""
    import logging
    import tempfile

    torch.set_num_threads(1)
    logging.getLogger("absl").setLevel(logging.ERROR)
    devices, expected, rounds = (1000, 20.0, 3) if args.quick else (10_000, 100.0, 20)
    folder = tempfile.TemporaryDirectory(prefix="moodfed-bench-c-")
    root = Path(folder.name)
    started = time.perf_counter()
    stack, service, _ = _federation(root, devices, seed=4)
    setup = time.perf_counter() - started
    stack.callback(folder.cleanup)
    with stack:
        settings = _fed_settings(
            root, service, devices=devices, expected=expected, rounds=rounds, seed=7
        )
        run = _moodfed_run(root, service, settings, devices)
    return {
        "devices": devices,
        "expected_per_round": expected,
        "rounds": rounds,
        "setup_s": setup,
        "attestation_s": run["attestation_s"],
        "rounds_s": run["rounds_s"],
        "total_s": run["total_s"],
        "round_s_median": statistics.median(run["round_s"]),
        "round_s_max": max(run["round_s"]),
        "sampled_mean": statistics.mean(run["sampled"]),
        "epsilon": run["epsilon"],
        "target_s": 600.0,
    }


def print_part_c(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"(c) {result['devices']:,} devices, {result['expected_per_round']:g} expected per "
            f"round, {result['rounds']} rounds, in process (InProcessGrid, no Ray)"
        ),
        caption=(
            "setup (not in the run's time): consent service, every device granting with its "
            "own key over HTTP. The run: attestation of every node, then the rounds."
        ),
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("setup: consent for every device", f"{result['setup_s']:.1f} s")
    table.add_row("attestation of every node", f"{result['attestation_s']:.1f} s")
    table.add_row(f"{result['rounds']} rounds", f"{result['rounds_s']:.1f} s")
    table.add_row(
        "  per round, median / max",
        f"{result['round_s_median']:.2f} / {result['round_s_max']:.2f} s",
    )
    table.add_row("  devices trained per round, mean", f"{result['sampled_mean']:.1f}")
    verdict = "met" if result["total_s"] < result["target_s"] else "MISSED"
    table.add_row(
        "run wall time (attestation + rounds)",
        f"{result['total_s']:.1f} s (target < {result['target_s']:.0f} s: {verdict})",
    )
    table.add_row("user-level ε after the run (σ=1, δ=1e-5)", f"{result['epsilon']:.3f}")
    Console(width=130).print(table)


# -- driver ----------------------------------------------------------------------------

PARTS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], Callable[..., None]]] = {
    "a": (part_a, print_part_a),
    "b": (part_b, print_part_b),
    "c": (part_c, print_part_c),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--batch-size", type=int, default=64, help="batch of part (a)")
    args = parser.parse_args(argv)

    wanted = ["a", "b", "c"] if args.part == "all" else [args.part]
    result: dict[str, Any] = {
        "benchmark": "moodfed.training",
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    previous_threads = torch.get_num_threads()
    try:
        for part in wanted:
            if part not in PARTS:
                print(f"part ({part}) is not written yet", file=sys.stderr)
                continue
            run, show = PARTS[part]
            result[part] = run(args)
            show(result[part])
    finally:
        torch.set_num_threads(previous_threads)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
