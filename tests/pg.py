"""PostgreSQL for tests: whether the server is there, and fresh schemas to run stores in.

The rule: tests that need PostgreSQL (marked ``postgres``) skip, with the reason, when
127.0.0.1:5432 cannot be reached; under ``CI=true`` they fail instead, so a CI job never passes
by skipping the store it was meant to test. Any test directory can use it by importing the
fixture into its conftest::

    from tests.pg import postgres_url  # noqa: F401
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator

import pytest

ADMIN_URL = os.environ.get("DECONFLICTION_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
"""A database the tests may create and drop schemas in (override for another server)."""


@functools.cache
def unreachable_reason() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg
    except ImportError as exc:  # the optional "postgres" dependencies are not installed
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"PostgreSQL is not reachable at {ADMIN_URL} ({first})"
    return None


def require_postgres() -> str:
    """The admin URL; skips the calling test (fails it when CI=true) if there is no server."""
    reason = unreachable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true requires PostgreSQL: {reason}", pytrace=False)
        pytest.skip(reason)
    return ADMIN_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a reachable PostgreSQL database; see the module docstring for the skip rule."""
    return require_postgres()


class Schemas:
    """Makes uniquely named schemas, each reached by a conninfo whose search_path points at it,
    and drops them all at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def new(self) -> str:
        import psycopg
        from psycopg.conninfo import make_conninfo

        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.names.append(name)
        return make_conninfo(self.admin_url, options=f"-c search_path={name}")

    def drop_all(self) -> None:
        import psycopg

        if not self.names:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self.names.clear()


@pytest.fixture
def pg_schemas(postgres_url: str) -> Iterator[Schemas]:
    """Fresh schemas for one test, dropped when it ends."""
    schemas = Schemas(postgres_url)
    yield schemas
    schemas.drop_all()
