"""Distributed Skellam events in the per-user budget: keys, composition with Gaussian
events, the hard stop, and their storage in the SQL ledger."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant
from sqlalchemy import func, select

from privacy import (
    Accountant,
    BudgetExceededError,
    DistributedSkellam,
    PrivacyEvent,
    SampledGaussian,
    SampledSkellam,
    epsilon_for,
    history_epsilon,
)
from privacy.accounting import canonical_history, dp_event_for, mechanism_key
from privacy.budget import over_budget
from privacy.ledger import PrivacyCharge, PrivacySkellamSpend, PrivacySpend
from privacy.skellam import skellam_rdp
from privacy.subsampled_rdp import symmetric_subsampled_rdp

from .conftest import DELTA, MakeAccountant

ORDERS = tuple(float(order) for order in rdp_privacy_accountant.DEFAULT_RDP_ORDERS)


def skellam(noise_multiplier: float = 1.0, **overrides: int) -> DistributedSkellam:
    """A small model (d = 10) so each distinct mechanism's curve is quick to compute."""
    sizes = {"dimension": 10, "max_devices": 20, "min_survivors": 10} | overrides
    return DistributedSkellam(clip_norm=1.0, noise_multiplier=noise_multiplier, **sizes)


SKELLAM = skellam(1.0)
SKELLAM_ROUND = PrivacyEvent.training_round(
    sampling_rate=0.05, noise_multiplier=1.0, skellam=SKELLAM
)
GAUSSIAN_ROUND = PrivacyEvent.training_round(sampling_rate=0.05, noise_multiplier=1.0)
SECURE_WEEK = PrivacyEvent.analytics_release(
    noise_multiplier=4.0, skellam=skellam(4.0, dimension=40, max_devices=100, min_survivors=60)
)


def row_counts(accountant: Accountant) -> tuple[int, int, int]:
    """Audit rows, Gaussian spend total, Skellam spend total."""
    with accountant.engine.connect() as connection:
        return (
            connection.scalar(select(func.count()).select_from(PrivacyCharge.__table__)) or 0,
            connection.scalar(select(func.sum(PrivacySpend.__table__.c.count))) or 0,
            connection.scalar(select(func.sum(PrivacySkellamSpend.__table__.c.count))) or 0,
        )


def charge_rounds(
    accountant: Accountant, event: PrivacyEvent, users: list[str], rounds: int, prefix: str
) -> None:
    for index in range(rounds):
        accountant.charge(users, event, purpose="training", release_id=f"{prefix}-{index}")


# --- keys -------------------------------------------------------------------------


def test_a_skellam_events_key_holds_what_its_rdp_depends_on() -> None:
    key = SKELLAM_ROUND.mechanism

    assert isinstance(key, SampledSkellam)
    assert key == SampledSkellam(
        sampling_rate=0.05,
        noise_multiplier=1.0,
        variance=SKELLAM.central_variance,
        l1_sensitivity=SKELLAM.l1_sensitivity,
        l2_sensitivity=SKELLAM.l2_sensitivity,
    )
    assert all(type(field) is float for field in key)


def test_equal_mechanisms_have_equal_hashable_keys_and_different_ones_do_not() -> None:
    again = PrivacyEvent.training_round(
        sampling_rate=0.05, noise_multiplier=1.0, skellam=skellam(1.0)
    )
    other_rate = PrivacyEvent.training_round(
        sampling_rate=0.1, noise_multiplier=1.0, skellam=SKELLAM
    )
    other_cohort = PrivacyEvent.training_round(
        sampling_rate=0.05, noise_multiplier=1.0, skellam=skellam(1.0, min_survivors=12)
    )

    assert again.mechanism == SKELLAM_ROUND.mechanism
    assert hash(again.mechanism) == hash(SKELLAM_ROUND.mechanism)
    assert len({SKELLAM_ROUND.mechanism, other_rate.mechanism, other_cohort.mechanism}) == 3
    # Same (q, sigma) as a Gaussian round, yet a different mechanism and a different key.
    assert GAUSSIAN_ROUND.mechanism != SKELLAM_ROUND.mechanism
    assert canonical_history({GAUSSIAN_ROUND.mechanism: 1, SKELLAM_ROUND.mechanism: 2}) == (
        (GAUSSIAN_ROUND.mechanism, 1),
        (SKELLAM_ROUND.mechanism, 2),
    )


def test_an_event_whose_noise_multiplier_differs_from_its_mechanisms_is_refused() -> None:
    with pytest.raises(ValueError, match="differs from the Skellam"):
        PrivacyEvent.training_round(sampling_rate=0.05, noise_multiplier=1.5, skellam=SKELLAM)
    with pytest.raises(ValueError, match="differs from the Skellam"):
        PrivacyEvent.analytics_release(noise_multiplier=1.5, skellam=SKELLAM)
    with pytest.raises(TypeError, match="DistributedSkellam"):
        PrivacyEvent.training_round(
            sampling_rate=0.05,
            noise_multiplier=1.0,
            skellam="skellam",  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    "key",
    [
        SampledSkellam(0.1, 1.0, math.nan, 2.0, 1.0),
        SampledSkellam(0.1, 1.0, 1e12, -2.0, 1.0),
        SampledSkellam(0.0, 1.0, 1e12, 2.0, 1.0),
        SampledSkellam(0.1, 1.0, 1e12, 2.0, None),  # type: ignore[arg-type]
        (0.1, 1.0, 1e12, 2.0, 1.0),  # a plain 5-tuple is not a Skellam key
        (0.1,),
        ("0.1", 1.0),
    ],
)
def test_malformed_keys_are_refused(key: object) -> None:
    with pytest.raises(ValueError):
        mechanism_key(key)
    with pytest.raises(ValueError):
        history_epsilon({key: 1}, delta=DELTA)  # type: ignore[dict-item]


def test_dp_accounting_has_no_event_for_a_skellam_history() -> None:
    with pytest.raises(ValueError, match="no event for the distributed Skellam"):
        dp_event_for({SKELLAM_ROUND.mechanism: 1})


# --- epsilon ----------------------------------------------------------------------


@pytest.mark.parametrize(("q", "rounds"), [(0.05, 40), (0.2, 7), (1.0, 3)])
def test_a_skellam_events_epsilon_through_the_accountant_is_the_mechanisms_own(
    make_accountant: MakeAccountant, q: float, rounds: int
) -> None:
    accountant = make_accountant(epsilon_budget=1e6)
    event = PrivacyEvent.training_round(sampling_rate=q, noise_multiplier=1.0, skellam=SKELLAM)

    charge_rounds(accountant, event, ["dev"], rounds, "r")

    assert accountant.history("dev") == {event.mechanism: rounds}
    assert accountant.epsilon("dev") == SKELLAM.epsilon(sampling_rate=q, rounds=rounds, delta=DELTA)


def test_a_secure_analytics_release_counts_each_statistic(make_accountant: MakeAccountant) -> None:
    accountant = make_accountant()
    mechanism = SECURE_WEEK.skellam
    assert mechanism is not None
    event = PrivacyEvent.analytics_release(noise_multiplier=4.0, count=3, skellam=mechanism)

    accountant.charge(["dev"], event, purpose="analytics", release_id="week-1")

    assert event.sampling_rate == 1.0
    assert accountant.epsilon("dev") == mechanism.epsilon(sampling_rate=1.0, rounds=3, delta=DELTA)


def independent_mixed_epsilon(
    gaussian: tuple[float, float, int], secure: tuple[DistributedSkellam, float, int]
) -> float:
    """The sum of the two curves, each computed without the privacy package's composition:
    dp-accounting's RdpAccountant for the Gaussian, the Skellam bound amplified by
    sampling for the Skellam event; one dp-accounting conversion."""
    q, sigma, count = gaussian
    accountant = rdp_privacy_accountant.RdpAccountant(orders=ORDERS)
    accountant.compose(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), count
    )
    mechanism, rate, rounds = secure
    skellam_curve = rounds * symmetric_subsampled_rdp(
        lambda order: skellam_rdp(
            order,
            variance=mechanism.central_variance,
            l1_sensitivity=mechanism.l1_sensitivity,
            l2_sensitivity=mechanism.l2_sensitivity,
        ),
        sampling_rate=rate,
        orders=ORDERS,
    )
    total = np.asarray(accountant.rdp) + skellam_curve
    epsilon, _ = rdp_privacy_accountant.compute_epsilon(ORDERS, total, DELTA)
    return float(epsilon)


def test_a_mixed_histories_epsilon_converts_the_sum_of_both_curves(
    make_accountant: MakeAccountant,
) -> None:
    accountant = make_accountant(epsilon_budget=1e6)
    charge_rounds(accountant, GAUSSIAN_ROUND, ["dev"], 30, "central")
    charge_rounds(accountant, SKELLAM_ROUND, ["dev"], 20, "secure")

    mixed = accountant.epsilon("dev")

    expected = independent_mixed_epsilon((0.05, 1.0, 30), (SKELLAM, 0.05, 20))
    assert mixed == pytest.approx(expected, rel=1e-12)
    gaussian_alone = epsilon_for(sampling_rate=0.05, noise_multiplier=1.0, rounds=30, delta=DELTA)
    skellam_alone = SKELLAM.epsilon(sampling_rate=0.05, rounds=20, delta=DELTA)
    assert max(gaussian_alone, skellam_alone) < mixed < gaussian_alone + skellam_alone


def test_pld_never_gives_a_pld_figure_for_a_history_holding_a_skellam_event() -> None:
    mixed = {GAUSSIAN_ROUND.mechanism: 30, SKELLAM_ROUND.mechanism: 20}
    gaussian = {GAUSSIAN_ROUND.mechanism: 30}

    assert history_epsilon(mixed, delta=DELTA, method="pld") == history_epsilon(
        mixed, delta=DELTA, method="rdp"
    )
    # A Gaussian-only history still gets the (tighter) PLD figure.
    assert history_epsilon(gaussian, delta=DELTA, method="pld") < history_epsilon(
        gaussian, delta=DELTA, method="rdp"
    )


# --- the hard stop ------------------------------------------------------------------


def test_skellam_rounds_stop_exactly_where_the_next_would_pass_the_budget(
    make_any_accountant: MakeAccountant,
) -> None:
    def eps(rounds: int) -> float:
        return SKELLAM.epsilon(sampling_rate=0.05, rounds=rounds, delta=DELTA)

    budget = (eps(12) + eps(13)) / 2
    accountant = make_any_accountant(epsilon_budget=budget)
    charge_rounds(accountant, SKELLAM_ROUND, ["a", "b"], 12, "r")
    before = row_counts(accountant)

    with pytest.raises(BudgetExceededError) as refused:
        accountant.charge(["fresh", "a"], SKELLAM_ROUND, purpose="training", release_id="r-12")

    assert refused.value.user_ids == ("a",)
    assert row_counts(accountant) == before
    assert accountant.history("fresh") == {}
    assert accountant.epsilon("a") == eps(12) <= budget
    assert accountant.would_exceed(["fresh", "b", "a"], SKELLAM_ROUND) == ["b", "a"]


def test_a_skellam_release_on_top_of_gaussian_rounds_is_refused_past_the_budget(
    make_any_accountant: MakeAccountant,
) -> None:
    rounds = {GAUSSIAN_ROUND.mechanism: 30}
    after = {**rounds, SECURE_WEEK.mechanism: 1}
    budget = (history_epsilon(rounds, delta=DELTA) + history_epsilon(after, delta=DELTA)) / 2
    accountant = make_any_accountant(epsilon_budget=budget)
    charge_rounds(accountant, GAUSSIAN_ROUND, ["spent"], 30, "r")
    charge_rounds(accountant, GAUSSIAN_ROUND, ["light"], 5, "early")
    before = row_counts(accountant)

    assert accountant.would_exceed(["light", "spent"], SECURE_WEEK) == ["spent"]
    with pytest.raises(BudgetExceededError):
        accountant.charge(["light", "spent"], SECURE_WEEK, purpose="analytics", release_id="w1")

    assert row_counts(accountant) == before
    assert accountant.history("light") == {GAUSSIAN_ROUND.mechanism: 5}
    accountant.charge(["light"], SECURE_WEEK, purpose="analytics", release_id="w1")
    assert accountant.history("light") == {GAUSSIAN_ROUND.mechanism: 5, SECURE_WEEK.mechanism: 1}


# --- max_epsilon and per-purpose spend --------------------------------------------


@pytest.mark.parametrize("method", ["rdp", "pld"])
def test_max_epsilon_over_users_with_mixed_histories_is_the_largest_of_their_epsilons(
    make_accountant: MakeAccountant, method: str
) -> None:
    accountant = make_accountant(epsilon_budget=1e6, method=method)
    charge_rounds(accountant, GAUSSIAN_ROUND, ["central", "both", "dominated"], 40, "c")
    charge_rounds(accountant, SKELLAM_ROUND, ["secure", "both"], 10, "s")
    charge_rounds(accountant, SKELLAM_ROUND, ["dominated"], 1, "one")
    accountant.charge(["secure", "both"], SECURE_WEEK, purpose="analytics", release_id="w1")
    users = ["central", "secure", "both", "dominated", "never"]

    each = {user: accountant.epsilon(user) for user in users}

    assert accountant.max_epsilon(users) == max(each.values()) == each["both"]
    assert accountant.max_epsilon() == max(each.values())
    assert accountant.max_epsilon(["central", "secure"]) == max(each["central"], each["secure"])
    assert accountant.max_epsilon(["dominated", "central"]) == each["dominated"]
    assert accountant.max_epsilon(["never"]) == 0.0


def test_max_epsilon_per_purpose_prices_only_that_purposes_charges(
    make_any_accountant: MakeAccountant,
) -> None:
    accountant = make_any_accountant()
    charge_rounds(accountant, SKELLAM_ROUND, ["a", "b"], 6, "r")
    charge_rounds(accountant, GAUSSIAN_ROUND, ["a"], 4, "c")
    for week in range(3):
        accountant.charge(["b"], SECURE_WEEK, purpose="analytics", release_id=f"w{week}")

    training = accountant.max_epsilon(["a", "b"], purpose="training")
    analytics = accountant.max_epsilon(["a", "b"], purpose="analytics")

    assert training == history_epsilon(
        {SKELLAM_ROUND.mechanism: 6, GAUSSIAN_ROUND.mechanism: 4}, delta=DELTA
    )
    assert analytics == history_epsilon({SECURE_WEEK.mechanism: 3}, delta=DELTA)
    assert accountant.max_epsilon(["a"], purpose="analytics") == 0.0
    assert accountant.max_epsilon(purpose="analytics") == analytics
    assert accountant.spent_by_purpose("b") == {
        "analytics": analytics,
        "training": history_epsilon({SKELLAM_ROUND.mechanism: 6}, delta=DELTA),
    }
    with pytest.raises(ValueError, match="purpose"):
        accountant.max_epsilon(["a"], purpose="")


# --- the ledger ---------------------------------------------------------------------


def test_skellam_and_gaussian_events_with_the_same_rate_and_sigma_are_stored_apart(
    make_any_accountant: MakeAccountant,
) -> None:
    accountant = make_any_accountant()
    charge_rounds(accountant, GAUSSIAN_ROUND, ["dev"], 3, "c")
    charge_rounds(accountant, SKELLAM_ROUND, ["dev"], 2, "s")

    reopened = make_any_accountant()

    history = reopened.history("dev")
    assert history == {SampledGaussian(0.05, 1.0): 3, SKELLAM_ROUND.mechanism: 2}
    assert [type(key) for key in sorted(history, key=len)] == [
        SampledGaussian,
        SampledSkellam,
    ]
    assert row_counts(reopened) == (5, 3, 2)
    with reopened.engine.connect() as connection:
        lattice = connection.execute(
            select(PrivacyCharge.__table__.c.variance).order_by(PrivacyCharge.__table__.c.id)
        ).scalars()
        variance = SKELLAM.central_variance
        assert list(lattice) == [None, None, None, variance, variance]


def test_concurrent_charges_of_skellam_events_add_up(make_any_accountant: MakeAccountant) -> None:
    writers, charges_each = 4, 5
    users = [f"device-{i:03d}" for i in range(40)]
    accountants = [make_any_accountant(epsilon_budget=1e6) for _ in range(writers)]
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(index: int) -> Callable[[], None]:
        def run() -> None:
            try:
                start.wait(timeout=60)
                for charge in range(charges_each):
                    event = SKELLAM_ROUND if charge % 2 == 0 else GAUSSIAN_ROUND
                    accountants[index].charge(
                        users, event, purpose="training", release_id=f"w{index}-r{charge}"
                    )
            except BaseException as error:  # reported by the main thread
                failures.append(error)

        return run

    threads = [threading.Thread(target=write(index)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for accountant in accountants:
        accountant.close()

    assert failures == []
    reopened = make_any_accountant()
    skellam_rounds = writers * len(range(0, charges_each, 2))
    gaussian_rounds = writers * charges_each - skellam_rounds
    for user in (users[0], users[-1]):
        assert reopened.history(user) == {
            SKELLAM_ROUND.mechanism: skellam_rounds,
            GAUSSIAN_ROUND.mechanism: gaussian_rounds,
        }
    with reopened.engine.connect() as connection:
        spend_rows = connection.scalar(
            select(func.count()).select_from(PrivacySkellamSpend.__table__)
        )
    assert spend_rows == len(users)
    assert row_counts(reopened) == (
        writers * charges_each * len(users),
        gaussian_rounds * len(users),
        skellam_rounds * len(users),
    )


@pytest.mark.parametrize("method", ["rdp", "pld"])
def test_over_budget_on_mixed_histories_agrees_with_evaluating_every_history(
    method: str,
) -> None:
    rng = random.Random(3)
    keys = [GAUSSIAN_ROUND.mechanism, SKELLAM_ROUND.mechanism, SECURE_WEEK.mechanism]
    histories = {
        canonical_history(
            {
                keys[0]: rng.randint(0, 60),
                keys[1]: rng.choice([0, 10, 40]),
                keys[2]: rng.randint(0, 3),
            }
        )
        for _ in range(60)
    }
    budget = 2.0

    expected = {
        history
        for history in histories
        if history_epsilon(dict(history), delta=DELTA, method=method) > budget
    }

    assert 0 < len(expected) < len(histories)
    assert over_budget(histories, epsilon_budget=budget, delta=DELTA, method=method) == expected
