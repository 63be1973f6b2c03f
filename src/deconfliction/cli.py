"""The command line: run the service, manage parties, file operations from GeoJSON, play the demo.

The CLI works on the embedded store directly, through the same services as the HTTP API; a
refusal prints its code and a sentence, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from deconfliction.config import Settings
from deconfliction.core.errors import DeconflictionError, MissingKey
from deconfliction.core.model import OperationDetails, OperationState
from deconfliction.formats import format_time, parse_time, parse_volumes
from deconfliction.runtime import Runtime
from deconfliction.security import ADMIN, DEFAULT_SCOPES
from deconfliction.services.strategic import Filing

app = typer.Typer(
    help="Deconfliction between parties who share airspace but answer to no common command.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
party_app = typer.Typer(help="Register parties and issue their tokens.", no_args_is_help=True)
op_app = typer.Typer(help="File, list, show and end operations.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(party_app, name="party")
app.add_typer(op_app, name="op")
app.add_typer(db_app, name="db")
audit_app = typer.Typer(
    help="Verify and export the tamper-evident audit log.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")

console = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str,
    typer.Option("--db", envvar="DECONFLICTION_DB", help="The SQLite file or a postgresql:// URL."),
]
AsOption = Annotated[str, typer.Option("--as", help="The party acting (name or id).")]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn refusals and bad files into a clear message and exit status 1, without a traceback."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DeconflictionError as exc:
            # soft_wrap: a long path or id stays whole on one line, for the terminal to wrap
            err.print(f"[bold red]refused[/] ({exc.code}): {exc.message}", soft_wrap=True)
            if isinstance(exc, MissingKey):
                show_conflicts(exc.details["missing"], err)
                err.print(
                    "Look at them, then file again with [bold]--aware[/] to present "
                    "their versions as your key."
                )
            raise typer.Exit(1) from None
        except (OSError, ValueError) as exc:
            err.print(f"[bold red]error[/]: {exc}", soft_wrap=True)
            raise typer.Exit(1) from None

    return run  # type: ignore[return-value]


def runtime(db: str) -> Runtime:
    return Runtime.open(Settings(db=db))


def show_conflicts(found: list[Any], out: Console = console) -> None:
    table = Table(title="Conflicting operations", title_justify="left")
    for column in ("operation", "owner", "priority", "state", "version", "volumes"):
        table.add_column(column)
    for f in found:
        op = f.operation
        table.add_row(
            op.id[:8],
            op.owner[:8],
            str(op.priority),
            op.state.value,
            op.version,
            ", ".join(str(i) for i in f.volumes),
        )
    out.print(table)


def show_operations(ops: list[Any], names: dict[str, str]) -> None:
    table = Table()
    table.add_column("operation", overflow="fold")
    for column in ("owner", "state", "priority", "start", "end"):
        table.add_column(column, no_wrap=True)
    for op in ops:
        table.add_row(
            op.id,
            names.get(op.owner, op.owner[:8]),
            op.state.value,
            str(op.priority),
            format_time(op.start)[:16],
            format_time(op.end)[:16],
        )
    console.print(table)


@app.command()
def serve(
    db: DbOption = "./deconfliction.db",
    host: Annotated[str, typer.Option(envvar="DECONFLICTION_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="DECONFLICTION_PORT")] = 8080,
    workers: Annotated[int, typer.Option(envvar="DECONFLICTION_WORKERS")] = 1,
) -> None:
    """Run the HTTP service on the embedded store (API docs at /docs)."""
    import uvicorn

    os.environ["DECONFLICTION_DB"] = db
    # Create the schema and the signing key once, up front (waiting for a database that starts).
    Runtime.open_patiently(Settings(db=db)).close()
    shown = re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", db)  # never print a password
    console.print(f"deconfliction on [bold]http://{host}:{port}[/]  (docs: /docs, db: {shown})")
    uvicorn.run(
        "deconfliction.api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@party_app.command("add")
@friendly
def party_add(
    name: str,
    db: DbOption = "./deconfliction.db",
    days: Annotated[float, typer.Option(help="Token lifetime in days.")] = 365.0,
    admin: Annotated[bool, typer.Option(help="Also grant the admin scope.")] = False,
) -> None:
    """Register a party and print its bearer token."""
    rt = runtime(db)
    party = rt.strategic.add_party(name)
    scopes = (*DEFAULT_SCOPES, ADMIN) if admin else DEFAULT_SCOPES
    token = rt.tokens.issue(party.id, scopes, lifetime_s=days * 86_400)
    console.print(f"party [bold]{party.name}[/] id {party.id}", highlight=False)
    print(token)


@party_app.command("token")
@friendly
def party_token(
    name: str,
    db: DbOption = "./deconfliction.db",
    days: Annotated[float, typer.Option(help="Token lifetime in days.")] = 365.0,
) -> None:
    """Issue a new token for an existing party."""
    rt = runtime(db)
    party = rt.strategic.find_party(name)
    print(rt.tokens.issue(party.id, DEFAULT_SCOPES, lifetime_s=days * 86_400))


@party_app.command("list")
@friendly
def party_list(db: DbOption = "./deconfliction.db") -> None:
    """List the registered parties."""
    table = Table("name", "id")
    for p in runtime(db).strategic.list_parties():
        table.add_row(p.name, p.id)
    console.print(table)


def _read_volumes(path: Path, defaults: dict[str, Any]) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if isinstance(data, dict) and "volumes" in data and "type" not in data:
        data = data["volumes"]
    return parse_volumes(data, {k: v for k, v in defaults.items() if v is not None})


@op_app.command("file")
@friendly
def op_file(
    path: Annotated[Path, typer.Argument(help="GeoJSON Feature(Collection) or a list of volumes.")],
    who: AsOption,
    db: DbOption = "./deconfliction.db",
    state: Annotated[OperationState, typer.Option()] = OperationState.ACCEPTED,
    priority: Annotated[int, typer.Option(min=0, max=1000)] = 0,
    aware: Annotated[
        bool,
        typer.Option(
            help="Present the current versions of every conflicting operation as the key."
        ),
    ] = False,
    start: Annotated[str | None, typer.Option(help="Default start (ISO 8601 UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Default end (ISO 8601 UTC).")] = None,
    lower: Annotated[float | None, typer.Option(help="Default lower altitude, m.")] = None,
    upper: Annotated[float | None, typer.Option(help="Default upper altitude, m.")] = None,
    purpose: Annotated[str | None, typer.Option(help="Private to you.")] = None,
) -> None:
    """File an operation from a GeoJSON file (properties carry altitudes and times)."""
    rt = runtime(db)
    party = rt.strategic.find_party(who)
    volumes = _read_volumes(
        path, {"start": start, "end": end, "altitude_lower_m": lower, "altitude_upper_m": upper}
    )
    key: tuple[str, ...] = ()
    if aware:
        found = rt.strategic.conflicts_for(party.id, volumes)
        key = tuple(f.operation.version for f in found)
    result = rt.strategic.file_operation(
        party.id, Filing(volumes, state, priority, key, OperationDetails(purpose=purpose))
    )
    console.print(
        f"filed [bold]{result.operation.id}[/] {result.operation.state} "
        f"version {result.operation.version}",
        highlight=False,
    )
    if result.conflicts:
        show_conflicts(result.conflicts)


@op_app.command("list")
@friendly
def op_list(
    who: AsOption,
    db: DbOption = "./deconfliction.db",
    all_: Annotated[bool, typer.Option("--all", help="Include ended operations.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List your operations."""
    from deconfliction.services.views import operation_view

    rt = runtime(db)
    party = rt.strategic.find_party(who)
    ops = rt.strategic.list_operations(party.id, include_ended=all_)
    if as_json:
        print(json.dumps([operation_view(op, owner_view=True) for op in ops], indent=2))
        return
    show_operations(ops, {p.id: p.name for p in rt.strategic.list_parties()})


@op_app.command("show")
@friendly
def op_show(operation_id: str, who: AsOption, db: DbOption = "./deconfliction.db") -> None:
    """Print an operation as JSON (details only if it is yours)."""
    from deconfliction.services.views import view_for

    rt = runtime(db)
    party = rt.strategic.find_party(who)
    op = rt.strategic.get_operation(operation_id)
    print(json.dumps(view_for(op, party.id), indent=2))


@op_app.command("query")
@friendly
def op_query(
    path: Annotated[Path, typer.Argument(help="The area: GeoJSON or a list of volumes.")],
    db: DbOption = "./deconfliction.db",
) -> None:
    """List every live operation intersecting a 4D area."""
    rt = runtime(db)
    names = {p.id: p.name for p in rt.strategic.list_parties()}
    show_operations(rt.strategic.query_operations(_read_volumes(path, {})), names)


@op_app.command("end")
@friendly
def op_end(
    operation_id: str,
    who: AsOption,
    db: DbOption = "./deconfliction.db",
    version: Annotated[str | None, typer.Option(help="Default: the current version.")] = None,
) -> None:
    """End one of your operations."""
    rt = runtime(db)
    party = rt.strategic.find_party(who)
    version = version or rt.strategic.get_operation(operation_id).version
    op = rt.strategic.end_operation(party.id, operation_id, version)
    console.print(f"ended {op.id} (version {op.version})", highlight=False)


@db_app.command("upgrade")
@friendly
def db_upgrade(db: DbOption = "./deconfliction.db") -> None:
    """Apply pending schema migrations (the service also does at start); print the version."""
    from deconfliction.runtime import open_store

    store = open_store(Settings(db=db))
    try:
        print(f"schema version {store.schema_version}")  # type: ignore[attr-defined]
    finally:
        store.close()


@audit_app.command("verify")
@friendly
def audit_verify(
    db: DbOption = "./deconfliction.db",
    bundle: Annotated[
        Path | None,
        typer.Option(help="Verify an exported evidence bundle instead of the database."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            help="The service's public key (PEM) to check a bundle against; default: the "
            "key inside the bundle."
        ),
    ] = None,
) -> None:
    """Prove the audit chain intact, or point at the first altered or missing entry."""
    if bundle is not None:
        from deconfliction.core.audit import verify_bundle

        data = json.loads(bundle.read_text())
        problems = verify_bundle(data, key.read_text() if key else None)
        if key is None:
            err.print(
                "[yellow]note[/]: checked against the key inside the bundle (fingerprint "
                f"{key_fingerprint(data['public_key'])}); anyone can make a self-consistent "
                "bundle, so compare that fingerprint with the service's "
                "(`deconfliction audit key`) or pass --key."
            )
        if problems:
            for problem in problems:
                err.print(f"[bold red]broken[/]: {problem}")
            raise typer.Exit(1)
        console.print(
            f"[green]intact[/]: {len(data['entries'])} entries, "
            f"{len(data['seals'])} seals, all signatures valid"
        )
        return
    result = runtime(db).audit.verify()
    if not result.intact:
        if result.broken:
            err.print(f"[bold red]broken[/] at entry {result.broken.seq}: {result.broken.reason}")
        for seq in result.bad_seals:
            err.print(f"[bold red]bad seal[/] at entry {seq}")
        raise typer.Exit(1)
    console.print(f"[green]intact[/]: {result.entries} entries, {result.seals} seals")


@audit_app.command("key")
@friendly
def audit_key(db: DbOption = "./deconfliction.db") -> None:
    """Print the service's public key (PEM) and its fingerprint, for parties to pin."""
    from deconfliction.core.audit import public_pem

    pem = public_pem(runtime(db).audit.signing_key)
    print(pem, end="")
    console.print(f"fingerprint {key_fingerprint(pem)}", highlight=False)


def key_fingerprint(pem: str) -> str:
    """SHA-256 of the key's DER encoding, hex in pairs: what people compare by eye."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    der = serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 16, 2))


@audit_app.command("export")
@friendly
def audit_export(
    start: Annotated[str, typer.Option("--from", help="UTC, ISO 8601.")],
    end: Annotated[str, typer.Option("--to", help="UTC, ISO 8601.")],
    out: Annotated[Path, typer.Option(help="Where to write the bundle (JSON).")],
    db: DbOption = "./deconfliction.db",
) -> None:
    """Write an evidence bundle (entries, seals, public key) a party can verify on its own."""
    bundle = runtime(db).audit.export(parse_time(start, "--from"), parse_time(end, "--to"))
    out.write_text(json.dumps(bundle, indent=1))
    console.print(
        f"wrote {len(bundle['entries'])} entries and {len(bundle['seals'])} seals to {out}"
    )


@app.command()
@friendly
def report(
    start: Annotated[str, typer.Option("--from", help="UTC, ISO 8601.")],
    end: Annotated[str, typer.Option("--to", help="UTC, ISO 8601.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    db: DbOption = "./deconfliction.db",
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
) -> None:
    """Write the review report for a coordination meeting: one self-contained HTML page."""
    import time

    from deconfliction.services.report import build_report

    rt = runtime(db)
    page = build_report(
        rt.store, parse_time(start, "--from"), parse_time(end, "--to"), now=time.time(), title=title
    )
    out.write_text(page)
    console.print(f"wrote {out}")


@app.command()
@friendly
def worker(db: DbOption = "./deconfliction.db") -> None:
    """Run only the periodic duties (webhooks, escalation, liveness, seals, the tactical
    cycle) until interrupted."""
    import time

    rt = runtime(db)
    duties = rt.duties()
    duties.start()
    console.print(f"deconfliction worker on {db}: delivering webhooks, escalating, sealing")
    try:
        while True:
            time.sleep(3600)
    finally:
        duties.stop()


@party_app.command("agree")
@friendly
def party_agree(
    party_a: str,
    party_b: str,
    minutes: Annotated[float, typer.Option(help="Minimum notice lead time.")],
    db: DbOption = "./deconfliction.db",
) -> None:
    """Record the notice lead time two parties agreed (default for others: 15 min)."""
    rt = runtime(db)
    a, b = rt.strategic.find_party(party_a), rt.strategic.find_party(party_b)
    rt.hotline.agree_lead_time("admin", a.id, b.id, minutes)
    console.print(f"{a.name} and {b.name}: notice at least {minutes:g} min ahead")


def _party_rule(rules: list[str], default: str) -> Any:
    from deconfliction.tactical.adsb import PartyRule

    prefixes: dict[str, str] = {}
    for rule in rules:
        prefix, sep, name = rule.partition("=")
        if not sep or not prefix.strip() or not name.strip():
            raise ValueError(f"--party {rule!r}: expected PREFIX=PARTY, e.g. AFR=blue.")
        prefixes[prefix.strip()] = name.strip()
    return PartyRule(prefixes, default)


@app.command()
@friendly
def replay(
    path: Annotated[Path, typer.Argument(help="Recorded ADS-B CSV (.gz), OpenSky columns.")],
    party: Annotated[
        list[str] | None,
        typer.Option(help="PREFIX=PARTY: callsigns starting with PREFIX fly for PARTY."),
    ] = None,
    default_party: Annotated[str, typer.Option(help="Party of every other callsign.")] = "other",
    realtime: Annotated[bool, typer.Option(help="Pace the replay on the wall clock.")] = False,
    speed: Annotated[
        float, typer.Option(min=0.001, help="With --realtime: times real time.")
    ] = 1.0,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after N rows.")] = None,
    rpz_nm: Annotated[float, typer.Option(min=0.001, help="Horizontal protected radius.")] = 5.0,
    hpz_ft: Annotated[float, typer.Option(min=0.001, help="Half vertical separation.")] = 1000.0,
    lookahead: Annotated[float, typer.Option(min=0.0, help="Look-ahead, s.")] = 300.0,
    same_party: Annotated[bool, typer.Option(help="Also watch same-party pairs.")] = False,
    top: Annotated[int, typer.Option(min=0, help="How many closest encounters to list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Replay recorded traffic through the tactical monitor and sum up the alerts."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from deconfliction.services.replay import replay as play
    from deconfliction.tactical.cycle import DetectionSettings
    from deconfliction.tactical.monitor import MonitorSettings

    if not path.exists():
        raise ValueError(f"{path}: no such file.")
    rule = _party_rule(party or [], default_party)
    settings = MonitorSettings(
        DetectionSettings(rpz_nm * 1852.0, hpz_ft * 0.3048, lookahead, same_party)
    )
    with Progress(
        TextColumn("[bold]replay[/]"),
        BarColumn(),
        TextColumn("{task.fields[sky]}  {task.completed:,} reports  {task.fields[open]} open"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task("replay", total=limit, sky="", open=0)

        def step(batch: Any, result: Any, _: Any) -> None:
            progress.update(
                task,
                advance=len(batch),
                sky=format_time(batch.time)[11:19],
                open=len(result.book),
            )

        summary = play(
            path, rule, settings, limit_rows=limit, realtime=realtime, speed=speed, on_step=step
        )
    _show_replay(summary, top, as_json)


def _show_replay(summary: Any, top: int, as_json: bool) -> None:
    encounters = summary.top(top)
    if as_json:
        print(
            json.dumps(
                {
                    "steps": summary.steps,
                    "reports": summary.reports,
                    "incomplete": summary.incomplete,
                    "aircraft": len(summary.aircraft),
                    "sky_s": summary.sky_s,
                    "wall_s": summary.wall_s,
                    "speed": summary.speed,
                    "changes": dict(summary.changes),
                    "pairs": [
                        {"parties": list(p), "new": n} for p, n in summary.pairs.most_common()
                    ],
                    "top": [
                        {
                            "aircraft": list(e.pair),
                            "callsigns": list(e.callsigns),
                            "parties": list(e.parties),
                            "opened": format_time(e.opened),
                            "duration_s": e.duration_s,
                            "min_distance_m": e.min_distance_m,
                            "min_dcpa_m": e.min_dcpa_m,
                            "lost": e.lost,
                        }
                        for e in encounters
                    ],
                },
                indent=2,
            )
        )
        return
    console.print(
        f"replayed {summary.reports:,} reports of {len(summary.aircraft):,} aircraft "
        f"({summary.incomplete:,} incomplete): {summary.sky_s:,.0f} s of sky in "
        f"{summary.wall_s:,.2f} s, [bold]{summary.speed:,.0f}x[/] real time",
        highlight=False,
    )
    changes = Table("alert changes", "count", title_justify="left")
    for kind in ("new", "continuing", "ended"):
        changes.add_row(kind, f"{summary.changes.get(kind, 0):,}")
    console.print(changes)
    if summary.pairs:
        pairs = Table("parties", "new alerts")
        for (a, b), n in summary.pairs.most_common():
            pairs.add_row(f"{a} / {b}", f"{n:,}")
        console.print(pairs)
    if encounters:
        table = Table(title="Closest encounters", title_justify="left")
        for column in ("callsigns", "parties", "opened (UTC)", "lasted", "closest", "lost"):
            table.add_column(column)
        for e in encounters:
            table.add_row(
                " / ".join(e.callsigns),
                " / ".join(e.parties),
                format_time(e.opened)[11:19],
                f"{e.duration_s:.0f} s",
                f"{e.min_distance_m / 1852.0:.2f} NM",
                "yes" if e.lost else "",
            )
        console.print(table)


@app.command()
@friendly
def demo(
    db: Annotated[str | None, typer.Option(help="Keep the demo's database here.")] = None,
) -> None:
    """Play a scripted two-party scenario and show what each side sees."""
    from deconfliction.demo import play

    play(console, db)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
