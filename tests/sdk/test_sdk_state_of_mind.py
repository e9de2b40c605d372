"""Apple Health State of Mind import: good samples, bad samples by index, fatal files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk import DiaryImportError, InvalidArgumentError, import_state_of_mind


def test_good_samples_become_entries_sorted_by_time(fixtures: Path) -> None:
    report = import_state_of_mind(fixtures / "state_of_mind.json")

    assert (report.rows, report.imported, report.failed) == (3, 3, 0)
    daily, momentary, neutral = report.entries
    assert daily.time == datetime(2026, 11, 21, tzinfo=timezone(timedelta(hours=1)))
    assert (daily.mood, daily.valence) == (1, -1.0)
    assert (daily.emotions, daily.activities) == (["stressed"], ["work"])
    assert momentary.time == datetime(2026, 11, 22, 8, tzinfo=UTC)
    assert (momentary.mood, momentary.valence) == (4, 0.62)
    assert momentary.emotions == ["happy", "grateful"]
    assert momentary.activities == ["family", "friends"]
    assert neutral.time == datetime(2026, 11, 23, 20, 5, tzinfo=UTC)
    assert (neutral.mood, neutral.valence) == (3, 0.0)


@pytest.mark.parametrize(
    ("valence", "mood"),
    [(-1.0, 1), (-0.76, 1), (-0.5, 2), (-0.26, 2), (0.0, 3), (0.24, 3), (0.5, 4), (0.8, 5)],
)
def test_mood_is_the_nearest_level_of_the_valence(valence: float, mood: int) -> None:
    text = json.dumps([{"startDate": "2026-01-01T12:00:00Z", "valence": valence}])

    assert import_state_of_mind(text=text).entries[0].mood == mood


@pytest.mark.parametrize(
    ("classification", "mood"),
    [("veryUnpleasant", 1), ("unpleasant", 2), ("slightlyUnpleasant", 2), ("neutral", 3),
     ("slightlyPleasant", 4), ("pleasant", 4), ("verypleasant", 5), (7, 5), (1, 1)],
)  # fmt: skip
def test_classification_alone_gives_the_mood(classification: str | int, mood: int) -> None:
    sample = {"startDate": "2026-01-01T12:00:00Z", "valenceClassification": classification}

    assert import_state_of_mind(text=json.dumps([sample])).entries[0].mood == mood


def test_bad_samples_are_reported_by_index_and_line_and_good_ones_kept(fixtures: Path) -> None:
    report = import_state_of_mind(fixtures / "state_of_mind_bad.json")

    assert [e.index for e in report.errors] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [e.line for e in report.errors] == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    reasons = [e.reason for e in report.errors]
    expected = [
        "valence: 1.5 is outside -1..1",
        "expected an object, got a string",
        "startDate: 'yesterday' is not an ISO 8601 date-time",
        "startDate: missing",
        "valenceClassification: unknown value 'ecstatic'",
        "needs a valence or a valenceClassification",
        "labels: expected a list of strings",
        "endDate: before startDate",
        "kind: unknown value 'weeklyMood'",
    ]
    for index, (reason, fragment) in enumerate(zip(reasons, expected, strict=True), start=1):
        assert reason.startswith(f"sample {index}: ")
        assert fragment in reason
    assert [e.valence for e in report.entries] == [0.1, -1.0]
    assert report.entries[1].activities == ["work"]


def test_dates_without_an_offset_take_the_given_zone() -> None:
    text = '[{"startDate": "2026-07-01T09:30:00", "valence": 0.2}]'

    report = import_state_of_mind(text=text, tz="America/New_York")

    assert report.entries[0].time == datetime(2026, 7, 1, 13, 30, tzinfo=UTC)


def test_an_empty_array_is_an_empty_report() -> None:
    report = import_state_of_mind(text=" [ ] ")

    assert (report.rows, report.entries, report.errors) == (0, [], [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("not json at all", "not JSON"),
        ('{"samples": []}', "got an object"),
        ("42", "got a number"),
        ('[{"startDate": "2026-01-01T00:00:00Z", "valence": 0.1},', "not JSON"),
        ('[{"valence": 0.1} {"valence": 0.2}]', "expected ',' or ']'"),
        ("[1] [2]", "extra data"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_text_that_is_not_a_json_array_is_fatal(text: str, message: str) -> None:
    with pytest.raises(DiaryImportError, match=message.replace("[", r"\[")):
        import_state_of_mind(text=text)


@pytest.mark.parametrize("data", [b"\xff\xfe\x00\xd8", b"[\xc3\x28]"], ids=["bom", "body"])
def test_bytes_that_are_not_utf8_are_fatal(data: bytes) -> None:
    with pytest.raises(DiaryImportError, match="not UTF-8"):
        import_state_of_mind(data)


def test_a_str_path_a_path_bytes_and_text_give_the_same_entries(fixtures: Path) -> None:
    path = fixtures / "state_of_mind.json"

    reports = [
        import_state_of_mind(str(path)),
        import_state_of_mind(path),
        import_state_of_mind(path.read_bytes()),
        import_state_of_mind(text=path.read_text(encoding="utf-8")),
    ]

    assert reports[0].imported == 3
    assert all(report.entries == reports[0].entries for report in reports)


@pytest.mark.parametrize("as_str", [True, False], ids=["str", "Path"])
def test_a_missing_file_is_a_fatal_error_naming_the_path(tmp_path: Path, as_str: bool) -> None:
    missing = tmp_path / "state_of_mind.json"

    with pytest.raises(DiaryImportError, match="no State of Mind file at") as caught:
        import_state_of_mind(str(missing) if as_str else missing)

    assert str(missing) in str(caught.value)


def test_a_directory_is_a_fatal_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DiaryImportError, match="is a directory") as caught:
        import_state_of_mind(tmp_path)

    assert str(tmp_path) in str(caught.value)


@pytest.mark.parametrize("text", ["[]", '[{"startDate": "2026-01-01T00:00:00Z", "valence": 0}]'])
def test_json_text_passed_as_a_path_is_a_clear_error_pointing_to_text(text: str) -> None:
    with pytest.raises(DiaryImportError, match=r"import_state_of_mind\(text=\.\.\.\)"):
        import_state_of_mind(text)


def test_a_file_and_text_together_or_neither_is_an_argument_error(fixtures: Path) -> None:
    path = fixtures / "state_of_mind.json"

    with pytest.raises(InvalidArgumentError, match="not both"):
        import_state_of_mind(path, text="[]")  # type: ignore[call-overload]  # on purpose
    with pytest.raises(InvalidArgumentError, match="neither"):
        import_state_of_mind()  # type: ignore[call-overload]  # on purpose


def test_a_fatal_error_after_good_samples_imports_nothing() -> None:
    good = '{"startDate": "2026-01-01T00:00:00Z", "valence": 0.1}'

    with pytest.raises(DiaryImportError):
        import_state_of_mind(text=f"[{good}, {good}, oops]")


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["startDate", "endDate", "valence", "valenceClassification", "labels", "associations", "kind"]
)


@FUZZ
@given(st.text())
def test_arbitrary_text_gives_a_report_or_an_import_error(text: str) -> None:
    try:
        report = import_state_of_mind(text=text)
    except DiaryImportError:
        return
    assert report.rows == report.imported + report.failed


@FUZZ
@given(st.lists(_json, max_size=6).map(json.dumps))
def test_json_text_given_as_a_path_only_raises_an_import_error(text: str) -> None:
    with pytest.raises(DiaryImportError, match="text="):
        import_state_of_mind(text)


@FUZZ
@given(st.lists(_json | st.dictionaries(_keys, _json), max_size=6))
def test_any_json_array_gives_one_outcome_per_element(samples: list[object]) -> None:
    report = import_state_of_mind(text=json.dumps(samples))

    assert report.rows == len(samples) == report.imported + report.failed
    assert sorted({e.index for e in report.errors}) == [e.index for e in report.errors]
