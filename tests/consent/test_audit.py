"""``moodfed consent audit``: passes on an honest log, names the index of a changed row."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rfc8785
import sqlalchemy as sa

from consent.merkle import hash_leaf
from tests.conftest import ConsentServer
from tests.consent.signing import Signer


@pytest.fixture
def written_log(tmp_path: Path, database_url: str) -> Iterator[ConsentServer]:
    """A stopped service whose log holds 8 entries, each appended (and checkpointed) alone."""
    server = ConsentServer(data_dir=tmp_path, database_url=database_url).start()
    signers = [Signer() for _ in range(4)]
    with server.client() as client:
        for s in signers:
            assert client.post("/v1/consents", json=s.record("grant")).status_code == 201
        for s in signers:
            assert (
                client.post("/v1/consents", json=s.record("withdraw", "model-training")).status_code
                == 201
            )
    server.stop()
    yield server


def execute(url: str, sql: str, **params: object) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(sql), params)
    engine.dispose()


def leaf_of(url: str, index: int) -> bytes:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        leaf = connection.execute(
            sa.text('SELECT leaf FROM log_entries WHERE "index" = :i'), {"i": index}
        ).scalar_one()
    engine.dispose()
    return bytes(leaf)


def test_audit_passes_on_an_untouched_log(written_log: ConsentServer) -> None:
    result = written_log.audit()
    assert result.returncode == 0, result.stderr
    assert "8 entries" in result.stderr


def change_leaf_bytes(url: str) -> None:
    execute(
        url,
        'UPDATE log_entries SET leaf = :leaf WHERE "index" = 3',
        leaf=leaf_of(url, 3).replace(b'"grant"', b'"grunt"'),
    )


def change_leaf_and_its_hash(url: str) -> None:
    leaf = leaf_of(url, 3).replace(b'"model-training"', b'"population-analytics"')
    execute(
        url,
        'UPDATE log_entries SET leaf = :leaf, leaf_hash = :h WHERE "index" = 3',
        leaf=leaf,
        h=hash_leaf(leaf),
    )


def change_a_column(url: str) -> None:
    execute(url, "UPDATE log_entries SET action = 'withdraw' WHERE \"index\" = 3")


def delete_the_row(url: str) -> None:
    execute(url, 'DELETE FROM log_entries WHERE "index" = 3')


def substitute_a_validly_signed_record(url: str) -> None:
    record = Signer().record("grant")
    leaf = rfc8785.dumps(record)
    s = record["statement"]
    execute(
        url,
        "UPDATE log_entries SET leaf = :leaf, leaf_hash = :h, device_key = :k, nonce = :n, "
        "issued_at = :t, action = 'grant', purpose = :p WHERE \"index\" = 3",
        leaf=leaf,
        h=hash_leaf(leaf),
        k=s["device_key"],
        n=s["nonce"],
        t=s["issued_at"],
        p=s["purpose"],
    )


def change_the_materialized_state(url: str) -> None:
    execute(url, 'UPDATE consent_states SET action = \'grant\', "index" = 3 WHERE "index" = 7')


@pytest.mark.parametrize(
    "tamper",
    [
        change_leaf_bytes,
        change_leaf_and_its_hash,
        change_a_column,
        delete_the_row,
        substitute_a_validly_signed_record,
    ],
)
def test_a_changed_row_fails_the_audit_naming_its_index(
    written_log: ConsentServer, tamper: Callable[[str], None]
) -> None:
    tamper(written_log.database_url)
    result = written_log.audit()
    assert result.returncode == 1
    assert "audit FAILED at index 3" in result.stderr, result.stderr


def test_a_changed_consent_state_fails_the_audit(written_log: ConsentServer) -> None:
    change_the_materialized_state(written_log.database_url)
    result = written_log.audit()
    assert result.returncode == 1
    assert "consent state" in result.stderr and "index" in result.stderr


def test_a_forged_checkpoint_fails_the_audit(written_log: ConsentServer) -> None:
    execute(
        written_log.database_url,
        "UPDATE log_checkpoints SET note = replace(note, '\n5\n', '\n6\n') WHERE size = 5",
    )
    result = written_log.audit()
    assert result.returncode == 1
    assert "checkpoint 5" in result.stderr
