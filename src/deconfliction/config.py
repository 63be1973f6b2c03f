"""Deployment settings, from ``DECONFLICTION_*`` environment variables or the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from deconfliction.core.policy import Policy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DECONFLICTION_")

    db: str = "./deconfliction.db"
    """The embedded SQLite file."""
    signing_key: str | None = None
    """PEM private key the service signs tokens with; default: ``<db>.key.pem``, made on first start."""
    trusted_keys: list[str] = []
    """Extra PEM public keys (RS256 or ES256) whose tokens are accepted, e.g. a party's own issuer."""
    audience: str = "deconfliction"
    issuer: str = "deconfliction"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    sqlite_synchronous: str = "FULL"
    allow_equal_priority_conflicts: bool = True

    @property
    def signing_key_path(self) -> Path:
        return Path(self.signing_key) if self.signing_key else Path(f"{self.db}.key.pem")

    def policy(self) -> Policy:
        return Policy(allow_equal_priority_conflicts=self.allow_equal_priority_conflicts)
