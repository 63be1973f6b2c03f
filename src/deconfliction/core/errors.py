"""Errors that carry a stable code; each face maps the class to its own status (HTTP, CLI exit).

A rule refuses with one of these and never knows which face asked.
"""

from __future__ import annotations

from typing import Any


class DeconflictionError(Exception):
    """Base: ``code`` is machine-readable and stable, ``message`` a sentence for a person."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class InvalidInput(DeconflictionError):
    """The request is well-formed but its content cannot be accepted (bad geometry, units...)."""

    code = "invalid_input"


class LimitExceeded(InvalidInput):
    """The request is larger than this deployment allows (vertices, volumes, area, horizon)."""

    code = "limit_exceeded"


class Unauthenticated(DeconflictionError):
    code = "unauthenticated"


class Forbidden(DeconflictionError):
    """The caller is known but may not do this (not its operation, missing scope)."""

    code = "forbidden"


class NotFound(DeconflictionError):
    code = "not_found"


class Conflict(DeconflictionError):
    """The request clashes with the current state: retry after looking again."""

    code = "conflict"


class VersionMismatch(Conflict):
    code = "version_mismatch"


class MissingKey(Conflict):
    """Proof of awareness failed: ``details`` lists the conflicting operations not in the key."""

    code = "missing_key"


class PriorityConflict(Conflict):
    code = "priority_conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class Unavailable(DeconflictionError):
    """The store could not complete the work now; the same request may succeed if retried."""

    code = "unavailable"
