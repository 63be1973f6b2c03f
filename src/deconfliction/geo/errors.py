"""The one error the geometry layer raises: bad input, with a machine-readable code."""

from __future__ import annotations


class GeometryError(ValueError):
    """A footprint or volume that cannot be accepted; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
