"""The bytes a device signs and the log's leaves: RFC 8785 exactly, however they are made.

``canonical_statement`` writes a statement with orjson (sorted keys, compact) because it
is ~30 times faster than the pure-Python ``rfc8785``; these tests hold the two to the
same bytes for any statement the model accepts, and the leaf to the JCS of the record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consent.errors import InvalidInputError
from consent.ledger import Ledger
from consent.settings import ConsentSettings
from consent.statement import SignedRecord, Statement, canonical_record, canonical_statement
from consent.store import migrate
from tests.consent.signing import Signer

# Any text: control characters, quotes, backslashes, non-BMP, U+2028 (no lone surrogates:
# they are not text, and are tested apart below).
TEXT = st.text(min_size=1, max_size=32)


def statement_with(**fields: Any) -> Statement:
    return Statement.model_validate({**Signer().statement(), **fields})


@settings(max_examples=400, deadline=None)
@given(policy_version=TEXT, expires=st.booleans())
def test_a_statement_is_written_as_rfc8785_writes_it(policy_version: str, expires: bool) -> None:
    statement = statement_with(
        policy_version=policy_version,
        **({"expires_at": "2031-01-02T03:04:05.123Z"} if expires else {}),
    )
    fields = statement.model_dump(exclude_none=True)
    assert canonical_statement(statement) == rfc8785.dumps(fields)


@settings(max_examples=400, deadline=None)
@given(value=TEXT)
def test_string_escapes_agree_with_rfc8785(value: str) -> None:
    import orjson

    assert orjson.dumps({"k": value, "a": 1}, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(
        {"k": value, "a": 1}
    )


def test_a_lone_surrogate_never_reaches_the_writer(tmp_path: Path) -> None:
    """Neither writer can encode one; the model refuses it first, and the ledger says so."""
    with pytest.raises(ValidationError, match="unicode"):
        statement_with(policy_version="a\ud800")
    settings = ConsentSettings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'l.db'}")
    migrate(settings.resolved_database_url)
    ledger = Ledger(settings)
    record = {"statement": Signer().statement(policy_version="a\ud800"), "signature": "A" * 86}
    body = json.dumps(record).encode()  # the surrogate as the escape \ud800
    assert b"\\ud800" in body
    with pytest.raises(InvalidInputError, match="policy_version"):
        ledger.accept(body)
    ledger.close()


def test_the_leaf_is_the_rfc8785_of_the_signed_record() -> None:
    record = SignedRecord.model_validate(Signer().record())
    expected = rfc8785.dumps(record.model_dump(exclude_none=True))
    assert canonical_record(record) == expected
    assert canonical_record(record, canonical_statement(record.statement)) == expected


def test_migration_0002_keeps_the_entries_and_drops_only_the_redundant_index(
    database_url: str,
) -> None:
    """A ledger made before 0002 upgrades in place (``serve`` runs ``migrate``)."""
    config = Config()
    config.set_main_option("script_location", "consent/migrations")
    config.attributes["database_url"] = database_url
    command.upgrade(config, "0001")
    engine = sa.create_engine(database_url)

    def entry_indexes() -> set[str]:
        return {index["name"] for index in sa.inspect(engine).get_indexes("log_entries")}

    assert "ix_log_entries_device_key" in entry_indexes()
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                'INSERT INTO log_entries ("index", device_key, purpose, action, nonce, '
                "issued_at, leaf, leaf_hash) VALUES (0, 'k', 'p', 'grant', 'n', 't', :b, :b)"
            ),
            {"b": b"x"},
        )
    migrate(database_url)
    assert "ix_log_entries_device_key" not in entry_indexes()
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM log_entries")).scalar() == 1
    command.downgrade(config, "0001")
    assert "ix_log_entries_device_key" in entry_indexes()
    engine.dispose()
