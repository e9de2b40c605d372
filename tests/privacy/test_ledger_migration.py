"""A privacy ledger made before distributed Skellam events keeps working after the upgrade."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    inspect,
    select,
)

from privacy import (
    Accountant,
    DistributedSkellam,
    PrivacyError,
    PrivacyEvent,
    SampledGaussian,
    epsilon_for,
    history_epsilon,
)
from privacy.ledger import PrivacyCharge, create_tables

from .conftest import DELTA

# The privacy tables as privacy/ledger.py defined them before the Skellam columns
# (commit c3f3392), copied here so the test does not depend on the current models.
OLD = MetaData()
OLD_CHARGE = Table(
    "privacy_charge",
    OLD,
    Column("id", Integer, primary_key=True),
    Column("user_id", String(256), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("release_id", String(256), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("sampling_rate", Float, nullable=False),
    Column("noise_multiplier", Float, nullable=False),
    Column("count", Integer, nullable=False),
    Column("charged_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("user_id", "purpose", "release_id", name="uq_privacy_charge_release"),
    Index("ix_privacy_charge_purpose_release", "purpose", "release_id"),
)
OLD_SPEND = Table(
    "privacy_spend",
    OLD,
    Column("user_id", String(256), primary_key=True),
    Column("sampling_rate", Float, primary_key=True),
    Column("noise_multiplier", Float, primary_key=True),
    Column("count", Integer, nullable=False),
)

TRAINING = PrivacyEvent.training_round(sampling_rate=0.05, noise_multiplier=1.0)
ANALYTICS = PrivacyEvent.analytics_release(noise_multiplier=8.0)
SKELLAM = DistributedSkellam(
    clip_norm=1.0, dimension=10, max_devices=20, min_survivors=10, noise_multiplier=1.0
)
SECURE = PrivacyEvent.training_round(sampling_rate=0.05, noise_multiplier=1.0, skellam=SKELLAM)
NEW_COLUMNS = {"variance", "l1_sensitivity", "l2_sensitivity"}


def old_database(url: str) -> Engine:
    """The old tables, holding what an old server wrote: user a in 3 training rounds and
    one analytics release, user b in 1 round."""
    engine = create_engine(url)
    OLD.create_all(engine)
    now = datetime.now(UTC)
    charges = [("a", f"round-{i}", TRAINING) for i in range(3)]
    charges += [("b", "round-2", TRAINING), ("a", "week-1", ANALYTICS)]
    with engine.begin() as connection:
        connection.execute(
            OLD_CHARGE.insert(),
            [
                {
                    "user_id": user,
                    "purpose": event.kind,
                    "release_id": release,
                    "kind": event.kind,
                    "sampling_rate": event.sampling_rate,
                    "noise_multiplier": event.noise_multiplier,
                    "count": event.count,
                    "charged_at": now,
                }
                for user, release, event in charges
            ],
        )
        connection.execute(
            OLD_SPEND.insert(),
            [
                {"user_id": "a", "sampling_rate": 0.05, "noise_multiplier": 1.0, "count": 3},
                {"user_id": "a", "sampling_rate": 1.0, "noise_multiplier": 8.0, "count": 1},
                {"user_id": "b", "sampling_rate": 0.05, "noise_multiplier": 1.0, "count": 1},
            ],
        )
    return engine


def columns(engine: Engine, table: str) -> dict[str, bool]:
    """Column name -> nullable, as the database reports them."""
    return {column["name"]: column["nullable"] for column in inspect(engine).get_columns(table)}


@pytest.fixture
def old_url(any_database_url: str) -> str:
    old_database(any_database_url).dispose()
    return any_database_url


def test_opening_an_old_database_adds_the_nullable_columns_and_the_skellam_table(
    old_url: str,
) -> None:
    engine = create_engine(old_url)
    assert not NEW_COLUMNS & set(columns(engine, "privacy_charge"))

    Accountant(old_url, epsilon_budget=10.0, delta=DELTA).close()

    charge_columns = columns(engine, "privacy_charge")
    assert {name: charge_columns[name] for name in NEW_COLUMNS} == dict.fromkeys(NEW_COLUMNS, True)
    assert set(columns(engine, "privacy_spend")) == {c.name for c in OLD_SPEND.columns}
    assert "privacy_skellam_spend" in inspect(engine).get_table_names()
    with engine.connect() as connection:
        lattice = connection.execute(
            select(*(PrivacyCharge.__table__.c[name] for name in sorted(NEW_COLUMNS)))
        ).all()
    assert lattice == [(None, None, None)] * 5  # the old rows read as Gaussian
    engine.dispose()


def test_old_rows_read_as_gaussian_and_new_charges_of_both_kinds_add_up(old_url: str) -> None:
    with Accountant(old_url, epsilon_budget=10.0, delta=DELTA) as accountant:
        assert accountant.history("a") == {TRAINING.mechanism: 3, ANALYTICS.mechanism: 1}
        assert accountant.epsilon("b") == epsilon_for(
            sampling_rate=0.05, noise_multiplier=1.0, rounds=1, delta=DELTA
        )
        assert accountant.spent_by_purpose("a") == {
            "analytics": history_epsilon({ANALYTICS.mechanism: 1}, delta=DELTA),
            "training": history_epsilon({TRAINING.mechanism: 3}, delta=DELTA),
        }

        accountant.charge(["a", "b"], TRAINING, purpose="training", release_id="round-3")
        accountant.charge(["a", "c"], SECURE, purpose="training", release_id="round-4")

    with Accountant(old_url, epsilon_budget=10.0, delta=DELTA) as reopened:
        assert reopened.history("a") == {
            SampledGaussian(0.05, 1.0): 4,
            ANALYTICS.mechanism: 1,
            SECURE.mechanism: 1,
        }
        assert reopened.history("b") == {TRAINING.mechanism: 2}
        assert reopened.history("c") == {SECURE.mechanism: 1}
        assert reopened.max_epsilon(["a", "b", "c"]) == reopened.epsilon("a")
        assert reopened.max_epsilon(["a", "c"], purpose="training") == history_epsilon(
            {TRAINING.mechanism: 4, SECURE.mechanism: 1}, delta=DELTA
        )


def test_concurrent_openings_of_an_old_database_migrate_it_once(old_url: str) -> None:
    openers = 4
    engines = [create_engine(old_url) for _ in range(openers)]
    start = threading.Barrier(openers)
    failures: list[BaseException] = []

    def migrate(engine: Engine) -> None:
        try:
            start.wait(timeout=60)
            create_tables(engine)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=migrate, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert failures == []
    names = [column["name"] for column in inspect(engines[0]).get_columns("privacy_charge")]
    assert sorted(names) == sorted({*names}) and set(names) >= NEW_COLUMNS
    for engine in engines:
        engine.dispose()
    with Accountant(old_url, epsilon_budget=10.0, delta=DELTA) as accountant:
        assert accountant.history("b") == {TRAINING.mechanism: 1}


def test_a_table_lacking_a_required_column_is_refused_and_nothing_is_altered(
    any_database_url: str,
) -> None:
    broken = MetaData()  # an audit table without its required "kind" column
    Table(
        "privacy_charge",
        broken,
        Column("id", Integer, primary_key=True),
        Column("user_id", String(256), nullable=False),
    )
    engine = create_engine(any_database_url)
    broken.create_all(engine)
    before = columns(engine, "privacy_charge")

    with pytest.raises(PrivacyError, match=r"privacy_charge\.kind"):
        create_tables(engine)

    assert columns(engine, "privacy_charge") == before
    engine.dispose()
