"""Read-only for real: a PostgreSQL role made by ``moodfed dashboard create-readonly-role``
cannot write even after ``SET TRANSACTION READ WRITE``, and a SQLite store in a folder the
dashboard may not write is still readable (and still not writable).

The PostgreSQL tests run against the real server (``MOODFED_REQUIRE_POSTGRES=1`` makes them
fail rather than skip without it). The folder tests read from a process that really lacks
the right to write the folder: a plain user where chmod suffices, or, as root, a process
whose capability to override file permissions is dropped (``setpriv``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from dashboard import ReleaseView, read_only_engine
from dashboard.cli import app as dashboard_cli

from .conftest import APP, ROOT, log_in
from .stores import write_private_store

PASSWORD_ENV = "MOODFED_DASHBOARD_DB_PASSWORD"
ROLE_PASSWORD = "read-only role password 93"
WRITES = [
    "UPDATE release SET epsilon = 0",
    "DELETE FROM analytics_cell",
    "TRUNCATE model_round CASCADE",
    "INSERT INTO training_run (id, flower_run_id) VALUES ('forged', 'x')",
    "CREATE TABLE public.sneaky (x integer)",
]


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.fixture
def release_database(postgres_url: str) -> str:
    """A PostgreSQL release store with private releases, written by the server's own code."""
    write_private_store(postgres_url)
    return postgres_url


@pytest.fixture
def role(postgres_url: str) -> Iterator[str]:
    """A fresh role name; the role (roles are cluster-wide) is dropped afterwards."""
    name = f"dash_ro_{uuid.uuid4().hex[:10]}"
    yield name
    with _admin(postgres_url) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            admin.execute(f'DROP OWNED BY "{name}"')
            admin.execute(f'DROP ROLE "{name}"')


def _role_exists(url: str, name: str) -> bool:
    with _admin(url) as admin:
        return (
            admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            is not None
        )


def _create_role(admin_url: str, role: str, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        dashboard_cli,
        ["create-readonly-role", "--database-url", admin_url, "--role", role, *extra],
        env={PASSWORD_ENV: ROLE_PASSWORD},
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.postgres
def test_the_dashboards_engine_with_a_superuser_writes_after_set_transaction_read_write(
    release_database: str,
) -> None:
    """The finding: default_transaction_read_only is only a default (why a role is needed)."""
    engine = read_only_engine(release_database)

    with engine.begin() as connection:
        connection.execute(text("SET TRANSACTION READ WRITE"))
        connection.execute(text("CREATE TABLE public.sneaky (x integer)"))

    assert "superuser" in ReleaseView(engine).write_privileges()
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("statement", WRITES)
def test_a_write_through_the_dashboards_connection_as_the_read_only_role_fails(
    release_database: str, role: str, statement: str
) -> None:
    code, url, err = _create_role(release_database, role)
    assert code == 0, err
    engine = read_only_engine(url.strip(), password=ROLE_PASSWORD)
    view = ReleaseView(engine)
    before = (len(view.releases()), len(view.cells("mood-distribution")))

    with pytest.raises(DBAPIError, match="permission denied"), engine.begin() as connection:
        connection.execute(text("SET TRANSACTION READ WRITE"))
        connection.execute(text(statement))

    assert before[0] > 0 and before[1] > 0  # the role reads everything the pages need
    assert (len(view.releases()), len(view.cells("mood-distribution"))) == before
    assert view.write_privileges() == []
    assert view.missing_tables() == []
    engine.dispose()


@pytest.mark.postgres
def test_the_command_prints_a_url_without_the_password_and_says_what_it_did(
    release_database: str, role: str
) -> None:
    code, url, err = _create_role(release_database, role)

    assert code == 0
    assert url.strip().startswith(f"postgresql+psycopg://{role}@")
    assert ROLE_PASSWORD not in url + err
    assert f"created role {role}" in err and "nothing else (checked)" in err
    assert "temporary tables" in err  # what PUBLIC still allows is said, not hidden
    with _admin(release_database) as admin:
        stored = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()
        setting = admin.execute(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE r.rolname = %s",
            (role,),
        ).fetchone()
    assert stored is not None and str(stored[0]).startswith("SCRAM-SHA-256$")
    assert setting == (["default_transaction_read_only=on"],)


@pytest.mark.postgres
def test_running_the_command_again_updates_the_role_and_it_stays_read_only(
    release_database: str, role: str
) -> None:
    first = _create_role(release_database, role)
    second = _create_role(release_database, role)

    assert first[0] == second[0] == 0
    assert f"updated role {role}" in second[2]
    engine = read_only_engine(second[1].strip(), password=ROLE_PASSWORD)
    assert ReleaseView(engine).write_privileges() == []
    engine.dispose()


@pytest.mark.postgres
def test_a_role_that_could_write_is_refused_and_nothing_changes(
    release_database: str, role: str
) -> None:
    with _admin(release_database) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT INSERT ON release TO "{role}"')

    code, url, err = _create_role(release_database, role)

    assert code == 1 and url == ""
    assert "could still change the release store (INSERT on release)" in err
    with _admin(release_database) as admin:
        selects = admin.execute(
            "SELECT has_table_privilege(%s, 'release', 'SELECT')", (role,)
        ).fetchone()
        password = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()
        setting = admin.execute(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE r.rolname = %s",
            (role,),
        ).fetchone()
    assert selects == (False,) and password == (None,) and setting == (0,)  # all rolled back


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("role_name", "message"),
    [("Robert'); DROP TABLE release;--", "role names here are"), ("postgres", "connects as")],
)
def test_a_bad_role_name_is_refused_and_nothing_changes(
    release_database: str, role_name: str, message: str
) -> None:
    code, url, err = _create_role(release_database, role_name)

    assert code == 1 and url == "" and message in err
    engine = read_only_engine(release_database)
    assert ReleaseView(engine).missing_tables() == []
    engine.dispose()


@pytest.mark.postgres
def test_a_store_without_its_tables_gets_no_role(postgres_url: str, role: str) -> None:
    code, _, err = _create_role(postgres_url, role)

    assert code == 1 and "start the server once" in err
    assert not _role_exists(postgres_url, role)


@pytest.mark.postgres
def test_the_password_comes_from_a_private_file_or_the_environment_never_argv(
    release_database: str, role: str, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-password"
    shared.write_text(ROLE_PASSWORD + "\n")
    shared.chmod(0o644)
    private = tmp_path / "password"
    private.write_text(ROLE_PASSWORD + "\n")
    private.chmod(0o600)
    runner = CliRunner()
    base = ["create-readonly-role", "--database-url", release_database, "--role", role]

    no_password = runner.invoke(dashboard_cli, base, env={PASSWORD_ENV: ""})
    readable = runner.invoke(dashboard_cli, [*base, "--password-file", str(shared)])
    assert not _role_exists(release_database, role)
    from_file = runner.invoke(dashboard_cli, [*base, "--password-file", str(private)])
    on_argv = runner.invoke(dashboard_cli, [*base, "--password", ROLE_PASSWORD])

    assert no_password.exit_code == 2 and PASSWORD_ENV in no_password.output
    assert readable.exit_code == 2 and "chmod 600" in readable.output
    assert from_file.exit_code == 0, from_file.output
    assert on_argv.exit_code == 2 and "No such option" in on_argv.output


@pytest.mark.postgres
@pytest.mark.usefixtures("dashboard_env")
def test_the_dashboard_reads_through_the_role_with_its_password_file(
    release_database: str, role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, url, _ = _create_role(release_database, role)
    assert code == 0
    password_file = tmp_path / "releases-password"
    password_file.write_text(ROLE_PASSWORD)
    password_file.chmod(0o600)
    monkeypatch.setenv("MOODFED_RELEASES_URL", url.strip())
    monkeypatch.setenv("MOODFED_RELEASES_PASSWORD_FILE", str(password_file))

    readable = log_in(AppTest.from_file(APP, default_timeout=120).run())
    shared = tmp_path / "shared-password"
    shared.write_text(ROLE_PASSWORD)
    shared.chmod(0o640)
    monkeypatch.setenv("MOODFED_RELEASES_PASSWORD_FILE", str(shared))
    refused = log_in(AppTest.from_file(APP, default_timeout=120).run())

    assert not readable.exception and not readable.error
    assert any(m.label == "Mean mood (1-5)" for m in readable.metric)
    assert "chmod 600" in refused.error[0].value and not refused.metric


@pytest.mark.postgres
@pytest.mark.usefixtures("dashboard_env")
def test_the_dashboard_warns_the_operator_when_its_role_could_write(
    release_database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MOODFED_RELEASES_URL", release_database)  # the superuser
    caplog.set_level(logging.WARNING, logger="dashboard.data")

    app = log_in(AppTest.from_file(APP, default_timeout=120).run())

    assert not app.exception
    warnings = [r.getMessage() for r in caplog.records if r.name == "dashboard.data"]
    assert len(warnings) == 1
    assert "could change the release store (superuser; INSERT on release;" in warnings[0]
    assert "moodfed dashboard create-readonly-role" in warnings[0]


# SQLite in a folder the dashboard may not write

_READ = """
import sys
from sqlalchemy import text
from dashboard import ReleaseView, ReleaseStoreError, read_only_engine
engine = read_only_engine(sys.argv[1])
try:
    print("releases", len(ReleaseView(engine).releases()))
except ReleaseStoreError as error:
    print("error", error)
    raise SystemExit(0)
try:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM release"))
    print("wrote")
except Exception as error:
    print("refused", str(error).splitlines()[0])
try:
    open(sys.argv[2], "w").close()
    print("could write the folder")
except PermissionError:
    print("cannot write the folder")
"""


def _as_reader(url: str, folder: Path) -> list[str]:
    """Run the dashboard's reading code in a process that may not write ``folder``."""
    command = [sys.executable, "-c", _READ, url, str(folder / "probe")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root without setpriv, no process here lacks the right to write")
        caps = "-dac_override,-dac_read_search,-fowner"
        command = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "store"
    folder.mkdir()
    yield folder
    folder.chmod(0o755)  # so that the temporary folder can be cleaned up


def _seal(folder: Path) -> None:
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o555)


def _rows(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT count(*) FROM release").fetchone()[0])


def _in_wal_mode(path: Path) -> bool:
    return path.read_bytes()[18] == 2  # read the header: opening it would make -wal, -shm


def test_a_closed_store_in_a_folder_the_dashboard_cannot_write_is_read(
    seeded_url: str, read_only_folder: Path
) -> None:
    source = Path(seeded_url.removeprefix("sqlite:///"))
    with closing(sqlite3.connect(source)) as connection:
        expected = _rows(connection)
    database = read_only_folder / "releases.db"
    shutil.copy(source, database)
    assert _in_wal_mode(database)
    _seal(read_only_folder)

    out = _as_reader(f"sqlite:///{database}", read_only_folder)

    assert expected > 0 and out[0] == f"releases {expected}"
    assert out[1].startswith("refused") and "attempt to write a readonly database" in out[1]
    assert out[2] == "cannot write the folder"  # the test's premise holds
    assert sorted(p.name for p in read_only_folder.iterdir()) == ["releases.db"]


def test_a_store_the_server_is_writing_is_read_with_its_latest_changes(
    read_only_folder: Path,
) -> None:
    database = read_only_folder / "releases.db"
    write_private_store(f"sqlite:///{database}")
    server = sqlite3.connect(database)  # the server, still running, with changes in its log
    server.execute("PRAGMA wal_autocheckpoint = 0")
    before = _rows(server)
    server.execute("DELETE FROM release WHERE rowid = (SELECT min(rowid) FROM release)")
    server.commit()
    assert (read_only_folder / "releases.db-wal").stat().st_size > 0
    for path in read_only_folder.iterdir():
        path.chmod(stat.S_IMODE(path.stat().st_mode) & 0o644)
    read_only_folder.chmod(0o555)

    out = _as_reader(f"sqlite:///{database}", read_only_folder)
    server.close()

    assert out[0] == f"releases {before - 1}"  # the deletion still in the log is seen
    assert out[1].startswith("refused") and "attempt to write a readonly database" in out[1]
    assert out[2] == "cannot write the folder"


def test_unfolded_changes_the_dashboard_cannot_read_are_an_error_not_stale_figures(
    tmp_path: Path, read_only_folder: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    write_private_store(f"sqlite:///{live / 'releases.db'}")
    server = sqlite3.connect(live / "releases.db")
    server.execute("PRAGMA wal_autocheckpoint = 0")
    server.execute("DELETE FROM release")
    server.commit()
    for name in ("releases.db", "releases.db-wal"):  # a copy without the -shm index
        shutil.copy(live / name, read_only_folder / name)
    server.close()
    _seal(read_only_folder)

    out = _as_reader(f"sqlite:///{read_only_folder / 'releases.db'}", read_only_folder)

    assert out[0].startswith("error cannot read the release store:")
    assert "holds changes not yet in releases.db" in out[0]
