"""Wiring: one place that turns settings into a store, the services and the token authority."""

from __future__ import annotations

from dataclasses import dataclass

from deconfliction.config import Settings
from deconfliction.security import (
    TokenAuthority,
    load_or_create_signing_key,
    load_public_key,
)
from deconfliction.services.strategic import Strategic
from deconfliction.stores.base import Store


def open_store(settings: Settings) -> Store:
    from deconfliction.stores.sqlite import SqliteStore

    return SqliteStore(settings.db, synchronous=settings.sqlite_synchronous)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    strategic: Strategic
    tokens: TokenAuthority

    @classmethod
    def open(cls, settings: Settings | None = None) -> Runtime:
        from pathlib import Path

        settings = settings or Settings()
        store = open_store(settings)
        tokens = TokenAuthority(
            load_or_create_signing_key(settings.signing_key_path),
            [load_public_key(Path(p)) for p in settings.trusted_keys],
            audience=settings.audience,
            issuer=settings.issuer,
        )
        return cls(settings, store, Strategic(store, settings.policy()), tokens)

    def close(self) -> None:
        self.store.close()
