"""A PostgreSQL role the dashboard can read the release store with, and nothing else.

``default_transaction_read_only`` is a default any session may change (``SET TRANSACTION
READ WRITE``); privileges are not. The role gets LOGIN, CONNECT on the release database,
USAGE on its schema and SELECT on the release tables, and is checked to be able to change
none of them before the transaction that makes it commits. The password is sent as a
SCRAM-SHA-256 verifier computed here (libpq's ``PQencryptPasswordConn``), so the clear
password appears in no statement the server could log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, cast

import psycopg
from psycopg import sql
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from dashboard.store import RELEASE_TABLES, write_privileges

__all__ = ["ReadOnlyRole", "RoleError", "create_read_only_role"]

_ROLE_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RoleError(RuntimeError):
    """The role could not be made read-only; nothing was changed. The message says why."""


@dataclass(frozen=True, slots=True)
class ReadOnlyRole:
    """The role made, the URL the dashboard should use (no password in it), and notes."""

    role: str
    url: str
    created: bool
    notes: tuple[str, ...]


def create_read_only_role(
    *, admin_url: str, role: str, password: str, schema: str = "public"
) -> ReadOnlyRole:
    """Create (or update the password and grants of) ``role``, read-only on the release store.

    ``admin_url`` reaches the release database as a role that may create roles and owns or
    may grant on the release tables (its password, if any, is best left to libpq:
    ``PGPASSWORD`` or ``~/.pgpass``). Everything happens in one transaction: on any error,
    including a role that would still be able to write, nothing changes.
    """
    if not _ROLE_NAME.fullmatch(role):
        raise RoleError(f"role names here are 1-63 lowercase letters, digits and _, not {role!r}")
    if not password:
        raise RoleError("the password must not be empty")
    parsed = make_url(admin_url)
    if parsed.get_backend_name() != "postgresql":
        raise RoleError("a read-only role is for a PostgreSQL release store")
    database = parsed.database
    if not database:
        raise RoleError("the database URL names no database")
    engine = create_engine(parsed.set(drivername="postgresql+psycopg"), poolclass=NullPool)
    try:
        with engine.begin() as connection:  # committed on success, rolled back on any error
            created, notes = _make_role(
                connection, role=role, password=password, database=database, schema=schema
            )
    except SQLAlchemyError as error:
        raise RoleError(f"cannot make the role: {error}") from error
    finally:
        engine.dispose()
    url = parsed.set(username=role, password=None, drivername="postgresql+psycopg")
    return ReadOnlyRole(
        role=role, url=url.render_as_string(hide_password=False), created=created, notes=notes
    )


def _make_role(
    connection: Connection, *, role: str, password: str, database: str, schema: str
) -> tuple[bool, tuple[str, ...]]:
    raw = cast("psycopg.Connection[Any]", connection.connection.dbapi_connection)

    def run(statement: sql.Composable) -> None:
        connection.exec_driver_sql(statement.as_string(raw))

    def scalar(query: str, **params: object) -> object:
        return connection.execute(text(query), params).scalar()

    if scalar("SELECT current_user") == role:
        raise RoleError(f"{role} is the role this command connects as")
    missing = [
        table
        for table in RELEASE_TABLES
        if scalar("SELECT to_regclass(:t)", t=f"{schema}.{table}") is None
    ]
    if missing:
        raise RoleError(
            f"the release store in {database} has no {', '.join(missing)} table yet: "
            "start the server once (it creates them), then make the role"
        )
    flags = connection.execute(
        text(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = :role"
        ),
        {"role": role},
    ).first()
    if flags is not None and any(flags):
        raise RoleError(
            f"the role {role} exists with SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or "
            "BYPASSRLS: choose another name"
        )
    verifier = raw.pgconn.encrypt_password(
        password.encode("utf-8"), role.encode("utf-8"), b"scram-sha-256"
    ).decode("ascii")
    name = sql.Identifier(role)
    run(
        sql.SQL(
            "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
            "NOINHERIT PASSWORD {}"
        ).format(sql.SQL("CREATE" if flags is None else "ALTER"), name, sql.Literal(verifier))
    )
    run(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), name))
    run(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), name))
    tables = sql.SQL(", ").join(sql.Identifier(schema, table) for table in RELEASE_TABLES)
    run(sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(tables, name))
    run(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(name))
    can = write_privileges(connection, role=role, schema=schema)
    if can:
        raise RoleError(
            f"the role {role} could still change the release store ({'; '.join(can)}), "
            "through grants to it, to a role it belongs to, or to PUBLIC: revoke those first"
        )
    notes = []
    if scalar("SELECT has_database_privilege(:r, :d, 'TEMPORARY')", r=role, d=database):
        notes.append(
            f"every role (PUBLIC) may create temporary tables in {database}, {role} included; "
            "they vanish with its session and touch no release. If only moodfed uses "
            f"{database}: REVOKE TEMPORARY ON DATABASE {sql.Identifier(database).as_string(raw)} "
            "FROM PUBLIC"
        )
    return flags is None, tuple(notes)
