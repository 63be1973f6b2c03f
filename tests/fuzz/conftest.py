"""The API fixture of tests/api (a fresh SQLite runtime with the parties blue and red)."""

from tests.api.conftest import api

__all__ = ["api"]
