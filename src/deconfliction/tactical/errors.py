"""The one error the tactical layer raises: bad input, with a machine-readable code.

Like ``geo``, this layer imports nothing else of ours, so it carries its own error type; a face
maps ``code`` to its status (HTTP 400, CLI exit code) exactly as it does for ``GeometryError``.
"""

from __future__ import annotations


class TacticalError(ValueError):
    """Input the tactical layer refuses; ``code`` is stable, ``message`` is for people.

    ``problems`` lists every refused item (for a report batch: one line per bad report and field),
    so a caller fixing a feed sees all of them at once rather than one per attempt.
    """

    def __init__(self, code: str, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems
