"""Deployment settings, from ``DECONFLICTION_*`` environment variables or the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from deconfliction.core.hotline import HotlinePolicy
from deconfliction.core.policy import Policy
from deconfliction.services.line import Line

if TYPE_CHECKING:
    from deconfliction.services.tactical import TacticalSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DECONFLICTION_")

    db: str = "./deconfliction.db"
    """The embedded SQLite file, or a ``postgresql://`` URL (PostgreSQL, CockroachDB, YugabyteDB)."""
    signing_key: str | None = None
    """PEM private key the service signs tokens with, made on first start if missing. Default:
    ``<db>.key.pem`` next to a SQLite file; ``./deconfliction.key.pem`` with a database URL (set it
    to one shared key file when several hosts serve the same database)."""
    trusted_keys: list[str] = []
    """``PARTY_ID=path/to/public-key.pem`` entries: a party's own issuer (RS256 or ES256) whose
    tokens are accepted for that party only (never for another ``sub``, never with ``admin``)."""
    audience: str = "deconfliction"
    issuer: str = "deconfliction"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    http_threads: int = 40
    """Threads per process for blocking request handlers (the store is blocking)."""
    sqlite_synchronous: str = "FULL"
    sqlite_group_commit: bool = True
    """Commit writes into areas apart that wait at one moment together (one sync for many);
    a write that finds nobody waiting commits alone, without a hand-over."""
    sqlite_checkpoint_every_s: float = Field(1.0, ge=0.0, le=60.0)
    """A thread copies committed pages from the WAL into the database file this often (after
    writes), so no writer does it inside its commit; 0 leaves it to SQLite's auto-checkpoint."""
    line_hold_ms: float = Field(20.0, ge=0.0, le=10_000.0)
    """How long a party told of a refusal in a busy area holds it for its retry before the next
    refused party there hears (docs/writes.md, "The line"): a round trip, with room. Raise it
    for parties far away."""
    line_max_wait_ms: float = Field(50.0, ge=0.0, le=10_000.0)
    """The longest a refused party waits in line at a time; 0 answers every refusal at once."""
    allow_equal_priority_conflicts: bool = True
    default_lead_time_minutes: float = 15.0
    """Minimum notice lead time between two parties that agreed nothing else."""
    unresponsive_after_s: float = 60.0
    down_after_s: float = 300.0
    escalation_repeat_s: float = 60.0
    tactical_cycle_s: float = 1.0
    """How often the cycle owner runs detection over every track."""
    tactical_rpz_m: float = 9_260.0
    """Horizontal protected radius (5 NM)."""
    tactical_hpz_m: float = 304.8
    """Half the vertical separation (1,000 ft)."""
    tactical_lookahead_s: float = 300.0
    tactical_same_party: bool = False
    """Also watch pairs of aircraft of the same party."""
    tactical_pairs: list[dict[str, Any]] = []
    """Per pair of parties (names or ids): ``[{"parties": ["blue", "red"], "rpz_m": 1852,
    "hpz_m": 152.4, "lookahead_s": 120}]``; a missing value is the deployment's."""
    tactical_lateral_tolerance_m: float = 0.0
    tactical_vertical_tolerance_m: float = 0.0
    tactical_grace_s: float = 10.0
    """How long an aircraft may be outside its operation's volumes before it is reported."""
    tactical_lease_s: float = 5.0
    tactical_retention_s: float = 60.0

    @property
    def db_is_url(self) -> bool:
        """True when ``db`` names a database server rather than a SQLite file."""
        return self.db.startswith(("postgresql://", "postgres://"))

    @property
    def signing_key_path(self) -> Path:
        if self.signing_key:
            return Path(self.signing_key)
        return Path("./deconfliction.key.pem") if self.db_is_url else Path(f"{self.db}.key.pem")

    def line(self) -> Line:
        return Line(hold_s=self.line_hold_ms / 1e3, max_wait_s=self.line_max_wait_ms / 1e3)

    def policy(self) -> Policy:
        return Policy(allow_equal_priority_conflicts=self.allow_equal_priority_conflicts)

    def hotline_policy(self) -> HotlinePolicy:
        return HotlinePolicy(
            default_lead_time_s=self.default_lead_time_minutes * 60.0,
            unresponsive_after_s=self.unresponsive_after_s,
            down_after_s=self.down_after_s,
            repeat_every_s=self.escalation_repeat_s,
        )

    def tactical_settings(self) -> TacticalSettings:
        from deconfliction.services.tactical import tactical_settings

        return tactical_settings(
            cycle_s=self.tactical_cycle_s,
            rpz_m=self.tactical_rpz_m,
            hpz_m=self.tactical_hpz_m,
            lookahead_s=self.tactical_lookahead_s,
            same_party=self.tactical_same_party,
            pairs=self.tactical_pairs,
            lateral_tolerance_m=self.tactical_lateral_tolerance_m,
            vertical_tolerance_m=self.tactical_vertical_tolerance_m,
            grace_s=self.tactical_grace_s,
            lease_s=self.tactical_lease_s,
            retention_s=self.tactical_retention_s,
        )
