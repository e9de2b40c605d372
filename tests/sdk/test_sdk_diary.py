"""Diary: encrypted local storage, range reads, edits, export, erasure, bad input."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import stat
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from client_sdk import (
    Diary,
    DiaryClosedError,
    DiaryCorruptError,
    DiaryImportError,
    Entry,
    EntryNotFoundError,
    InvalidArgumentError,
    InvalidEntryError,
    KeyFileError,
    PassphraseRequiredError,
    WrongPassphraseError,
)
from client_sdk.diary import default_key_path

BERLIN = timezone(timedelta(hours=1))


def _entry(**overrides: Any) -> Entry:
    fields: dict[str, Any] = {
        "time": datetime(2026, 11, 22, 21, 5, tzinfo=BERLIN),
        "mood": 4,
        "valence": 0.35,
        "emotions": ["happy", "grateful"],
        "activities": ["friends", "good meal"],
        "sleep_hours": 7.5,
        "steps": 8123,
        "note": "Dinner with everyone",
    }
    return Entry(**(fields | overrides))


def _files(diary_path: Path) -> list[Path]:
    candidates = [diary_path, Path(f"{diary_path}-wal"), Path(f"{diary_path}-shm")]
    return [p for p in candidates if p.exists()]


@pytest.fixture
def diary(tmp_path: Path) -> Any:
    with Diary.open(tmp_path / "diary.db") as opened:
        yield opened


def test_every_field_survives_a_round_trip_through_a_reopened_diary(tmp_path: Path) -> None:
    entry = _entry()
    with Diary.open(tmp_path / "diary.db") as diary:
        entry_id = diary.log(entry)

    with Diary.open(tmp_path / "diary.db") as diary:
        stored = diary.get(entry_id)

    assert stored == entry
    assert stored.model_dump() == entry.model_dump()
    assert stored.time.utcoffset() == timedelta(hours=1)


def test_valence_is_derived_from_mood_when_absent(diary: Diary) -> None:
    entry_id = diary.log({"time": datetime(2026, 1, 1, tzinfo=UTC), "mood": 1})

    assert diary.get(entry_id).valence == -1.0


def test_read_returns_entries_in_time_order(diary: Diary) -> None:
    times = [datetime(2026, 1, day, 12, tzinfo=UTC) for day in (5, 1, 3, 2, 4)]
    diary.log_many([_entry(time=t, note=str(t.day)) for t in times])

    assert [e.note for e in diary.read()] == ["1", "2", "3", "4", "5"]


def test_range_read_is_half_open_and_exact_across_time_zones(diary: Diary) -> None:
    minus5 = timezone(timedelta(hours=-5))
    # 23:30 at UTC-5 is 04:30 UTC on the next day: the UTC day index and the exact filter
    # must agree on which side of each bound it falls.
    diary.log(_entry(time=datetime(2026, 3, 1, 23, 30, tzinfo=minus5), note="late"))
    diary.log(_entry(time=datetime(2026, 3, 2, 4, 0, tzinfo=UTC), note="early"))
    diary.log(_entry(time=datetime(2026, 3, 2, 5, 0, tzinfo=UTC), note="at end"))
    diary.log(_entry(time=datetime(2026, 2, 28, 12, 0, tzinfo=UTC), note="before"))

    got = diary.read(datetime(2026, 3, 2, 4, 0, tzinfo=UTC), datetime(2026, 3, 2, 5, tzinfo=UTC))

    assert [e.note for e in got] == ["early", "late"]
    assert [e.note for e in diary.read(end=datetime(2026, 3, 1, tzinfo=UTC))] == ["before"]
    assert len(diary.read(start=datetime(2026, 3, 2, 4, 30, tzinfo=UTC))) == 2


def test_range_read_rejects_naive_bounds(diary: Diary) -> None:
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        diary.read(datetime(2026, 1, 1))


def test_update_replaces_the_entry(diary: Diary) -> None:
    entry_id = diary.log(_entry())

    diary.update(entry_id, _entry(mood=2, note="actually, not great"))

    assert diary.get(entry_id).mood == 2
    assert diary.get(entry_id).note == "actually, not great"
    assert len(diary) == 1


def test_update_of_an_unknown_id_raises_and_changes_nothing(diary: Diary) -> None:
    diary.log(_entry())

    with pytest.raises(EntryNotFoundError):
        diary.update("no-such-id", _entry(mood=1))

    assert [e.mood for e in diary.read()] == [4]


def test_delete_removes_only_that_entry(diary: Diary) -> None:
    keep = diary.log(_entry(note="keep"))
    drop = diary.log(_entry(note="drop"))

    diary.delete(drop)

    assert [e.note for e in diary.read()] == ["keep"]
    assert keep in diary and drop not in diary
    with pytest.raises(EntryNotFoundError):
        diary.get(drop)
    with pytest.raises(EntryNotFoundError):
        diary.delete(drop)


def test_deleted_entry_ciphertext_is_gone_from_the_files(tmp_path: Path) -> None:
    path = tmp_path / "diary.db"
    diary = Diary.open(path)
    diary.log(_entry(note="keep"))
    drop = diary.log(_entry(note="drop"))
    with sqlite3.connect(path) as spy:
        blob = spy.execute("SELECT payload FROM entries WHERE id = ?", (drop,)).fetchone()[0]
    spy.close()

    diary.delete(drop)

    assert all(blob not in p.read_bytes() for p in _files(path))
    diary.close()
    assert blob not in path.read_bytes()


def test_json_export_contains_every_field(diary: Diary) -> None:
    entry_id = diary.log(_entry())

    exported = json.loads(diary.export_json())

    assert exported["format"] == "moodfed-diary-export"
    (row,) = exported["entries"]
    assert row["id"] == entry_id
    assert row["note"] == "Dinner with everyone"
    assert row["emotions"] == ["happy", "grateful"]
    assert (row["mood"], row["valence"], row["sleep_hours"], row["steps"]) == (4, 0.35, 7.5, 8123)
    assert datetime.fromisoformat(row["time"]) == _entry().time


def test_csv_export_is_readable_with_one_row_per_entry(diary: Diary) -> None:
    diary.log(_entry())
    diary.log(_entry(time=datetime(2026, 11, 23, 8, tzinfo=UTC), sleep_hours=None, note="x,\ny"))

    rows = list(csv.DictReader(io.StringIO(diary.export_csv())))

    assert [r["note"] for r in rows] == ["Dinner with everyone", "x,\ny"]
    assert rows[0]["activities"] == "friends | good meal"
    assert rows[0]["mood"] == "4" and rows[0]["steps"] == "8123"
    assert rows[1]["sleep_hours"] == ""


def test_erase_removes_the_files_and_the_key_and_the_diary_refuses_use(tmp_path: Path) -> None:
    path = tmp_path / "diary.db"
    diary = Diary.open(path, passphrase="pw")
    diary.log(_entry())
    assert path.exists() and default_key_path(path).exists()

    diary.erase()

    assert list(tmp_path.iterdir()) == []
    for use in (lambda: diary.read(), lambda: diary.log(_entry()), lambda: len(diary)):
        with pytest.raises(DiaryClosedError, match="erased"):
            use()


def test_a_closed_diary_refuses_use_until_reopened(tmp_path: Path) -> None:
    diary = Diary.open(tmp_path / "diary.db")
    diary.log(_entry())
    diary.close()

    with pytest.raises(DiaryClosedError, match="closed"):
        diary.read()
    with Diary.open(tmp_path / "diary.db") as reopened:
        assert len(reopened) == 1


def test_destroy_erases_a_diary_whose_passphrase_is_lost(tmp_path: Path) -> None:
    with Diary.open(tmp_path / "diary.db", passphrase="forgotten") as diary:
        diary.log(_entry())

    Diary.destroy(tmp_path / "diary.db")

    assert list(tmp_path.iterdir()) == []


def test_diary_and_key_files_are_private(tmp_path: Path, diary: Diary) -> None:
    diary.log(_entry())

    for path in [diary.path, diary.key_path, *_files(diary.path)]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("reopen", [False, True], ids=["while-open", "after-close"])
def test_files_hold_no_plaintext_note_label_or_activity(tmp_path: Path, reopen: bool) -> None:
    path = tmp_path / "diary.db"
    secrets_ = ["zqxjnote-Ünïcödé-7731", "zqxjemotion-4410", "zqxjactivity-9921"]
    diary = Diary.open(path)
    diary.log(_entry(note=secrets_[0], emotions=[secrets_[1]], activities=[secrets_[2]]))
    if reopen:
        diary.close()
    files = _files(path)
    assert path in files
    if not reopen:
        assert Path(f"{path}-wal") in files  # the data sits in the WAL before a checkpoint

    for secret in secrets_:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            needle = secret.encode(encoding)
            assert all(needle not in p.read_bytes() for p in files), (secret, encoding)
    diary.close()


def test_mood_and_entry_json_are_not_stored_in_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "diary.db"
    with Diary.open(path) as diary:
        diary.log_many([_entry(), _entry()])  # the same entry twice
    raw = path.read_bytes()
    with sqlite3.connect(path) as spy:
        payloads = [row[0] for row in spy.execute("SELECT payload FROM entries")]
    spy.close()

    for needle in (b'"mood"', b'"valence"', b'"emotions"', b'"time"', b"2026-11-22"):
        assert needle not in raw
    assert payloads[0] != payloads[1]  # random nonces: equal entries do not look equal
    assert all(len(p) % 256 == 40 for p in payloads)  # padded plaintext + nonce + MAC
    assert all(len(zlib.compress(p, 9)) >= len(p) for p in payloads)  # random-looking


def test_wrong_passphrase_on_the_diary_key_raises(tmp_path: Path) -> None:
    with Diary.open(tmp_path / "diary.db", passphrase="right") as diary:
        diary.log(_entry())
    key_before = default_key_path(tmp_path / "diary.db").read_bytes()

    with pytest.raises(WrongPassphraseError):
        Diary.open(tmp_path / "diary.db", passphrase="wrong")
    with pytest.raises(PassphraseRequiredError):
        Diary.open(tmp_path / "diary.db")

    assert default_key_path(tmp_path / "diary.db").read_bytes() == key_before
    with Diary.open(tmp_path / "diary.db", passphrase="right") as diary:
        assert len(diary) == 1


def test_a_diary_whose_key_file_is_missing_is_not_given_a_new_key(tmp_path: Path) -> None:
    with Diary.open(tmp_path / "diary.db") as diary:
        diary.log(_entry())
    default_key_path(tmp_path / "diary.db").unlink()

    with pytest.raises(KeyFileError, match="missing"):
        Diary.open(tmp_path / "diary.db")

    assert not default_key_path(tmp_path / "diary.db").exists()


def test_another_diarys_key_is_rejected(tmp_path: Path) -> None:
    Diary.open(tmp_path / "a.db").close()
    Diary.open(tmp_path / "b.db").close()

    with pytest.raises(KeyFileError, match="does not belong"):
        Diary.open(tmp_path / "a.db", key_path=tmp_path / "b.db.key")


def test_a_file_that_is_not_a_diary_is_reported_corrupt(tmp_path: Path) -> None:
    Diary.open(tmp_path / "diary.db").close()
    (tmp_path / "diary.db").write_text("just some text, not SQLite at all\n" * 200)

    with pytest.raises(DiaryCorruptError, match="not a readable SQLite diary"):
        Diary.open(tmp_path / "diary.db")


def test_a_tampered_payload_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "diary.db"
    with Diary.open(path) as diary:
        first = diary.log(_entry(note="one"))
        second = diary.log(_entry(note="two"))
    with sqlite3.connect(path) as spy:  # swap the two ciphertexts between rows
        rows = dict(spy.execute("SELECT id, payload FROM entries"))
        spy.execute("UPDATE entries SET payload = ? WHERE id = ?", (rows[second], first))
    spy.close()

    with Diary.open(path) as diary, pytest.raises(DiaryCorruptError, match=first):
        diary.get(first)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"mood": 6}, "mood"),
        ({"mood": 0}, "mood"),
        ({"valence": 2.0}, "valence"),
        ({"steps": -1}, "steps"),
        ({"sleep_hours": 25.0}, "sleep_hours"),
        ({"time": datetime(2026, 1, 1)}, "time"),
        ({"emotions": ["  "]}, "emotions"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_entry_names_the_field_and_writes_nothing(
    tmp_path: Path, bad: dict[str, Any], field: str
) -> None:
    path = tmp_path / "diary.db"
    with Diary.open(path) as diary:
        diary.log(_entry())
        before = diary.export_json()
        fields = {
            "time": datetime(2026, 1, 2, tzinfo=UTC),
            "mood": 3,
            "steps": 10,
        } | bad

        with pytest.raises(InvalidEntryError, match=field) as caught:
            diary.log(fields)

        assert caught.value.field == field
        assert len(diary) == 1
        assert json.loads(diary.export_json())["entries"] == json.loads(before)["entries"]


def test_one_invalid_entry_in_a_batch_writes_none_of_it(diary: Diary) -> None:
    good = {"time": datetime(2026, 1, 2, tzinfo=UTC), "mood": 3}

    with pytest.raises(InvalidEntryError, match="mood"):
        diary.log_many([good, good | {"mood": 9}, good])

    assert len(diary) == 0


def test_an_entry_corrupted_after_validation_is_revalidated(diary: Diary) -> None:
    sneaky = _entry().model_copy(update={"mood": 42})  # model_copy skips validation

    with pytest.raises(InvalidEntryError, match="mood"):
        diary.log(sneaky)

    assert len(diary) == 0


def test_update_with_invalid_entry_keeps_the_old_one(diary: Diary) -> None:
    entry_id = diary.log(_entry())

    with pytest.raises(InvalidEntryError, match="steps"):
        diary.update(entry_id, {"time": _entry().time, "mood": 3, "steps": -5})

    assert diary.get(entry_id) == _entry()


def test_importing_a_daylio_export_logs_its_good_rows(diary: Diary, fixtures: Path) -> None:
    report = diary.import_daylio(fixtures / "daylio_bad_rows.csv", tz="Europe/Berlin")

    assert report.logged == 3 == len(diary)
    assert report.failed == 4
    assert [e.note for e in diary.read()] == [
        "fine",
        "a note\nspanning two lines",
        "last good",
    ]


def test_importing_the_same_export_twice_adds_nothing_the_second_time(
    diary: Diary, fixtures: Path
) -> None:
    first = diary.import_daylio(fixtures / "daylio_current.csv")

    second = diary.import_daylio(fixtures / "daylio_current.csv")

    assert first.logged == 4 and first.skipped_duplicates == 0
    assert second.logged == 0 and second.skipped_duplicates == 4
    assert len(diary) == 4


def test_importing_state_of_mind_samples_logs_them(diary: Diary, fixtures: Path) -> None:
    report = diary.import_state_of_mind(fixtures / "state_of_mind.json")

    assert report.logged == 3
    assert sorted(e.mood for e in diary.read()) == [1, 3, 4]


def test_a_fatal_import_error_logs_nothing(diary: Diary) -> None:
    with pytest.raises(DiaryImportError):
        diary.import_daylio(text="this is not,a daylio file\n1,2\n")

    assert len(diary) == 0


def test_a_str_path_names_the_export_file_as_for_open(
    diary: Diary, fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(fixtures)

    daylio = diary.import_daylio("daylio_current.csv")
    state_of_mind = diary.import_state_of_mind("state_of_mind.json")

    assert (daylio.logged, state_of_mind.logged) == (4, 3)
    assert len(diary) == 7


def test_text_in_memory_is_imported_through_text(diary: Diary, fixtures: Path) -> None:
    daylio = (fixtures / "daylio_current.csv").read_text(encoding="utf-8")
    state_of_mind = (fixtures / "state_of_mind.json").read_text(encoding="utf-8")

    first = diary.import_daylio(text=daylio, tz="Europe/Berlin")
    second = diary.import_state_of_mind(text=state_of_mind)

    assert (first.logged, second.logged) == (4, 3)
    assert diary.read()[0].time.utcoffset() == timedelta(hours=1)


def test_bytes_are_the_export_files_bytes(diary: Diary, fixtures: Path) -> None:
    report = diary.import_daylio((fixtures / "daylio_bom.csv").read_bytes())

    assert report.logged == 1
    assert diary.read()[0].note == "Café with Zoë"


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda tmp, csv_text: str(tmp / "absent.csv"), "no Daylio file at"),
        (lambda tmp, csv_text: tmp / "absent.csv", "no Daylio file at"),
        (lambda tmp, csv_text: str(tmp), "is a directory"),
        (lambda tmp, csv_text: csv_text, r"import_daylio\(text=\.\.\.\)"),
    ],
    ids=["missing-str", "missing-path", "directory", "csv-text-as-path"],
)
def test_a_daylio_source_that_is_not_a_readable_file_logs_nothing(
    diary: Diary,
    tmp_path: Path,
    fixtures: Path,
    make_source: Callable[[Path, str], str | Path],
    message: str,
) -> None:
    csv_text = (fixtures / "daylio_current.csv").read_text(encoding="utf-8")
    diary.log(_entry())

    with pytest.raises(DiaryImportError, match=message):
        diary.import_daylio(make_source(tmp_path, csv_text))

    assert len(diary) == 1


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda tmp, json_text: str(tmp / "absent.json"), "no State of Mind file at"),
        (lambda tmp, json_text: tmp, "is a directory"),
        (lambda tmp, json_text: json_text, r"import_state_of_mind\(text=\.\.\.\)"),
    ],
    ids=["missing", "directory", "json-text-as-path"],
)
def test_a_state_of_mind_source_that_is_not_a_readable_file_logs_nothing(
    diary: Diary,
    tmp_path: Path,
    fixtures: Path,
    make_source: Callable[[Path, str], str | Path],
    message: str,
) -> None:
    json_text = (fixtures / "state_of_mind.json").read_text(encoding="utf-8")

    with pytest.raises(DiaryImportError, match=message):
        diary.import_state_of_mind(make_source(tmp_path, json_text))

    assert len(diary) == 0


def test_a_file_and_text_together_is_refused_and_logs_nothing(diary: Diary, fixtures: Path) -> None:
    path = fixtures / "daylio_current.csv"

    with pytest.raises(InvalidArgumentError, match="not both"):
        diary.import_daylio(path, text=path.read_text())  # type: ignore[call-overload]  # on purpose
    with pytest.raises(InvalidArgumentError, match="neither"):
        diary.import_state_of_mind()  # type: ignore[call-overload]  # on purpose

    assert len(diary) == 0
