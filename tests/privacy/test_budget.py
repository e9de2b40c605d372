"""The per-user Accountant: charging by eligibility, persistence and the hard stop."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from sqlalchemy import func, select

import privacy.budget
from privacy import (
    Accountant,
    BudgetExceededError,
    MechanismKey,
    PrivacyError,
    PrivacyEvent,
    epsilon_for,
    history_epsilon,
)
from privacy.accounting import History, canonical_history
from privacy.budget import over_budget
from privacy.ledger import PrivacyCharge, PrivacySpend

from .conftest import DELTA, MakeAccountant

TRAINING = PrivacyEvent.training_round(sampling_rate=0.01, noise_multiplier=1.0)
ANALYTICS = PrivacyEvent.analytics_release(noise_multiplier=20.0)


def row_counts(accountant: Accountant) -> tuple[int, int]:
    with accountant.engine.connect() as connection:
        charges = connection.scalar(select(func.count()).select_from(PrivacyCharge.__table__))
        spends = connection.scalar(select(func.sum(PrivacySpend.__table__.c.count)))
    return charges, spends or 0


def run_rounds(accountant: Accountant, rounds: int, eligible: dict[str, range]) -> None:
    for index in range(rounds):
        users = [user for user, window in eligible.items() if index in window]
        accountant.charge(users, TRAINING, purpose="training", release_id=f"round-{index}")


def test_a_user_eligible_in_fewer_rounds_has_spent_less(make_accountant: MakeAccountant) -> None:
    accountant = make_accountant()
    run_rounds(accountant, 60, {"always": range(60), "late-joiner": range(40, 60)})

    always, late = accountant.epsilon("always"), accountant.epsilon("late-joiner")

    assert late < always
    assert always == epsilon_for(sampling_rate=0.01, noise_multiplier=1.0, rounds=60, delta=DELTA)
    assert late == epsilon_for(sampling_rate=0.01, noise_multiplier=1.0, rounds=20, delta=DELTA)
    assert accountant.epsilon("never-eligible") == 0.0


def test_users_with_identical_histories_have_identical_epsilon(
    make_accountant: MakeAccountant,
) -> None:
    accountant = make_accountant()
    # Same counts reached in different rounds and orders.
    run_rounds(accountant, 30, {"a": range(0, 10), "b": range(20, 30), "c": range(5, 25)})
    accountant.charge(["a", "b"], ANALYTICS, purpose="analytics", release_id="week-1")

    assert accountant.history("a") == accountant.history("b")
    assert accountant.epsilon("a") == accountant.epsilon("b") != accountant.epsilon("c")


def test_users_with_identical_histories_share_one_epsilon_computation(
    make_accountant: MakeAccountant, monkeypatch: pytest.MonkeyPatch
) -> None:
    accountant = make_accountant()
    first, second = [f"u{i}" for i in range(500)], [f"v{i}" for i in range(500)]
    accountant.charge(first, TRAINING, purpose="training", release_id="r1")
    accountant.charge(second, ANALYTICS, purpose="analytics", release_id="a1")
    calls = []
    real = privacy.budget.history_epsilon

    def counting(*args: object, **kwargs: object) -> float:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(privacy.budget, "history_epsilon", counting)

    assert accountant.would_exceed(first + second, TRAINING) == []
    assert len(calls) == 2  # two distinct histories, neither dominating the other


def test_spending_survives_reopening_the_database(make_any_accountant: MakeAccountant) -> None:
    accountant = make_any_accountant()
    run_rounds(accountant, 5, {"a": range(5), "b": range(2)})
    accountant.charge(["a"], ANALYTICS, purpose="analytics", release_id="week-1")
    before = {user: accountant.epsilon(user) for user in ("a", "b")}

    reopened = make_any_accountant()

    assert {user: reopened.epsilon(user) for user in ("a", "b")} == before
    assert reopened.history("a") == {TRAINING.mechanism: 5, ANALYTICS.mechanism: 1}


def test_a_charge_past_the_budget_is_refused_naming_the_users_and_writes_nothing(
    make_any_accountant: MakeAccountant,
) -> None:
    budget = epsilon_for(sampling_rate=0.01, noise_multiplier=1.0, rounds=10, delta=DELTA)
    accountant = make_any_accountant(epsilon_budget=budget)
    run_rounds(accountant, 10, {"full": range(10), "fresh": range(9, 10)})
    before = row_counts(accountant)

    with pytest.raises(BudgetExceededError) as refused:
        accountant.charge(["fresh", "full"], TRAINING, purpose="training", release_id="round-10")

    assert refused.value.user_ids == ("full",)
    assert "full" in str(refused.value)
    assert row_counts(accountant) == before
    assert accountant.history("fresh") == {TRAINING.mechanism: 1}


def test_charging_round_after_round_stops_exactly_where_the_next_would_pass_the_budget(
    make_accountant: MakeAccountant,
) -> None:
    budget = 1.1
    accountant = make_accountant(epsilon_budget=budget)
    charged = 0
    with pytest.raises(BudgetExceededError):
        for index in range(1000):
            accountant.charge(["dev"], TRAINING, purpose="training", release_id=f"r{index}")
            charged += 1

    def eps(rounds: int) -> float:
        return epsilon_for(sampling_rate=0.01, noise_multiplier=1.0, rounds=rounds, delta=DELTA)

    assert eps(charged) <= budget < eps(charged + 1)
    assert accountant.epsilon("dev") == eps(charged) <= budget
    assert accountant.would_exceed(["dev"], TRAINING) == ["dev"]


def test_would_exceed_names_only_the_users_the_event_would_push_past_and_writes_nothing(
    make_accountant: MakeAccountant,
) -> None:
    budget = epsilon_for(sampling_rate=0.01, noise_multiplier=1.0, rounds=8, delta=DELTA)
    accountant = make_accountant(epsilon_budget=budget)
    run_rounds(accountant, 8, {"a": range(8), "b": range(3), "c": range(8)})
    before = row_counts(accountant)

    assert accountant.would_exceed(["c", "b", "a", "c"], TRAINING) == ["c", "a"]
    assert row_counts(accountant) == before


def test_charging_the_same_release_twice_is_refused(make_any_accountant: MakeAccountant) -> None:
    accountant = make_any_accountant()
    accountant.charge(["a"], TRAINING, purpose="training", release_id="round-1")
    before = row_counts(accountant)

    with pytest.raises(PrivacyError, match="already charged"):
        accountant.charge(["b", "a"], TRAINING, purpose="training", release_id="round-1")

    assert row_counts(accountant) == before


def test_max_epsilon_is_the_most_any_user_has_spent(make_accountant: MakeAccountant) -> None:
    accountant = make_accountant()
    assert accountant.max_epsilon() == 0.0
    run_rounds(accountant, 12, {"a": range(12), "b": range(4)})
    accountant.charge(["b"], ANALYTICS, purpose="analytics", release_id="w1")

    assert accountant.max_epsilon() == max(accountant.epsilon("a"), accountant.epsilon("b"))


def test_spent_by_purpose_prices_each_purpose_alone(make_accountant: MakeAccountant) -> None:
    accountant = make_accountant()
    run_rounds(accountant, 20, {"a": range(20)})
    for week in range(3):
        accountant.charge(["a"], ANALYTICS, purpose="analytics", release_id=f"w{week}")

    spent = accountant.spent_by_purpose("a")

    assert spent == {
        "analytics": history_epsilon({ANALYTICS.mechanism: 3}, delta=DELTA),
        "training": history_epsilon({TRAINING.mechanism: 20}, delta=DELTA),
    }
    assert max(spent.values()) < accountant.epsilon("a") < sum(spent.values())


@pytest.mark.parametrize("method", ["rdp", "pld"])
def test_over_budget_agrees_with_evaluating_every_history(method: str) -> None:
    # Three mechanisms, two unsampled (cheap) and one sampled, in random mixtures.
    rng = random.Random(7)
    keys = [(1.0, 6.0), (1.0, 15.0), (0.2, 2.0)]
    histories = {
        canonical_history(
            {keys[0]: rng.randint(0, 12), keys[1]: rng.randint(0, 40), keys[2]: rng.choice([0, 5])}
        )
        for _ in range(80)
    }
    budget = 3.0

    def brute(history: History) -> bool:
        return history_epsilon(dict(history), delta=DELTA, method=method) > budget

    expected = {history for history in histories if brute(history)}
    assert 0 < len(expected) < len(histories)
    assert over_budget(histories, epsilon_budget=budget, delta=DELTA, method=method) == expected


USERS = [f"device-{i:05d}" for i in range(10_000)]


def near_the_budget(accountant: Accountant) -> dict[str, dict[MechanismKey, int]]:
    """10,000 users with random training and analytics counts, written straight to the
    spend table; with a budget of 1.3 (about 300 of 500 rounds) many are near it."""
    rng = random.Random(0)
    histories = {
        user: {TRAINING.mechanism: rng.randint(1, 500), ANALYTICS.mechanism: rng.randint(0, 6)}
        for user in USERS
    }
    rows = [
        {"user_id": user, "sampling_rate": q, "noise_multiplier": sigma, "count": count}
        for user, history in histories.items()
        for (q, sigma), count in history.items()
        if count
    ]
    with accountant.engine.begin() as connection:
        connection.execute(PrivacySpend.__table__.insert(), rows)
    return histories


def count_epsilon_computations(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every epsilon the budget module asks for, memoized or not."""
    calls: list[object] = []
    real = privacy.budget.history_epsilon

    def counting(*args: Any, **kwargs: Any) -> float:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(privacy.budget, "history_epsilon", counting)
    return calls


def test_checking_ten_thousand_users_near_the_budget_takes_a_logarithmic_number_of_epsilons(
    make_accountant: MakeAccountant, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = 1.3
    accountant = make_accountant(epsilon_budget=budget)
    histories = near_the_budget(accountant)
    distinct = {canonical_history(history) for history in histories.values()}
    calls = count_epsilon_computations(monkeypatch)

    refused = set(accountant.would_exceed(USERS, TRAINING))

    # 7 analytics counts x ~500 training counts: thousands of distinct histories, each
    # chain (one analytics count) binary-searched along the training count.
    chains = len({h[ANALYTICS.mechanism] for h in histories.values()})
    bound = chains * (math.ceil(math.log2(len(distinct))) + 2)
    print(f"{len(calls)} epsilon computations for {len(distinct)} distinct histories")
    assert len(distinct) > 3000
    assert len(calls) <= bound < len(distinct) / 20
    assert 0 < len(refused) < len(USERS)
    for user in random.Random(1).sample(USERS, 20):
        after = {**histories[user], TRAINING.mechanism: histories[user][TRAINING.mechanism] + 1}
        assert (user in refused) == (history_epsilon(after, delta=DELTA) > budget)


def test_max_epsilon_of_some_users_is_the_most_any_of_them_has_spent(
    make_accountant: MakeAccountant,
) -> None:
    accountant = make_accountant()
    run_rounds(accountant, 12, {"a": range(12), "b": range(4), "c": range(6)})
    accountant.charge(["b"], ANALYTICS, purpose="analytics", release_id="w1")

    assert accountant.max_epsilon(["b", "c"]) == max(
        accountant.epsilon("b"), accountant.epsilon("c")
    )
    assert accountant.max_epsilon(["c"]) == accountant.epsilon("c") < accountant.epsilon("a")
    assert accountant.max_epsilon(["a", "b", "c"]) == accountant.max_epsilon()
    assert accountant.max_epsilon(["never-charged"]) == accountant.max_epsilon([]) == 0.0
    assert accountant.max_epsilon({"c", "never-charged"}) == accountant.epsilon("c")


@pytest.mark.parametrize("bad", ["abc", ["a", ""], ["a", 7]])
def test_max_epsilon_refuses_what_is_not_a_collection_of_user_ids(
    make_accountant: MakeAccountant, bad: Any
) -> None:
    accountant = make_accountant()
    run_rounds(accountant, 2, {"a": range(2)})

    with pytest.raises((TypeError, ValueError), match="user id"):
        accountant.max_epsilon(bad)


def test_max_epsilon_of_ten_thousand_users_evaluates_only_the_maximal_histories(
    make_accountant: MakeAccountant, monkeypatch: pytest.MonkeyPatch
) -> None:
    accountant = make_accountant(epsilon_budget=1e6)
    histories = near_the_budget(accountant)
    distinct = {canonical_history(history) for history in histories.values()}
    maximal = [
        h
        for h in distinct
        if not any(
            o != h and all(dict(o).get(key, 0) >= count for key, count in h) for o in distinct
        )
    ]
    brute = max(history_epsilon(dict(history), delta=DELTA) for history in distinct)
    calls = count_epsilon_computations(monkeypatch)

    everyone = accountant.max_epsilon(USERS)

    assert len(calls) == len(maximal) <= 7  # of thousands of distinct histories
    assert everyone == brute == accountant.max_epsilon()
    half = USERS[::2]
    assert accountant.max_epsilon(half) == max(
        history_epsilon(histories[user], delta=DELTA) for user in half
    )
