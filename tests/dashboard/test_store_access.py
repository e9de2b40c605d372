"""The dashboard reads the release store and cannot change it; it never imports the SDK."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from dashboard import ReleaseView, read_only_engine
from server.releases import ReleaseStore

from .conftest import ROOT

WRITES = [
    "DELETE FROM analytics_cell",
    "UPDATE release SET epsilon = 0",
    "INSERT INTO training_run (id) VALUES ('forged')",
    "CREATE TABLE sneaky (x INTEGER)",
]


@pytest.mark.parametrize("statement", WRITES)
def test_the_dashboards_engine_cannot_write_to_a_sqlite_store(
    seeded_url: str, statement: str
) -> None:
    engine = read_only_engine(seeded_url)
    before = len(ReleaseView(engine).releases())

    with pytest.raises(DBAPIError, match=r"readonly|read-only|query_only"), engine.begin() as c:
        c.execute(text(statement))

    assert len(ReleaseView(engine).releases()) == before
    engine.dispose()


def test_the_engine_a_running_page_uses_cannot_write(dashboard_env: dict[str, str]) -> None:
    from dashboard import data  # the cached engine the pages read through

    engine = data.view(dashboard_env["MOODFED_RELEASES_URL"]).engine

    with pytest.raises(DBAPIError, match="readonly"), engine.begin() as connection:
        connection.execute(text("DELETE FROM release"))


@pytest.mark.postgres
def test_the_dashboards_engine_cannot_write_to_a_postgresql_store(postgres_url: str) -> None:
    ReleaseStore(postgres_url).close()  # the server creates the tables
    engine = read_only_engine(postgres_url)

    with pytest.raises(DBAPIError, match="read-only transaction"), engine.begin() as c:
        c.execute(text("DELETE FROM release"))

    assert ReleaseView(engine).missing_tables() == []
    engine.dispose()


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            names.update(a.value for a in node.args if isinstance(a, ast.Constant))
    return names


def test_nothing_in_the_dashboard_imports_the_device_sdk() -> None:
    files = sorted((ROOT / "dashboard").rglob("*.py"))
    assert len(files) > 10

    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] == "client_sdk"
        )
        for path in files
    }

    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_loading_the_dashboards_modules_does_not_load_the_device_sdk() -> None:
    code = (
        "import sys, dashboard, dashboard.data, dashboard.auth, dashboard.charts, "
        "dashboard.tables, dashboard.cli; print('client_sdk' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
