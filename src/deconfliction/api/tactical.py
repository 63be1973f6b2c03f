"""Tracks in: a JSON batch per request, or newline-delimited JSON over one long request.

Both paths validate every report and refuse with 400 ``invalid_report`` (each problem names its
report, and on the stream its line), 400 ``unknown_operation`` or 403 ``not_your_operation``;
stored reports reach the cycle owner through the store (``services.tactical``).
"""

import json
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from deconfliction.core.errors import DeconflictionError, InvalidInput
from deconfliction.runtime import Runtime
from deconfliction.services.tactical import WIRE_FIELDS, Checked, IngestResult

STREAM_PATH = "/v1/tracks/stream"
MAX_LINE_BYTES = 1_048_576
_SHOWN_PROBLEMS = 20

_NUMBER_OR_TIME = {"oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [name for name, (_, required) in WIRE_FIELDS.items() if required],
    "additionalProperties": False,
    "properties": {
        "aircraft_id": {"type": "string", "maxLength": 100},
        "time": {**_NUMBER_OR_TIME, "description": "UTC, ISO 8601, or UNIX seconds."},
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "altitude_m": {"type": "number", "description": "Metres, WGS84."},
        "ground_speed_mps": {"type": "number", "minimum": 0},
        "track_deg": {"type": "number", "description": "Degrees true."},
        "vertical_rate_mps": {"type": "number"},
        "operation_id": {"type": "string", "description": "Your operation it flies under."},
    },
}
BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["reports"],
    "properties": {"reports": {"type": "array", "items": REPORT_SCHEMA}},
}


def _records(data: Any, where: str = "") -> list[Any]:
    """A batch ``{"reports": [...]}``, a bare list, or (stream lines) one report object."""
    if isinstance(data, dict) and "reports" in data:
        data = data["reports"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InvalidInput(
            f'{where}expected {{"reports": [...]}}, a list of reports or one report.',
            code="invalid_report",
        )
    return data


def _json(raw: bytes, where: str = "") -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError: bad UTF-8, bad JSON, or an integer of more than 4,300 digits;
        # RecursionError: arrays or objects nested deeper than the parser recurses.
        raise InvalidInput(f"{where}not valid JSON: {exc}.", code="invalid_json") from None


def _summary(result: IngestResult) -> dict[str, int]:
    return {"received": result.received, "stored": result.stored, "too_old": result.too_old}


def add_routes(
    app: FastAPI,
    runtime: Runtime,
    Reader: Any,
    Writer: Any,
    Admin: Any,
    errors: dict[int | str, dict[str, Any]],
) -> None:
    tracks = runtime.tracks

    @app.post(
        "/v1/tracks",
        status_code=202,
        responses=errors,
        tags=["tracks"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BATCH_SCHEMA}},
            }
        },
    )
    async def send_tracks(request: Request, who: Writer) -> dict[str, int]:
        """Report your aircraft: a batch of states, SI units, each optionally under one of your
        operations. Stored for the next tactical cycle; a report older than what the cycle
        holds for its aircraft (out of order, duplicate) is ignored there. `too_old`: older
        than a track lives (30 s), not stored."""
        records = _records(_json(await request.body()))
        return _summary(await run_in_threadpool(tracks.ingest, who.party_id, records))

    @app.post(STREAM_PATH, responses=errors, tags=["tracks"])
    async def stream_tracks(
        request: Request,
        who: Writer,
        on_error: Annotated[
            Literal["stop", "skip"],
            Query(description="`stop`: answer 400 at the first bad line; `skip`: count it."),
        ] = "stop",
    ) -> dict[str, Any]:
        """Report your aircraft over one long request of newline-delimited JSON
        (`application/x-ndjson`): each line one report or a batch. Lines are stored as they
        arrive (whatever has arrived is stored together); the answer, when you close the
        request, sums it up. With `on_error=stop` (default) a bad line ends the request with
        400, its `details` saying which line and how much was stored before it."""
        party = who.party_id
        known: set[str] = set()
        pending: list[Checked] = []
        total = IngestResult(0, 0, 0)
        lines = refused = 0
        problems: list[dict[str, Any]] = []
        buffer = b""

        async def flush() -> None:
            nonlocal pending, total
            if pending:
                await run_in_threadpool(tracks.append, pending)
                for checked in pending:
                    total = total + checked.result
                pending = []

        async def take(line: bytes) -> None:
            nonlocal lines, refused
            if not line.strip():
                return
            lines += 1
            where = f"line {lines}: "
            try:
                records = _records(_json(line, where), where)
                checked = await run_in_threadpool(tracks.check, party, records, where=where)
                await run_in_threadpool(tracks.authorize, party, checked, known)
            except DeconflictionError as exc:
                if on_error == "stop":
                    await flush()
                    exc.details = {
                        "line": lines,
                        "stored_before": _summary(total),
                        **(exc.details if isinstance(exc.details, dict) else {}),
                    }
                    raise
                refused += 1
                if len(problems) < _SHOWN_PROBLEMS:
                    problems.append({"line": lines, "code": exc.code, "message": exc.message})
                return
            pending.append(checked)

        try:
            async for chunk in request.stream():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    await take(line)
                if len(buffer) > MAX_LINE_BYTES:
                    raise InvalidInput(
                        f"line {lines + 1}: longer than {MAX_LINE_BYTES:,} bytes.",
                        code="line_too_long",
                    )
                await flush()
        except ClientDisconnect:
            await flush()
            return {}
        await take(buffer)
        await flush()
        return {
            "lines": lines,
            **_summary(total),
            "refused_lines": refused,
            "problems": problems,
        }
