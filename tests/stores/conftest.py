"""The store contract runs against every store: SQLite always, PostgreSQL where a server is up.

This overrides the root ``store_factory`` (tests/conftest.py) for the tests in this directory,
adding a "postgres" kind that makes each store in a fresh schema of the test database. The
PostgreSQL kind skips when 127.0.0.1:5432 is unreachable, and fails instead under CI=true (see
tests/pg.py, whose fixtures other directories can import the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deconfliction.stores.base import Store
from tests.conftest import _BACKENDS, StoreFactory, closing_factory
from tests.pg import Schemas, pg_schemas, postgres_url

__all__ = ["pg_schemas", "postgres_url", "store_factory"]


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes fresh, empty stores of one kind; each is closed (and its schema dropped) at the end."""
    schemas: Schemas | None = None
    make: Callable[[], Store]
    if request.param == "postgres":
        from deconfliction.stores.postgres import PostgresStore

        schemas = Schemas(request.getfixturevalue("postgres_url"))

        def make() -> Store:
            assert schemas is not None
            # No pool: a test may make a store per hypothesis example, all open until it ends.
            return PostgresStore(schemas.new(), pool_size=0)

    else:
        make = _BACKENDS[request.param](tmp_path)
    yield from closing_factory(make)
    if schemas is not None:
        schemas.drop_all()
