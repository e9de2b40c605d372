"""Secure aggregation with distributed noise, end to end over Flower.

- **The server's view** (Simulation Engine): every reply the ServerApp receives is in its
  transcript; a device's planted extreme update appears in none of them (it does in a
  central run, which shows the search works), and masked coordinates are uniform.
- **Exactness**: with the devices' noise switched off (the ClientApp's test-only
  switch) the unmasked sum is the clear sum, up to the fixed-point rounding the
  encoding states, for 3 to 200 devices with 0%, 10% and 30% dropping out after the key
  exchange (the real round code and ClientApp over the in-process Flower Grid).
- **Abort**: fewer survivors than the floor: nothing released, every eligible user
  charged.
- **Forged key**: a public key whose signature is not the device's is refused by every
  peer, and the round releases nothing.
- **Noise**: the unmasked sum's noise has the documented variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable
from scipy import stats

from client_sdk.analytics import device_contributions
from client_sdk.consent_client import Decision
from client_sdk.protocol import ANALYTICS_MESSAGE_TYPE, ANALYTICS_PURPOSE, TRAINING_PURPOSE
from client_sdk.queries import standard_queries
from client_sdk.secagg import RoundAborted, ShareKeysRequest
from client_sdk.sim.client_app import make_sim_client_app
from privacy import Accountant
from server.analytics import AnalyticsPlan, AnalyticsRound, AnalyticsRun, last_full_weeks
from server.attestation import attest_nodes
from server.eligibility import EligibilityClient
from server.releases import ReleaseStore
from server.sim.grid import InProcessGrid
from server.transcript import read_transcript
from tests.conftest import ConsentServer
from tests.secagg.harness import UNIFORMITY_ALPHA, top_bits_p_value
from tests.training.conftest import Simulation, make_simulation
from tests.training.mods import partition

QUERIES = standard_queries()


# -- mods: what a device does, changed from inside its ClientApp (they run in Ray workers)


@dataclass(frozen=True)
class PlantUpdate:
    """Device ``victim`` computes ``value`` in every coordinate as its update."""

    victim: int
    value: float

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if partition(context) != self.victim or message.metadata.message_type != "train":
            return call_next(message, context)
        import client_sdk.client_app as client_app

        original = client_app._device_update
        client_app._device_update = lambda device, config, weights: [  # type: ignore[assignment]  # test seam
            np.full(w.shape, self.value, dtype=np.float32) for w in weights
        ]
        try:
            return call_next(message, context)
        finally:
            client_app._device_update = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class DropAt:
    """The listed devices drop out at the masked-input stage (after the key exchange)."""

    message_type: str
    victims: frozenset[int]

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if message.metadata.message_type == self.message_type and partition(context) in (
            self.victims
        ):
            raise ConnectionError("the device went offline")
        return call_next(message, context)


@dataclass(frozen=True)
class ForgeNeighbourKey:
    """A server slipping in a key of its own: the first neighbour's encryption key in
    every share-keys request is replaced, its signature left as it was."""

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if ShareKeysRequest.RECORD not in message.content:
            return call_next(message, context)
        request = ShareKeysRequest.from_record_dict(message.content)
        first = request.neighbours[0]
        forged = replace(first, c_pk=bytes(31) + b"\x09")
        message.content[ShareKeysRequest.RECORD] = replace(
            request, neighbours=(forged, *request.neighbours[1:])
        ).to_record()
        return call_next(message, context)


# -- the server's view (Simulation Engine) ------------------------------------------------

PLANTED = 0.012345678  # far from any value a masked uint32 or a clipped update takes


def _planted_run(root: Path, service: ConsentServer, **settings: Any) -> Simulation:
    simulation = make_simulation(
        root,
        service,
        devices=5,
        seed=61,
        rounds=1,
        transcript_dir=root / "transcript",
        **settings,
    )
    simulation.run(mods=[PlantUpdate(victim=0, value=PLANTED)])
    return simulation


def _needles() -> list[bytes]:
    return [np.full(8, PLANTED, dtype=dtype).tobytes() for dtype in (np.float32, np.float64)]


@pytest.fixture(scope="module")
def secure_run(
    tmp_path_factory: pytest.TempPathFactory, consent_service: ConsentServer
) -> Simulation:
    return _planted_run(tmp_path_factory.mktemp("secure-view"), consent_service)


def test_no_reply_the_server_receives_holds_a_devices_update(secure_run: Simulation) -> None:
    transcript = list(read_transcript(secure_run.settings.transcript_dir or ""))
    records = {name for _, _, content, _ in transcript for name in content}

    assert secure_run.result is not None and secure_run.result.status == "completed"
    assert "secagg-masked-input" in records and "update" not in records
    for _, _, _, raw in transcript:
        assert not any(needle in raw for needle in _needles())


def test_the_same_search_finds_the_update_when_a_trusted_server_sees_it(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    central = _planted_run(
        tmp_path, consent_service, aggregation="central", device_allow_central=True
    )
    raws = [raw for _, _, _, raw in read_transcript(central.settings.transcript_dir or "")]

    assert any(needle in raw for raw in raws for needle in _needles())


def test_masked_coordinates_are_uniform(secure_run: Simulation) -> None:
    masked = [
        content.array_records["secagg-masked-input"]["masked"].numpy()
        for _, _, content, _ in read_transcript(secure_run.settings.transcript_dir or "")
        if "secagg-masked-input" in content
    ]
    assert len(masked) == 5
    for vector in masked:  # top 4 bits of each 32-bit coordinate: 16 equally likely bins
        assert top_bits_p_value(vector.astype(np.uint64), 32) > UNIFORMITY_ALPHA
    # The planted device's vector is as uniform as the others, and differs from its input.
    assert not np.allclose(masked[0], 0)


# -- exactness, noise and abort: the real round stages over the in-process Flower Grid ----


@dataclass
class Federation:
    simulation: Simulation
    grid: InProcessGrid
    week: date

    @property
    def population(self) -> Any:
        return self.simulation.federation.spec.population()

    def clear_sum(self, partitions: Sequence[int]) -> np.ndarray:
        """The sum of these devices' bounded vectors, computed from their diaries."""
        grant = Decision(ANALYTICS_PURPOSE, "grant", "2026-01-01T00:00:00Z", None, 1)
        total = np.zeros(sum(q.dim for q in QUERIES))
        population = self.population
        for index in partitions:
            cohort = (
                population.params.age_bands[population.age_band[index]].name,
                population.params.regions[population.region[index]].name,
            )
            vectors = device_contributions(
                population.daily_series(index),
                week=self.week,
                queries=QUERIES,
                decision=grant,
                cohort=cohort,
            )
            total += np.concatenate([vectors[q.name] for q in QUERIES])
        return total


@contextmanager
def federation(
    root: Path,
    service: ConsentServer,
    devices: int,
    *,
    mods: Sequence[Callable[..., Message]] = (),
    without_noise: bool = False,
) -> Iterator[Federation]:
    simulation = make_simulation(
        root,
        service,
        devices=devices,
        seed=70 + devices,
        days=40,
        grant=lambda fed: fed.grant(
            range(devices), purposes=[TRAINING_PURPOSE, ANALYTICS_PURPOSE], workers=8
        ),
    )
    app = make_sim_client_app(
        defaults={"sim-root": str(simulation.sim_root), **simulation.settings.device_node_config()},
        mods=list(mods),
        _test_without_noise=without_noise,
    )
    grid = InProcessGrid(app, num_nodes=devices, workers=2)
    population = simulation.federation.spec.population()
    (week,) = last_full_weeks(population.start, 40, 1)
    yield Federation(simulation, grid, week)


def _week(fed: Federation, accountant: Accountant, store: ReleaseStore) -> AnalyticsRound:
    settings = fed.simulation.settings
    eligibility = EligibilityClient(
        settings.consent_url or "", token=settings.eligibility_token or ""
    )
    run = AnalyticsRun(
        plan=AnalyticsPlan(weeks=(fed.week,), epsilon=3.0, delta=1e-5, queries=QUERIES),
        eligibility=eligibility,
        accountant=accountant,
        store=store,
        grid=fed.grid,
        attestations=attest_nodes(fed.grid, fed.grid.get_node_ids(), timeout=60),
    )
    return AnalyticsRound(run, fed.week)


def _stores(root: Path) -> tuple[Accountant, ReleaseStore]:
    root.mkdir(parents=True, exist_ok=True)
    return (
        Accountant(f"sqlite:///{root / 'privacy.db'}", epsilon_budget=100.0, delta=1e-5),
        ReleaseStore(f"sqlite:///{root / 'releases.db'}"),
    )


@pytest.mark.parametrize(
    ("devices", "dropping"),
    [(3, 0.0), (10, 0.0), (10, 0.1), (10, 0.3), (50, 0.3), (200, 0.0), (200, 0.1), (200, 0.3)],
)
def test_without_noise_the_unmasked_sum_is_the_clear_sum(
    tmp_path: Path, consent_service: ConsentServer, devices: int, dropping: float
) -> None:
    dropped = frozenset(range(math.floor(dropping * devices)))
    with federation(
        tmp_path,
        consent_service,
        devices,
        mods=[DropAt(ANALYTICS_MESSAGE_TYPE, dropped)],
        without_noise=True,
    ) as fed:
        accountant, store = _stores(tmp_path)
        week = _week(fed, accountant, store)
        plan = week.plan(week.gate())
        total = week.secure_send(plan)

    assert plan.secure is not None and total.survivors == devices - len(dropped)
    decoded = plan.secure.mechanism.decode(total.total)
    clear = fed.clear_sum([i for i in range(devices) if i not in dropped])
    bound = plan.secure.mechanism.rounding_error_bound(total.survivors)
    assert np.max(np.abs(decoded - clear)) <= bound
    assert bound < 1e-4  # the encoding's resolution: s / gamma


def test_the_unmasked_sums_noise_has_the_documented_variance(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    residuals = []
    with federation(tmp_path, consent_service, 12) as fed:
        for repeat in range(4):
            accountant, store = _stores(tmp_path / str(repeat))
            week = _week(fed, accountant, store)
            plan = week.plan(week.gate())
            total = week.secure_send(plan)
            assert plan.secure is not None
            noise = plan.secure.mechanism.decode(total.total) - fed.clear_sum(range(12))
            residuals.append(noise / plan.secure.mechanism.noise_std(total.survivors))
    z = np.concatenate(residuals)
    n = len(z)

    # the documented std (sigma * C * sqrt(survivors / t)): chi-square bounds at 1e-4
    assert stats.chi2.ppf(5e-5, n) < float(np.sum(z**2)) < stats.chi2.isf(5e-5, n)
    assert abs(z.mean()) < 4.5 / math.sqrt(n)


def test_a_week_with_fewer_survivors_than_its_floor_releases_nothing_and_stays_charged(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    with federation(
        tmp_path, consent_service, 6, mods=[DropAt(ANALYTICS_MESSAGE_TYPE, frozenset({0, 1, 2}))]
    ) as fed:
        accountant, store = _stores(tmp_path)
        week = _week(fed, accountant, store)
        with pytest.raises(RoundAborted):
            week()

        assert store.releases() == []
        for index in range(6):
            assert sum(accountant.history(fed.simulation.key(index)).values()) == 1


def test_a_forged_neighbour_key_is_refused_by_every_peer(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    refusals: list[int] = []

    def watch(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(message, context)
        if ShareKeysRequest.RECORD in message.content and reply.has_error():
            refusals.append(partition(context))
        return reply

    with federation(tmp_path, consent_service, 5, mods=[watch, ForgeNeighbourKey()]) as fed:
        accountant, store = _stores(tmp_path)
        week = _week(fed, accountant, store)
        with pytest.raises(RoundAborted):
            week()

    assert sorted(refusals) == [0, 1, 2, 3, 4]
    assert store.releases() == []


def test_a_training_round_with_too_few_survivors_releases_no_model_and_stays_charged(
    tmp_path: Path, consent_service: ConsentServer
) -> None:
    simulation = make_simulation(tmp_path, consent_service, devices=6, seed=66, rounds=1)

    result = simulation.run(mods=[DropAt("train", frozenset({0, 1, 2}))])

    (report,) = result.rounds
    assert report.aborted is not None and report.release_id is None
    with simulation.store() as store:
        assert store.model_rounds(result.run_id) == []
    with simulation.accountant() as accountant:
        for index in range(6):
            assert sum(accountant.history(simulation.key(index)).values()) == 1
