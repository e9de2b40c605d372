"""The ledger as a domain: it refuses with domain errors, writes nothing when it refuses,
and the API maps each error class to one status."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
import sqlalchemy as sa

import consent.errors
from consent.api.errors import status_of
from consent.errors import (
    ClockSkewError,
    InvalidInputError,
    KeyFileError,
    LedgerError,
    LogIntegrityError,
    MalformedInputError,
    OutOfRangeError,
    ReplayedNonceError,
    SignatureError,
    StaleStatementError,
    StorageUnavailableError,
    UnknownPolicyError,
    UnknownPurposeError,
)
from consent.ledger import Ledger
from consent.models import Receipt
from consent.settings import ConsentSettings
from consent.store import migrate
from tests.consent.conftest import ManualClock
from tests.consent.signing import Signer


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger(tmp_path: Path, database_url: str, clock: ManualClock) -> Iterator[Ledger]:
    migrate(database_url)
    settings = ConsentSettings(data_dir=tmp_path, database_url=database_url, max_eligibility_keys=3)
    ledger = Ledger(settings, clock=clock)
    yield ledger
    ledger.close()


def body(record: dict[str, object]) -> bytes:
    return rfc8785.dumps(record)


def test_an_accepted_record_gets_a_typed_receipt(ledger: Ledger, clock: ManualClock) -> None:
    signer = Signer()
    [receipt] = ledger.append_batch([ledger.accept(body(signer.record(issued_at=clock())))])
    assert isinstance(receipt, Receipt)
    assert (receipt.index, receipt.tree_size) == (0, 1)
    assert receipt.checkpoint == ledger.checkpoint()


def _tampered(s: Signer, now: datetime) -> bytes:
    record = s.record(issued_at=now)
    record["statement"]["purpose"] = "population-analytics"  # no longer what was signed
    return body(record)


BAD: list[tuple[str, Callable[[Signer, datetime], bytes], type[LedgerError]]] = [
    ("not-an-object", lambda s, now: b"[1]", MalformedInputError),
    ("duplicate-keys", lambda s, now: b'{"a": 1, "a": 2}', MalformedInputError),
    (
        "unknown-field",
        lambda s, now: body(s.record(issued_at=now, color="blue")),
        InvalidInputError,
    ),
    (
        "unknown-purpose",
        lambda s, now: body(s.record("grant", "advertising", issued_at=now)),
        UnknownPurposeError,
    ),
    (
        "unknown-policy",
        lambda s, now: body(s.record(issued_at=now, policy_version="9")),
        UnknownPolicyError,
    ),
    (
        "clock-skew",
        lambda s, now: body(s.record(issued_at=now - timedelta(hours=1))),
        ClockSkewError,
    ),
    ("bad-signature", _tampered, SignatureError),
]


@pytest.mark.parametrize(("case", "make", "error"), BAD, ids=[case for case, _, _ in BAD])
def test_a_bad_record_is_refused_with_its_domain_error(
    ledger: Ledger,
    clock: ManualClock,
    case: str,
    make: Callable[[Signer, datetime], bytes],
    error: type[LedgerError],
) -> None:
    with pytest.raises(error) as refused:
        ledger.accept(make(Signer(), clock()))
    assert refused.value.message == str(refused.value) != ""
    assert ledger.size() == 0


def test_a_replay_and_a_stale_statement_are_refused_and_not_written(
    ledger: Ledger, clock: ManualClock
) -> None:
    signer = Signer()
    first = signer.record("grant", issued_at=clock())
    ledger.append_batch([ledger.accept(body(first))])
    clock.advance(60)
    stale = signer.record("withdraw", issued_at=clock() - timedelta(seconds=120))
    fresh = Signer().record("grant", issued_at=clock())
    results = ledger.append_batch(
        [ledger.accept(body(first)), ledger.accept(body(stale)), ledger.accept(body(fresh))]
    )
    assert isinstance(results[0], ReplayedNonceError)
    assert isinstance(results[1], StaleStatementError)
    assert isinstance(results[2], Receipt) and results[2].index == 1
    assert ledger.size() == 2
    assert ledger.state(signer.device_key).purposes["model-training"].action == "grant"


def test_positions_outside_the_log_are_out_of_range(ledger: Ledger, clock: ManualClock) -> None:
    ledger.append_batch([ledger.accept(body(Signer().record(issued_at=clock())))])
    for call in (
        lambda: ledger.inclusion_proof(0, 2),
        lambda: ledger.inclusion_proof(1, 1),
        lambda: ledger.consistency_proof(1, 0),
        lambda: ledger.entries(0, 2),
    ):
        with pytest.raises(OutOfRangeError):
            call()


def test_eligibility_refuses_an_unknown_purpose_and_too_many_keys(ledger: Ledger) -> None:
    with pytest.raises(UnknownPurposeError, match="known: model-training"):
        ledger.eligible("advertising", [])
    with pytest.raises(InvalidInputError, match="at most 3 device keys"):
        ledger.eligible("model-training", ["a", "b", "c", "d"])


def test_a_database_failure_is_storage_unavailable_and_leaves_the_tree_as_it_was(
    ledger: Ledger, clock: ManualClock, database_url: str
) -> None:
    ledger.append_batch([ledger.accept(body(Signer().record(issued_at=clock())))])
    accepted = ledger.accept(body(Signer().record(issued_at=clock())))
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE log_checkpoints"))
    engine.dispose()
    with pytest.raises(StorageUnavailableError, match="could not store the record"):
        ledger.append_batch([accepted])
    assert ledger.tree.size == 1 and ledger.size() == 1


def test_a_damaged_key_file_is_a_key_file_error(tmp_path: Path) -> None:
    key_file = tmp_path / "consent-log.key"
    key_file.write_bytes(b"short")
    key_file.chmod(0o600)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    with pytest.raises(KeyFileError, match="32-byte Ed25519 seed"):
        Ledger(ConsentSettings(data_dir=tmp_path, database_url=url))


def test_a_log_key_others_can_read_is_refused_naming_the_chmod(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    settings = ConsentSettings(data_dir=tmp_path, database_url=url)
    Ledger(settings).close()  # creates the key, 0600
    key_file = tmp_path / "consent-log.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_file.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"mode 0640; run `chmod 600 "):
        Ledger(settings)


def _domain_errors() -> list[type[LedgerError]]:
    return [
        cls
        for _, cls in inspect.getmembers(consent.errors, inspect.isclass)
        if issubclass(cls, LedgerError)
    ]


@pytest.mark.parametrize("error", _domain_errors(), ids=lambda cls: cls.__name__)
def test_every_domain_error_has_one_http_status(error: type[LedgerError]) -> None:
    status = status_of(error("message"))
    if error is LedgerError:
        assert status == 500  # an unclassified failure is the service's fault
    elif issubclass(error, (StorageUnavailableError, KeyFileError, LogIntegrityError)):
        assert status >= 500  # the service's or its database's failure, not the caller's
    else:
        assert 400 <= status < 500


def test_the_domain_and_the_verifier_load_no_web_framework() -> None:
    code = (
        "import sys, consent.ledger, consent.batcher, consent.verify, consent.models;"
        "print(sorted(m for m in ('fastapi', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_create_app_refuses_a_clock_beside_a_ledger(ledger: Ledger, clock: ManualClock) -> None:
    from consent.api import create_app

    with pytest.raises(ValueError, match="give the clock to the Ledger"):
        create_app(ledger.settings, ledger=ledger, clock=clock)
