"""Faults: failing, misbehaving and impostor devices neither break a run nor its accounting.

One run: 10 devices, q = 0.5, 3 rounds; a seeded 30% of training messages raise in the
ClientApp, the odd-numbered devices send updates of 1e9 everywhere, device 2 answers the attestation
challenge with a signature made for another node.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.metadata import Metadata

from client_sdk.model import create_model, get_weights
from privacy import history_epsilon, update_norm
from server.aggregation import dp_fedavg, parse_update
from server.sampling import round_rng
from tests.conftest import ConsentServer
from tests.training.conftest import Simulation, make_simulation, trained
from tests.training.mods import FailSome, HugeUpdate, ReplayAttestation

DEVICES = 10
ROUNDS = 3
EXPECTED = 5.0
HUGE = frozenset({1, 3, 5, 7, 9})
IMPOSTOR = 2
FAULTS = FailSome(rate=0.3, seed=5)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, consent_service: ConsentServer) -> Simulation:
    root = tmp_path_factory.mktemp("faults")
    simulation = make_simulation(
        root,
        consent_service,
        devices=DEVICES,
        seed=31,
        rounds=ROUNDS,
        expected_devices=EXPECTED,
        min_nodes=DEVICES - 1,
        # Central DP-FedAvg's robustness (the server clips what a device sends, zeroes
        # NaN): only a trusted server sees the updates to clip. Secure rounds' faults
        # are in test_secure_aggregation.py.
        aggregation="central",
        device_allow_central=True,
    )
    simulation.run(
        mods=[FAULTS, HugeUpdate(victims=HUGE), ReplayAttestation(IMPOSTOR, str(root / "sim"))]
    )
    return simulation


def test_the_run_completes_despite_devices_failing(run: Simulation) -> None:
    raised = [row for row in run.replies() if row.get("raised")]

    assert run.result is not None and run.result.status == "completed"
    assert len(run.result.rounds) == ROUNDS
    assert raised  # the faults really happened
    rounds = run.store().model_rounds(run.result.run_id)
    assert all(np.isfinite(w).all() for row in rounds for w in row.weights)


def test_every_eligible_user_is_charged_exactly_once_per_round_whether_sampled_or_not(
    run: Simulation,
) -> None:
    # Recomputed independently: the attested devices (all but the impostor) are all
    # eligible in every round, at q = EXPECTED / eligible.
    eligible = [i for i in range(DEVICES) if i != IMPOSTOR]
    q = EXPECTED / len(eligible)
    expected_history = {(q, 1.0): ROUNDS}
    expected_epsilon = history_epsilon(expected_history, delta=1e-5)

    with run.accountant() as accountant:
        for index in eligible:
            history = {
                (k.sampling_rate, k.noise_multiplier): n
                for k, n in accountant.history(run.key(index)).items()
            }
            assert history == pytest.approx(expected_history)
            assert accountant.epsilon(run.key(index)) == pytest.approx(expected_epsilon)
        assert accountant.history(run.key(IMPOSTOR)) == {}
    releases = run.store().model_rounds(run.result.run_id)  # type: ignore[union-attr]
    assert releases[-1].epsilon == pytest.approx(expected_epsilon)


def test_sampled_devices_that_failed_were_still_charged(run: Simulation) -> None:
    failed = {
        (row["partition"], int(row["group_id"])) for row in run.replies() if row.get("raised")
    }
    charged = Counter()
    with run.accountant() as accountant:
        for index, _ in failed:
            charged[index] = sum(accountant.history(run.key(index)).values())
    assert failed and all(charged[index] == ROUNDS for index, _ in failed)


def test_an_impostor_node_is_left_out_of_every_round(run: Simulation) -> None:
    impostor = run.key(IMPOSTOR)

    assert impostor not in run.result.attested.values()  # type: ignore[union-attr]
    assert all(impostor not in report.eligible for report in run.recorder.reports)
    assert trained(run.replies(), IMPOSTOR) == []
    assert not [
        r for r in run.replies() if r["partition"] == IMPOSTOR and r["message_type"] == "train"
    ]


def test_a_huge_update_moves_the_model_no_more_than_clipping_and_noise_allow(
    run: Simulation,
) -> None:
    sent_huge = [r for index in HUGE for r in trained(run.replies(), index)]
    rounds = run.store().model_rounds(run.result.run_id)  # type: ignore[union-attr]
    previous = get_weights(create_model(seed=31))
    dimension = sum(w.size for w in previous)

    assert sent_huge  # the misbehaving devices did send huge updates
    for report, row in zip(run.recorder.reports, rounds, strict=True):
        step = update_norm([a - b for a, b in zip(row.weights, previous, strict=True)])
        # Each contribution is clipped to C = 1; the noise's norm is about
        # sigma * C * sqrt(d) (chi distribution, tightly concentrated).
        bound = (report.contributed + 1.2 * math.sqrt(dimension)) / report.expected_count
        assert step <= bound
        previous = row.weights


def _reply(content: RecordDict) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="m",
        src_node_id=7,
        dst_node_id=1,
        reply_to_message_id="i",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    return Message(content=content, metadata=metadata)


def test_the_aggregate_moves_by_at_most_c_over_the_expected_count_for_any_one_update() -> None:
    template = get_weights(create_model(seed=0))
    others = [[np.full_like(w, 0.01) for w in template] for _ in range(3)]
    huge = parse_update(
        _reply(RecordDict({"update": ArrayRecord([np.full_like(w, 1e9) for w in template])})),
        template,
    )
    assert huge is not None

    def aggregate(updates: list[list[np.ndarray]]) -> list[np.ndarray]:
        return dp_fedavg(
            updates,
            template=template,
            clipping_norm=1.0,
            noise_multiplier=1.0,
            expected_count=4.0,
            rng=round_rng(99, 1),  # the same noise both times
        )

    with_huge, without = aggregate([*others, huge]), aggregate(others)

    difference = update_norm(
        [a.astype(np.float64) - b for a, b in zip(with_huge, without, strict=True)]
    )
    assert difference <= 1.0 / 4.0 + 1e-6


@pytest.mark.parametrize(
    "content",
    [
        RecordDict({"update": ArrayRecord([np.zeros(3, np.float32)])}),
        RecordDict({"arrays": ArrayRecord([np.zeros(3, np.float32)])}),
        RecordDict(
            {
                "update": ArrayRecord(get_weights(create_model(seed=0))),
                "metrics": MetricRecord({"loss": 0.5}),
            }
        ),
        RecordDict({"update": ConfigRecord({"0": 1.0})}),
    ],
    ids=["wrong-shapes", "wrong-name", "extra-record", "wrong-kind"],
)
def test_a_malformed_update_counts_as_no_update(content: RecordDict) -> None:
    assert parse_update(_reply(content), get_weights(create_model(seed=0))) is None
