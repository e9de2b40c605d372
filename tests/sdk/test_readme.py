"""The README's SDK example runs as written, against the real consent service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ConsentServer

README = Path(__file__).resolve().parents[2] / "README.md"
DAYLIO = """full_date,date,weekday,time,mood,activities,note_title,note
2026-11-21,November 21,Saturday,9:30 pm,good,friends | walk,,A <b>nice</b> evening
2026-11-20,November 20,Friday,21:05,rad,work,,
2026-11-19,November 19,Thursday,8:00 am,sideways,,,
"""


def readme_sdk_example() -> str:
    text = README.read_text()
    marker = text.index("tests/sdk/test_readme.py")
    example = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert example is not None, "the README lost its SDK example"
    return example.group(1)


def test_the_readme_sdk_example_runs(
    sqlite_consent_server: ConsentServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daylio = tmp_path / "daylio.csv"
    daylio.write_text(DAYLIO)
    namespace: dict[str, Any] = {
        "folder": tmp_path / "phone",
        "url": sqlite_consent_server.url,
        "pinned_log_key": httpx.get(f"{sqlite_consent_server.url}/v1/log/key").text,
        "daylio_csv_path": str(daylio),  # a str names a file, as for open()
        "notice_text": "We learn from your mood diary without collecting it.",
    }
    exec(compile(readme_sdk_example(), str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert out.startswith("2 [(4, ")  # two good Daylio rows, the unknown mood on line 4 reported
    assert namespace["device"].consent.decision("model-training").action == "withdraw"
    assert namespace["receipt"].tree_size >= 1
