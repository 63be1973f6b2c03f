"""Deployment settings, from ``DECONFLICTION_*`` environment variables or the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from deconfliction.core.hotline import HotlinePolicy
from deconfliction.core.policy import Policy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DECONFLICTION_")

    db: str = "./deconfliction.db"
    """The embedded SQLite file, or a ``postgresql://`` URL (PostgreSQL, CockroachDB, YugabyteDB)."""
    signing_key: str | None = None
    """PEM private key the service signs tokens with, made on first start if missing. Default:
    ``<db>.key.pem`` next to a SQLite file; ``./deconfliction.key.pem`` with a database URL (set it
    to one shared key file when several hosts serve the same database)."""
    trusted_keys: list[str] = []
    """Extra PEM public keys (RS256 or ES256) whose tokens are accepted, e.g. a party's own issuer."""
    audience: str = "deconfliction"
    issuer: str = "deconfliction"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    sqlite_synchronous: str = "FULL"
    allow_equal_priority_conflicts: bool = True
    default_lead_time_minutes: float = 15.0
    """Minimum notice lead time between two parties that agreed nothing else."""
    unresponsive_after_s: float = 60.0
    down_after_s: float = 300.0
    escalation_repeat_s: float = 60.0

    @property
    def db_is_url(self) -> bool:
        """True when ``db`` names a database server rather than a SQLite file."""
        return self.db.startswith(("postgresql://", "postgres://"))

    @property
    def signing_key_path(self) -> Path:
        if self.signing_key:
            return Path(self.signing_key)
        return Path("./deconfliction.key.pem") if self.db_is_url else Path(f"{self.db}.key.pem")

    def policy(self) -> Policy:
        return Policy(allow_equal_priority_conflicts=self.allow_equal_priority_conflicts)

    def hotline_policy(self) -> HotlinePolicy:
        return HotlinePolicy(
            default_lead_time_s=self.default_lead_time_minutes * 60.0,
            unresponsive_after_s=self.unresponsive_after_s,
            down_after_s=self.down_after_s,
            repeat_every_s=self.escalation_repeat_s,
        )
