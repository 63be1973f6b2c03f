"""Wiring: one place that turns settings into a store, the services and the token authority."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from deconfliction.config import Settings
from deconfliction.core.errors import Unavailable
from deconfliction.security import (
    TokenAuthority,
    load_or_create_signing_key,
    parse_trusted_key,
)
from deconfliction.services.audit import AuditLog
from deconfliction.services.background import Duties
from deconfliction.services.delivery import Post, WebhookDelivery, http_post
from deconfliction.services.hotline import Hotline
from deconfliction.services.strategic import Strategic
from deconfliction.services.tactical import TacticalMonitor, TrackIngest
from deconfliction.stores.base import Store

log = logging.getLogger("deconfliction")


def open_store(settings: Settings) -> Store:
    """The store ``settings.db`` names: a ``postgresql://`` URL or a SQLite file."""
    if settings.db_is_url:
        from deconfliction.stores.postgres import PostgresStore

        return PostgresStore(settings.db)
    from deconfliction.stores.sqlite import SqliteStore

    return SqliteStore(
        settings.db,
        synchronous=settings.sqlite_synchronous,
        group_commit=settings.sqlite_group_commit,
        checkpoint_every_s=settings.sqlite_checkpoint_every_s,
    )


@dataclass
class Runtime:
    settings: Settings
    store: Store
    strategic: Strategic
    tokens: TokenAuthority
    hotline: Hotline
    audit: AuditLog
    tracks: TrackIngest

    @classmethod
    def open(cls, settings: Settings | None = None) -> Runtime:

        settings = settings or Settings()
        store = open_store(settings)
        signing_key = load_or_create_signing_key(settings.signing_key_path)
        tokens = TokenAuthority(
            signing_key,
            [parse_trusted_key(entry) for entry in settings.trusted_keys],
            audience=settings.audience,
            issuer=settings.issuer,
        )
        hotline_policy = settings.hotline_policy()
        return cls(
            settings,
            store,
            Strategic(
                store, settings.policy(), hotline_policy=hotline_policy, line=settings.line()
            ),
            tokens,
            Hotline(store, hotline_policy),
            AuditLog(store, signing_key, time.time),
            TrackIngest(store, settings.tactical_settings()),
        )

    @classmethod
    def open_patiently(cls, settings: Settings, wait_s: float = 60.0) -> Runtime:
        """``open``, waiting for a database that is still starting (as a supervisor would)."""
        deadline = time.monotonic() + wait_s
        delay = 0.5
        while True:
            try:
                return cls.open(settings)
            except Unavailable:
                if time.monotonic() >= deadline:
                    raise
                log.warning("database unavailable at start; retrying in %.1f s", delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def duties(self, post: Post | None = None) -> Duties:
        """The periodic work of this process (webhooks, escalation, liveness, seals)."""
        return Duties(
            self.hotline,
            self.audit,
            WebhookDelivery(self.store, post or http_post(), settle_later=True),
            tactical=TacticalMonitor(self.store, self.tracks.settings),
        )

    def close(self) -> None:
        self.store.close()
