"""The storm tests: service processes on a fresh PostgreSQL database, driven by scripts/storm.py.

They run alone, after the rest of the suite (``scripts/test.sh`` runs ``pytest tests/storm`` as a
separate, final step): one of them restarts PostgreSQL, which would disturb any other test using
the server at that moment. The PostgreSQL rule of tests/pg.py applies (skip when unreachable,
fail under ``CI=true``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.pg import postgres_url

__all__ = ["postgres_url", "storm"]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "storm.py"


@pytest.fixture(scope="session")
def storm() -> ModuleType:
    """scripts/storm.py, imported as a module (scripts/ is not a package)."""
    name = "deconfliction_storm"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return module
