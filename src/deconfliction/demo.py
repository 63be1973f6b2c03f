"""A scripted two-party scenario over a shared region, told as each side sees it.

Blue and Red fly in the same sky and answer to no common command. Blue gives notice of a patrol;
Red tries to file a transit through it without having looked, is refused, looks, and files again
with the key; Red then files a higher-priority medical evacuation, and Blue finds it cannot move
its patrol into that corridor. Every step goes through the same services as the HTTP API.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from deconfliction.config import Settings
from deconfliction.core.errors import DeconflictionError, MissingKey
from deconfliction.core.model import OperationDetails, OperationState
from deconfliction.geo import Circle, Polygon, Volume
from deconfliction.runtime import Runtime
from deconfliction.services.strategic import Filing
from deconfliction.services.views import view_for

FEET = 0.3048


def play(console: Console, db: str | None = None) -> None:
    workdir = None if db else tempfile.TemporaryDirectory(prefix="deconfliction-demo-")
    path = db or str(Path(workdir.name) / "demo.db")  # type: ignore[union-attr]
    rt = Runtime.open(Settings(db=path))
    try:
        _script(console, rt)
    finally:
        rt.close()
        if workdir:
            workdir.cleanup()


def _hhmm(t: float) -> str:
    return time.strftime("%H:%MZ", time.gmtime(t))


def _say(console: Console, who: str, text: str) -> None:
    colour = {"Blue": "blue", "Red": "red"}.get(who, "white")
    console.print(f"[bold {colour}]{who:>7}[/] │ {text}", highlight=False)


def _feed(console: Console, rt: Runtime, party: Any, names: dict[str, str], after: int) -> int:
    events = rt.strategic.events(party.id, after)
    for ev in events:
        op = ev.payload["operation"]
        owner = names.get(op["owner"], op["owner"])
        if ev.kind == "operation":
            text = (
                f"notice via subscription #{ev.payload['notification_index']}: {owner}'s "
                f"operation {op['id'][:8]} is {op['state']}, priority {op['priority']}, "
                f"{op['start'][11:16]}Z–{op['end'][11:16]}Z"
            )
        elif ev.kind == "late_notice":
            to = names.get(ev.payload["to"], ev.payload["to"])
            text = (
                f"[bold red]LATE NOTICE (flash)[/]: {to} was told of {owner}'s operation "
                f"{op['id'][:8]} {ev.payload['lead_s'] / 60:.0f} min before it became active; "
                f"the agreement is {ev.payload['required_s'] / 60:.0f} min"
            )
        else:
            mine = ", ".join(x[:8] for x in ev.payload["conflicts_with"])
            text = (
                f"conflict: {owner}'s operation {op['id'][:8]} ({op['state']}) now "
                f"conflicts with yours: {mine}"
                if mine
                else f"conflict over: {owner}'s operation {op['id'][:8]} ({op['state']}) no "
                "longer conflicts with yours"
            )
        hidden = "details" not in op
        _say(
            console,
            party.name,
            f"[dim]event {ev.id}[/] {text}"
            + (" [dim](its purpose is not shown: need to know)[/]" if hidden else ""),
        )
    return events[-1].id if events else after


def _script(console: Console, rt: Runtime) -> None:
    s = rt.strategic
    now = time.time()
    console.print(
        Panel.fit(
            "Two parties share the sky over a region about 60 km across and answer to no common "
            "command. Each files its operations ahead of time; the service finds every conflict "
            "exactly and makes each side prove it has seen what it conflicts with.",
            title="deconfliction demo",
            border_style="cyan",
        )
    )
    blue, red = s.add_party("Blue"), s.add_party("Red")
    names = {blue.id: "Blue", red.id: "Red"}
    seen = {blue.id: 0, red.id: 0}

    region = Polygon.create([(35.00, 36.40), (35.00, 37.10), (35.55, 37.10), (35.55, 36.40)])
    for party in (blue, red):
        s.subscribe(party.id, [Volume.create(region, 0, 15_000, now, now + 86_400)])
        _say(console, party.name, "subscribes to the shared region for the next 24 h")

    console.rule("1. Blue gives notice of a patrol")
    patrol_area = Polygon.create([(35.20, 36.55), (35.20, 36.90), (35.40, 36.90), (35.40, 36.55)])
    start, end = now + 45 * 60, now + 165 * 60
    patrol = s.file_operation(
        blue.id,
        Filing(
            [Volume.create(patrol_area, 15_000 * FEET, 25_000 * FEET, start, end)],
            OperationState.ACCEPTED,
            priority=1,
            details=OperationDetails(purpose="combat air patrol", aircraft=("BLUE11", "BLUE12")),
        ),
    ).operation
    _say(
        console,
        "Blue",
        f"files patrol {patrol.id[:8]}: FL150–FL250, {_hhmm(start)}–"
        f"{_hhmm(end)}, priority 1 → [green]Accepted[/], version {patrol.version}",
    )
    seen[red.id] = _feed(console, rt, red, names, seen[red.id])

    console.rule("2. Red files a transit without looking")
    transit = [
        Volume.create(
            Circle.create(35.30, 36.75, 12_000),
            18_000 * FEET,
            22_000 * FEET,
            now + 60 * 60,
            now + 90 * 60,
        )
    ]
    try:
        s.file_operation(red.id, Filing(transit, OperationState.ACCEPTED, priority=1))
    except MissingKey as exc:
        _say(console, "Red", f"[red]refused (409 {exc.code})[/]: {exc.message}")
        for f in exc.details["missing"]:
            _say(
                console,
                "Red",
                f"  must see {names[f.operation.owner]}'s {f.operation.id[:8]} "
                f"version {f.operation.version} (volume {list(f.volumes)})",
            )

    console.rule("3. Red looks, decides, and files again with the key")
    found = s.conflicts_for(red.id, transit)
    key = [f.operation.version for f in found]
    result = s.file_operation(red.id, Filing(transit, OperationState.ACCEPTED, 1, key))
    _say(
        console,
        "Red",
        f"files transit {result.operation.id[:8]} with key {key} → "
        f"[green]Accepted[/] (equal priority, aware of {len(result.conflicts)} conflict)",
    )
    seen[blue.id] = _feed(console, rt, blue, names, seen[blue.id])

    console.rule("4. Red files a higher-priority medical evacuation")
    corridor = Polygon.create([(35.05, 36.95), (35.05, 37.05), (35.50, 37.05), (35.50, 36.95)])
    medevac_volumes = [Volume.create(corridor, 0, 6_000, now + 30 * 60, now + 120 * 60)]
    found = s.conflicts_for(red.id, medevac_volumes)
    medevac = s.file_operation(
        red.id,
        Filing(
            medevac_volumes,
            OperationState.ACTIVATED,
            priority=5,
            key=[f.operation.version for f in found],
            details=OperationDetails(purpose="medical evacuation"),
        ),
    ).operation
    _say(
        console,
        "Red",
        f"activates medevac {medevac.id[:8]} at once, priority 5, corridor "
        "36.95–37.05°E: not refused (freedom of action), but flagged as a late notice",
    )
    seen[blue.id] = _feed(console, rt, blue, names, seen[blue.id])

    console.rule("5. Blue tries to stretch its patrol east into the corridor")
    wider = Polygon.create([(35.20, 36.55), (35.20, 37.00), (35.40, 37.00), (35.40, 36.55)])
    stretched = [Volume.create(wider, 3_000, 7_600, start, end)]
    found = s.conflicts_for(blue.id, stretched)
    try:
        s.update_operation(
            blue.id,
            patrol.id,
            patrol.version,
            Filing(
                stretched,
                OperationState.ACCEPTED,
                1,
                [f.operation.version for f in found],
                patrol.details,
            ),
        )
    except DeconflictionError as exc:
        _say(console, "Blue", f"[red]refused (409 {exc.code})[/]: {exc.message}")

    console.rule("6. Blue ends its patrol")
    current = s.get_operation(patrol.id)
    s.end_operation(blue.id, patrol.id, current.version)
    _say(console, "Blue", f"ends patrol {patrol.id[:8]}")
    seen[red.id] = _feed(console, rt, red, names, seen[red.id])
    seen[blue.id] = _feed(console, rt, blue, names, seen[blue.id])

    console.rule("What each side sees now")
    for party in (blue, red):
        table = Table(title=f"{party.name}'s view of the live operations", title_justify="left")
        for column in ("operation", "owner", "state", "priority", "window", "purpose"):
            table.add_column(column)
        for op in s.query_operations([Volume.create(region, 0, 15_000, now, now + 86_400)]):
            view = view_for(op, party.id)
            if "details" in view:
                purpose = view["details"]["purpose"] or "—"
            else:
                purpose = "[dim]not yours to see[/]"
            table.add_row(
                op.id[:8],
                names[op.owner],
                op.state.value,
                str(op.priority),
                f"{_hhmm(op.start)}–{_hhmm(op.end)}",
                purpose,
            )
        console.print(table)
    records = rt.store.transact(lambda tx: tx.write_records(), write=False)
    console.print(
        f"[dim]{len(records)} writes on record, each with the key its writer presented.[/]"
    )
