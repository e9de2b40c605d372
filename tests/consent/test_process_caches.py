"""What each worker process keeps in memory (the eligibility index, the Merkle tree) is
never staler than the log, nor from another history of it.

Two ledgers on one database stand for two worker processes (each has its own caches);
the last test runs the real service with two workers over HTTP and asks every worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import rfc8785
import sqlalchemy as sa

from consent.ledger import Ledger
from consent.merkle import MerkleTree
from consent.models import Receipt
from consent.note import NoteVerifier, open_checkpoint
from consent.settings import ConsentSettings
from consent.store import migrate
from tests.conftest import ConsentServer
from tests.consent.conftest import ManualClock
from tests.consent.signing import Signer, rfc3339


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def two_ledgers(
    tmp_path: Path, database_url: str, clock: ManualClock
) -> Iterator[tuple[Ledger, Ledger]]:
    migrate(database_url)
    settings = ConsentSettings(data_dir=tmp_path, database_url=database_url)
    first, second = Ledger(settings, clock=clock), Ledger(settings, clock=clock)
    yield first, second
    first.close()
    second.close()


def decide(ledger: Ledger, signer: Signer, action: str, clock: ManualClock, **kw: str) -> None:
    record = signer.record(action, issued_at=clock(), **kw)
    [receipt] = ledger.append_batch([ledger.accept(rfc8785.dumps(record))])
    assert not isinstance(receipt, Exception), receipt
    clock.advance(1)


def keys(signers: list[Signer]) -> list[str]:
    return [s.device_key for s in signers]


def roll_back_to_one_entry(database_url: str, *, dropped_key: str) -> None:
    """What an operator restoring an older copy leaves: entry 1 on, its checkpoints and
    its device's state gone, the head at the signed size 1."""
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text('DELETE FROM log_entries WHERE "index" >= 1'))
        connection.execute(sa.text("DELETE FROM log_checkpoints WHERE size > 1"))
        connection.execute(
            sa.text("DELETE FROM consent_states WHERE device_key = :k"), {"k": dropped_key}
        )
        connection.execute(
            sa.text(
                "UPDATE log_head SET size = 1, "
                "note = (SELECT note FROM log_checkpoints WHERE size = 1) WHERE id = 1"
            )
        )
    engine.dispose()


def test_a_decision_written_by_another_process_is_in_the_next_answer(
    two_ledgers: tuple[Ledger, Ledger], clock: ManualClock
) -> None:
    answering, writing = two_ledgers
    signers = [Signer() for _ in range(6)]
    for signer in signers:
        decide(writing, signer, "grant", clock)
    assert answering.eligible("model-training", keys(signers)) == keys(signers)  # loaded
    decide(writing, signers[2], "withdraw", clock)
    decide(writing, signers[4], "withdraw", clock)
    late = Signer()
    decide(writing, late, "grant", clock)
    assert answering.eligible("model-training", [*keys(signers), late.device_key]) == [
        *keys(signers[:2]),
        signers[3].device_key,
        signers[5].device_key,
        late.device_key,
    ]
    # A withdrawal, a new grant and a withdrawal again, all since the last answer.
    decide(writing, signers[2], "grant", clock)
    decide(writing, signers[0], "withdraw", clock)
    decide(writing, signers[2], "withdraw", clock)
    assert answering.eligible("model-training", keys(signers)) == [
        signers[1].device_key,
        signers[3].device_key,
        signers[5].device_key,
    ]
    assert answering.eligible("population-analytics", keys(signers)) == []


def test_expiry_is_judged_when_the_question_is_asked(
    two_ledgers: tuple[Ledger, Ledger], clock: ManualClock
) -> None:
    answering, writing = two_ledgers
    lasting, expiring = Signer(), Signer()
    decide(writing, lasting, "grant", clock)
    decide(writing, expiring, "grant", clock, expires_at=rfc3339(clock() + timedelta(hours=1)))
    both = keys([lasting, expiring])
    assert answering.eligible("model-training", both) == both
    clock.advance(3600)  # nothing written: the index is current, the grant has expired
    assert answering.eligible("model-training", both) == [lasting.device_key]


@pytest.mark.parametrize("grown_again", [0, 2], ids=["smaller", "grown-past-the-index"])
def test_a_log_rolled_back_under_the_index_is_read_again_whole(
    two_ledgers: tuple[Ledger, Ledger], clock: ManualClock, database_url: str, grown_again: int
) -> None:
    answering, writing = two_ledgers
    kept, dropped = Signer(), Signer()
    decide(writing, kept, "grant", clock)
    decide(writing, dropped, "grant", clock)
    both = keys([kept, dropped])
    assert answering.eligible("model-training", both) == both  # the index is at size 2
    roll_back_to_one_entry(database_url, dropped_key=both[1])
    later = [Signer() for _ in range(grown_again)]
    for signer in later:  # grown to 3: past the index's 2, with another history
        decide(writing, signer, "grant", clock)
    assert writing.size() == 1 + grown_again
    assert answering.eligible("model-training", [*both, *keys(later)]) == [
        kept.device_key,
        *keys(later),
    ]


def test_every_worker_answers_with_the_latest_decision(tmp_path: Path, database_url: str) -> None:
    server = ConsentServer(data_dir=tmp_path, database_url=database_url, workers=2).start()
    signers = [Signer() for _ in range(12)]
    query = {"purpose": "model-training", "device_keys": keys(signers)}
    headers = {"Authorization": f"Bearer {server.token}"}

    def answer(_: int) -> list[str]:
        # A new connection each time, many at once: the workers share the listening socket.
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.post("/v1/eligibility", json=query, headers=headers)
            assert response.status_code == 200, response.text
            result: list[str] = response.json()["eligible"]
            return result

    def answers() -> list[list[str]]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(answer, range(32)))

    try:
        with server.client() as client:
            for signer in signers:
                assert client.post("/v1/consents", json=signer.record()).status_code == 201
            assert answers() == [keys(signers)] * 32  # every worker's index is loaded
            for withdrawn in range(1, 4):
                record = signers[withdrawn - 1].record("withdraw")
                assert client.post("/v1/consents", json=record).status_code == 201
                assert answers() == [keys(signers[withdrawn:])] * 32
    finally:
        server.stop()
    log = (tmp_path / f"serve-{server.port}.log").read_text()
    answered_by = set(re.findall(r"\[(\d+)\] moodfed\.consent\.access: .*/v1/eligibility", log))
    assert len(answered_by) == 2, "both workers should have answered eligibility queries"


def test_a_tree_from_another_history_is_rebuilt_before_it_signs(
    two_ledgers: tuple[Ledger, Ledger], clock: ManualClock, database_url: str
) -> None:
    first, second = two_ledgers
    decide(first, Signer(), "grant", clock)
    decide(first, Signer(), "grant", clock)  # first's tree: 2 leaves
    roll_back_to_one_entry(database_url, dropped_key=Signer().device_key)
    decide(second, Signer(), "grant", clock)
    decide(second, Signer(), "grant", clock)  # the stored log: 3 entries, another entry 1
    record = Signer().record(issued_at=clock())
    [receipt] = first.append_batch([first.accept(rfc8785.dumps(record))])
    assert isinstance(receipt, Receipt)
    assert receipt.index == 3
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        leaves = [
            bytes(h)
            for (h,) in connection.execute(
                sa.text('SELECT leaf_hash FROM log_entries ORDER BY "index"')
            )
        ]
    engine.dispose()
    signed = open_checkpoint(receipt.checkpoint, NoteVerifier(first.verifier_key))
    assert signed.size == 4
    assert signed.root_hash == MerkleTree(leaves).root()
