"""Daylio CSV import: every export variant, bad rows by line, and fuzzing."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk import DiaryImportError, ImportReport, InvalidArgumentError, import_daylio
from client_sdk.importers.daylio import CURRENT_COLUMNS

HEADER = ",".join(CURRENT_COLUMNS)


def _times(report: ImportReport) -> list[datetime]:
    return [e.time for e in report.entries]


def test_current_export_is_imported_oldest_first(fixtures: Path) -> None:
    report = import_daylio(fixtures / "daylio_current.csv")

    assert (report.rows, report.imported, report.failed) == (4, 4, 0)
    assert [e.mood for e in report.entries] == [4, 1, 3, 5]
    assert _times(report) == sorted(_times(report))
    assert _times(report)[0] == datetime(2026, 11, 20, 7, 15, tzinfo=UTC)
    last = report.entries[-1]
    assert last.activities == ["friends", "movies", "good meal"]
    assert last.note == "Birthday\nDinner with everyone"
    assert report.entries[1].note == "Deadline\nToo much, really"


def test_legacy_export_combines_year_and_month_day(fixtures: Path) -> None:
    report = import_daylio(fixtures / "daylio_legacy.csv")

    assert report.failed == 0
    assert _times(report) == [
        datetime(2018, 11, 22, 12, 30, tzinfo=UTC),
        datetime(2018, 12, 31, 21, 5, tzinfo=UTC),
        datetime(2019, 1, 1, 0, 10, tzinfo=UTC),
    ]
    assert [e.mood for e in report.entries] == [2, 5, 4]
    assert report.entries[0].activities == ["work", "commute"]
    assert report.entries[0].note == "Long day"


@pytest.mark.parametrize(
    ("name", "moods"), [("daylio_scales.csv", [3, 4]), ("daylio_legacy_scales.csv", [4, 3])]
)
def test_a_scales_column_anywhere_is_ignored(fixtures: Path, name: str, moods: list[int]) -> None:
    report = import_daylio(fixtures / name)

    assert (report.imported, report.failed, report.warnings) == (2, 0, [])
    assert [e.mood for e in report.entries] == moods
    assert all("Energy" not in e.note for e in report.entries)


def test_scales_fixture_values_land_in_the_right_fields(fixtures: Path) -> None:
    report = import_daylio(fixtures / "daylio_legacy_scales.csv")

    first, second = report.entries
    assert first.time == datetime(2020, 2, 29, 7, 45, tzinfo=UTC)
    assert (first.mood, first.activities, first.note) == (4, ["sport"], "Leap day run")
    assert second.time == datetime(2020, 3, 1, 22, 15, tzinfo=UTC)


def test_twelve_hour_times_including_midnight_and_noon(fixtures: Path) -> None:
    report = import_daylio(fixtures / "daylio_12h.csv")

    by_note = {e.note: e.time.time() for e in report.entries}
    assert by_note == {
        "midnight": time(0, 0),
        "morning": time(7, 5),
        "noon": time(12, 0),
        "evening": time(21, 5),
        "late": time(23, 59),
    }
    assert [e.note for e in report.entries] == ["midnight", "morning", "noon", "evening", "late"]


def test_html_notes_become_plain_text(fixtures: Path) -> None:
    report = import_daylio(fixtures / "daylio_html_notes.csv")

    first, second = report.entries
    assert first.note == 'Fish & chips\nLine one\nLine two\n<3 "quoted" été'
    assert second.note == "First paragraph\n\nSecond paragraph"


def test_custom_moods_need_and_follow_the_mapping(fixtures: Path) -> None:
    without = import_daylio(fixtures / "daylio_custom_moods.csv")
    mapped = import_daylio(
        fixtures / "daylio_custom_moods.csv", mood_map={"Ecstatic": 5, "fine": 3, "ROUGH": 2}
    )

    assert [e.line for e in without.errors] == [2, 3, 4]
    assert "unknown mood 'Ecstatic'" in without.errors[0].reason
    assert [e.mood for e in without.entries] == [4]
    assert [e.mood for e in mapped.entries] == [5, 3, 2, 4]
    assert mapped.failed == 0


def test_mapping_can_rename_a_default_mood() -> None:
    text = f"{HEADER}\n2026-01-01,January 1,Thursday,20:00,good,,,\n"

    report = import_daylio(text=text, mood_map={"good": 5})

    assert report.entries[0].mood == 5


def test_a_bad_mood_map_is_rejected_before_reading() -> None:
    with pytest.raises(InvalidArgumentError, match=r"1\.\.5"):
        import_daylio(text=f"{HEADER}\n", mood_map={"great": 6})


def test_a_utf8_bom_is_tolerated(fixtures: Path) -> None:
    assert (fixtures / "daylio_bom.csv").read_bytes().startswith(b"\xef\xbb\xbf")

    from_path = import_daylio(fixtures / "daylio_bom.csv")
    from_bytes = import_daylio((fixtures / "daylio_bom.csv").read_bytes())
    from_text = import_daylio(text=(fixtures / "daylio_bom.csv").read_text(encoding="utf-8"))

    for report in (from_path, from_bytes, from_text):
        assert report.failed == 0
        assert report.entries[0].note == "Café with Zoë"
        assert report.entries[0].activities == ["walk", "music"]


def test_naive_times_get_the_given_time_zone(fixtures: Path) -> None:
    report = import_daylio(fixtures / "daylio_current.csv", tz="Europe/Berlin")

    first = report.entries[0]
    assert first.time.tzinfo == ZoneInfo("Europe/Berlin")
    assert first.time.utcoffset() == timedelta(hours=1)
    assert first.time == datetime(2026, 11, 20, 6, 15, tzinfo=UTC)


def test_bad_rows_are_reported_by_line_and_good_rows_are_kept(fixtures: Path) -> None:
    report = import_daylio(fixtures / "daylio_bad_rows.csv")

    assert [(e.line, e.index) for e in report.errors] == [(3, 1), (4, 2), (5, 3), (8, 5)]
    reasons = [e.reason for e in report.errors]
    assert "unknown mood 'sparkly'" in reasons[0]
    assert "full_date" in reasons[1] and "2026-13-40" in reasons[1]
    assert "time" in reasons[2] and "25:61" in reasons[2]
    assert "expected 8 fields, found 10" in reasons[3]
    assert [e.time.date() for e in report.entries] == [
        date(2026, 6, 1),
        date(2026, 6, 5),
        date(2026, 6, 7),
    ]
    assert (report.rows, report.imported, report.failed) == (7, 3, 4)
    assert "7 rows, 3 imported, 4 failed" in report.summary()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("2026-02-30,x,x,20:00,good,,,", "not a real date"),
        ("2026-01-01,x,x,13:00 pm,good,,,", "12-hour clock"),
        ("2026-01-01,x,x,noon,good,,,", "not a time"),
        ("20260101,x,x,20:00,good,,,", "YYYY-MM-DD"),
        ("2026-01-01,x,x,20:00,,,,", "unknown mood ''"),
    ],
)
def test_each_kind_of_bad_value_has_a_specific_reason(row: str, reason: str) -> None:
    report = import_daylio(text=f"{HEADER}\n{row}\n")

    assert report.imported == 0
    assert reason in report.errors[0].reason
    assert report.errors[0].line == 2


def test_legacy_dates_accept_day_first_and_full_month_names() -> None:
    text = (
        "year,date,weekday,time,mood,activities,note\n"
        "2021,22 November,Monday,21:05,good,,\n"
        "2021,September 3,Friday,21:05,good,,\n"
        "2021,Smarch 3,Friday,21:05,good,,\n"
    )

    report = import_daylio(text=text)

    assert [e.time.date() for e in report.entries] == [date(2021, 9, 3), date(2021, 11, 22)]
    assert "unknown month 'Smarch'" in report.errors[0].reason


def test_blank_lines_are_skipped_without_counting() -> None:
    text = f"\n{HEADER}\n\n2026-01-01,x,x,20:00,good,,,\n\n"

    report = import_daylio(text=text)

    assert (report.rows, report.imported) == (1, 1)


def test_an_extra_unknown_column_is_ignored_with_a_warning() -> None:
    text = f"{HEADER},mystery\n2026-01-01,x,x,20:00,good,,,,42\n"

    report = import_daylio(text=text)

    assert report.imported == 1
    assert report.warnings == ["ignored unknown column(s): mystery"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("date,mood\n2026-01-01,good\n", "unknown header"),
        (f"{HEADER},mood\n", "repeats a column"),
        ("export.csv", "pass the path itself"),
    ],
)
def test_text_that_is_not_a_daylio_export_is_fatal(text: str, message: str) -> None:
    with pytest.raises(DiaryImportError, match=message):
        import_daylio(text=text)


@pytest.mark.parametrize(
    "data", [b"\xff\xfe\xfa not utf", b"full_date,date\n\x80\x81"], ids=["bom", "body"]
)
def test_bytes_that_are_not_utf8_are_fatal(data: bytes) -> None:
    with pytest.raises(DiaryImportError, match="not UTF-8"):
        import_daylio(data)


# -- what the first argument means: a str or PathLike names a file; bytes are its bytes -----


def test_a_str_path_a_path_bytes_and_text_give_the_same_entries(fixtures: Path) -> None:
    path = fixtures / "daylio_current.csv"

    reports = [
        import_daylio(str(path)),
        import_daylio(path),
        import_daylio(path.read_bytes()),
        import_daylio(bytearray(path.read_bytes())),
        import_daylio(text=path.read_text(encoding="utf-8")),
    ]

    assert reports[0].imported == 4
    assert all(report.entries == reports[0].entries for report in reports)


def test_a_relative_str_is_a_file_name_as_for_open(
    fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(fixtures)

    report = import_daylio("daylio_current.csv")

    assert (report.rows, report.imported) == (4, 4)


def test_any_os_pathlike_is_read_as_a_file(fixtures: Path) -> None:
    class Where:
        def __fspath__(self) -> str:
            return str(fixtures / "daylio_legacy.csv")

    assert import_daylio(Where()).imported == 3


@pytest.mark.parametrize("as_str", [True, False], ids=["str", "Path"])
def test_a_missing_file_is_a_fatal_error_naming_the_path(tmp_path: Path, as_str: bool) -> None:
    missing = tmp_path / "export.csv"

    with pytest.raises(DiaryImportError, match="no Daylio file at") as caught:
        import_daylio(str(missing) if as_str else missing)

    assert str(missing) in str(caught.value)
    assert "text=" not in str(caught.value)  # a plain file name gets no hint about text


def test_a_directory_is_a_fatal_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DiaryImportError, match="is a directory") as caught:
        import_daylio(str(tmp_path))

    assert str(tmp_path) in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        f"{HEADER}\n2026-01-01,x,x,20:00,good,,,\n",
        f"{HEADER}\n" + "2026-01-01,x,x,20:00,good,,,\n" * 200,  # longer than a file name
        HEADER,
    ],
    ids=["short", "long", "header-only"],
)
def test_csv_text_passed_as_a_path_is_a_clear_error_pointing_to_text(text: str) -> None:
    with pytest.raises(DiaryImportError, match=r"import_daylio\(text=\.\.\.\)") as caught:
        import_daylio(text)

    assert len(str(caught.value)) < 400  # the content is cut short, not echoed whole


def test_a_nul_in_a_file_name_is_a_fatal_import_error() -> None:
    with pytest.raises(DiaryImportError, match="cannot read the Daylio file"):
        import_daylio("export\0.csv")


def test_a_file_and_text_together_or_neither_is_an_argument_error(fixtures: Path) -> None:
    path = fixtures / "daylio_current.csv"

    with pytest.raises(InvalidArgumentError, match="not both"):
        import_daylio(path, text=path.read_text())  # type: ignore[call-overload]  # on purpose
    with pytest.raises(InvalidArgumentError, match="neither"):
        import_daylio()  # type: ignore[call-overload]  # on purpose


@pytest.mark.parametrize("text", [b"full_date", Path("export.csv"), 42], ids=type)
def test_text_must_be_a_str(text: object) -> None:
    with pytest.raises(DiaryImportError, match="as a str"):
        import_daylio(text=text)  # type: ignore[call-overload]  # on purpose


def test_a_source_of_another_type_is_a_fatal_import_error() -> None:
    with pytest.raises(DiaryImportError, match="not int"):
        import_daylio(42)  # type: ignore[call-overload]  # on purpose


# -- fuzzing --------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text())
def test_arbitrary_text_gives_a_report_or_a_daylio_import_error(text: str) -> None:
    try:
        report = import_daylio(text=text)
    except DiaryImportError:
        return
    assert report.rows == report.imported + report.failed


@FUZZ
@given(st.text(min_size=1).map(lambda line: f"{HEADER}\n{line}"))
def test_csv_text_given_as_a_path_only_raises_a_daylio_import_error(text: str) -> None:
    with pytest.raises(DiaryImportError, match="text="):
        import_daylio(text)


@FUZZ
@given(st.binary())
def test_arbitrary_bytes_give_a_report_or_a_daylio_import_error(data: bytes) -> None:
    try:
        report = import_daylio(data)
    except DiaryImportError:
        return
    assert report.rows == report.imported + report.failed


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@FUZZ
@given(
    st.lists(
        st.lists(
            st.text(max_size=30), min_size=len(CURRENT_COLUMNS), max_size=len(CURRENT_COLUMNS)
        ),
        max_size=8,
    )
)
def test_arbitrary_rows_under_a_valid_header_never_abort_the_import(rows: list[list[str]]) -> None:
    report = import_daylio(text=_csv([list(CURRENT_COLUMNS), *rows]))

    non_blank = [r for r in rows if any(cell.strip() for cell in r)]
    assert report.rows == len(non_blank) == report.imported + report.failed
    assert _times(report) == sorted(_times(report))
    assert all(error.line >= 2 for error in report.errors)


_valid_rows = st.lists(
    st.tuples(
        st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
        st.times().map(lambda t: t.replace(second=0, microsecond=0)),
        st.booleans(),
        st.sampled_from(["rad", "Good", "MEH", "bad", "awful"]),
        st.lists(
            st.text(
                st.characters(codec="utf-8", exclude_characters="|\r\n"), min_size=1, max_size=12
            ).filter(str.strip),
            max_size=4,
        ),
    ),
    min_size=1,
    max_size=10,
)


@FUZZ
@given(_valid_rows)
def test_valid_rows_in_any_order_are_all_imported_faithfully(
    rows: list[tuple[date, time, bool, str, list[str]]],
) -> None:
    def clock(t: time, twelve: bool) -> str:
        if not twelve:
            return t.strftime("%H:%M")
        return f"{(t.hour % 12) or 12}:{t.minute:02d} {'am' if t.hour < 12 else 'pm'}"

    levels = {"rad": 5, "good": 4, "meh": 3, "bad": 2, "awful": 1}
    table = [list(CURRENT_COLUMNS)]
    for day, t, twelve, mood, activities in rows:
        table.append(
            [day.isoformat(), "", "", clock(t, twelve), mood, " | ".join(activities), "", ""]
        )

    report = import_daylio(text=_csv(table))

    assert report.failed == 0
    expected = sorted(
        (datetime.combine(d, t, tzinfo=UTC), levels[m.lower()], [a.strip() for a in acts])
        for d, t, _, m, acts in rows
    )
    got = [(e.time, e.mood, e.activities) for e in report.entries]
    assert sorted(got) == expected
