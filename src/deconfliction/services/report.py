"""The review report for the parties' coordination meetings: one self-contained HTML page.

The parties meet every so often to look back at a period: how much they flew, how often they got
in each other's way, who gave notice too late, how fast the hotline was answered, what the tactical
picture raised and who went quiet. ``build_report`` reads everything it needs in one read
transaction and renders a page with inline CSS and inline SVG charts: no script, no network, no
font or image to fetch, so it opens offline, can be mailed as one file and prints on A4.

Reading (``_read``), working out the numbers (``_analyse``) and drawing (``_page`` and the
``*_svg`` helpers) are kept apart: the drawing is pure functions of plain numbers and strings.
What each number means is written down in ``docs/report.md``.
"""

from __future__ import annotations

import bisect
import html
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from deconfliction.core.errors import InvalidInput
from deconfliction.core.hotline import Urgency
from deconfliction.core.model import Event, Liveness, Message, Notice, Receipt, WriteRecord
from deconfliction.stores.base import Store, Tx

CONFLICT_KIND = "conflict"
AVAILABILITY_KIND = "availability"
ALERT_KINDS: tuple[str, ...] = (
    "alert",
    "alert.conflict",
    "alert.tactical",
    "alert.separation",
    "alert.nonconformance",
    "alert.conformance",
    "alert.late_notice",
    "alert.unacknowledged",
)
"""Event kinds read as alerts. The store selects events by exact kind, so a new alert kind must be
added here to appear in the report; any kind starting with "alert" is then counted."""

DEGRADED = frozenset({"Unresponsive", "Down"})
"""Availability states that make an incident; Normal and Unknown do not."""

MAX_ROWS = 50
"""Longest listing of single records in a section; the section's summary still counts them all."""

HOUR = 3_600.0
DAY = 86_400.0
WEEK = 7 * DAY

# Colours, shared by the CSS and the charts so a legend always matches its chart.
INK = "#1d2433"
MUTED = "#5b6475"
GRID = "#e3e7ee"
ACCENT = "#2f5d9e"
LATE = "#c2410c"
CONFORMANCE = "#7c3aed"
NO_DATA = "#cbd2dc"
STATE_COLOURS = {
    "Normal": "#2f855a",
    "Unresponsive": "#d69e2e",
    "Down": "#c53030",
    "Unknown": NO_DATA,
}

# ------------------------------------------------------------------------------------------------
# Entry point


def build_report(
    store: Store, start: float, end: float, *, now: float, title: str | None = None
) -> str:
    """The review page for ``[start, end)`` (UTC seconds) as a complete HTML document.

    ``now`` is when the report is made: it decides which unacknowledged messages are overdue and
    where an incident that has not ended stops on the timeline.
    """
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise InvalidInput("The report period must end after it starts.", code="invalid_period")
    snapshot = store.transact(lambda tx: _read(tx, start, end), write=False)
    facts = _analyse(snapshot, start, end, now)
    return _page(facts, title or _default_title(start, end))


# ------------------------------------------------------------------------------------------------
# Reading: one read transaction, so every number on the page describes the same moment


@dataclass(frozen=True, slots=True)
class _Snapshot:
    names: dict[str, str]
    notices: list[Notice]
    messages: list[Message]
    receipts: list[tuple[Message, Receipt]]
    writes: list[WriteRecord]
    """Every write before the end of the period (earlier ones tell which conflicts are old)."""
    owners: dict[str, str]
    """Operation id -> owning party, for the operations the period's conflicts name."""
    conflict_events: list[Event]
    alert_events: list[Event]
    availability_events: list[Event]
    liveness: list[Liveness]


def _read(tx: Tx, start: float, end: float) -> _Snapshot:
    writes = [w for w in tx.write_records() if w.time < end]
    owners = {w.operation_id: w.owner for w in writes}
    for w in writes:
        if w.time < start:
            continue
        for other in _conflict_ids(w):
            if other not in owners and (op := tx.get_operation(other)) is not None:
                owners[other] = op.owner
    return _Snapshot(
        names={p.id: p.name for p in tx.list_parties()},
        notices=tx.notices_between(start, end),
        messages=tx.messages_between(start, end),
        receipts=tx.receipts_between(start, end),
        writes=writes,
        owners=owners,
        conflict_events=tx.events_between(start, end, [CONFLICT_KIND]),
        alert_events=[
            e for e in tx.events_between(start, end, ALERT_KINDS) if e.kind.startswith("alert")
        ],
        availability_events=tx.events_between(start, end, [AVAILABILITY_KIND]),
        liveness=tx.list_liveness(),
    )


def _conflict_ids(write: WriteRecord) -> list[str]:
    """The other operations a write conflicted with; each entry is (operation id, version)."""
    ids = []
    for entry in write.conflicts:
        ref = entry[0] if isinstance(entry, list | tuple) and entry else entry
        if isinstance(ref, str):
            ids.append(ref)
    return ids


# ------------------------------------------------------------------------------------------------
# Analysis: plain records in, the page's facts out


@dataclass(frozen=True, slots=True)
class _Conflict:
    time: float
    operations: tuple[str, str]
    parties: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Alert:
    time: float
    kind: str
    family: str
    """"tactical", "conformance" or "other"."""
    parties: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Change:
    time: float
    party: str
    previous: str
    availability: str


@dataclass(frozen=True, slots=True)
class _Incident:
    party: str
    began: float
    ended: float | None
    """None: not back to Normal by the end of the period."""
    worst: str
    carried: bool = False
    """Already running when the period began, since an unknown time."""


@dataclass(frozen=True, slots=True)
class _Facts:
    start: float
    end: float
    now: float
    names: dict[str, str]
    filed: int
    writes: int
    notices: list[Notice]
    messages: list[Message]
    receipts: list[tuple[Message, Receipt]]
    conflicts: list[_Conflict]
    alerts: list[_Alert]
    changes: list[_Change]
    incidents: list[_Incident]
    liveness: list[Liveness]

    def name(self, party_id: str) -> str:
        return self.names.get(party_id, party_id)

    def pair(self, parties: Iterable[str]) -> str:
        names = sorted({self.name(p) for p in parties})
        return " ↔ ".join(names) if names else "(unknown)"


def _analyse(s: _Snapshot, start: float, end: float, now: float) -> _Facts:
    first_write: dict[str, float] = {}
    for w in s.writes:
        first_write.setdefault(w.operation_id, w.time)
    changes = _availability_changes(s.availability_events)
    return _Facts(
        start=start,
        end=end,
        now=now,
        names=s.names,
        filed=sum(1 for t in first_write.values() if start <= t),
        writes=sum(1 for w in s.writes if start <= w.time),
        notices=s.notices,
        messages=s.messages,
        receipts=s.receipts,
        conflicts=_conflicts(s, start),
        alerts=_alerts(s.alert_events),
        changes=changes,
        incidents=_incidents(changes, s.liveness, start),
        liveness=s.liveness,
    )


def _conflicts(s: _Snapshot, start: float) -> list[_Conflict]:
    """Each pair of operations counted once, when first recorded; pairs known before are old."""
    seen: dict[frozenset[str], _Conflict] = {}

    def note(time: float, a: str, b: str, parties: Iterable[str | None]) -> None:
        key = frozenset((a, b))
        if len(key) == 2 and (key not in seen or time < seen[key].time):
            named = tuple(sorted({p for p in parties if p}))
            seen[key] = _Conflict(time, (a, b), named)

    for w in s.writes:
        for other in _conflict_ids(w):
            note(w.time, w.operation_id, other, (w.owner, s.owners.get(other)))
    for e in s.conflict_events:
        operation = _dict(e.payload.get("operation"))
        mine, owner = operation.get("id"), operation.get("owner")
        theirs = e.payload.get("conflicts_with")
        if not isinstance(mine, str) or not isinstance(theirs, list):
            continue
        for other in theirs:
            if isinstance(other, str):
                note(e.time, mine, other, (owner if isinstance(owner, str) else None, e.party_id))
    return sorted((c for c in seen.values() if c.time >= start), key=lambda c: c.time)


def _alert_family(kind: str) -> str:
    k = kind.lower()
    if "conform" in k:
        return "conformance"
    if "conflict" in k or "tactical" in k or "separation" in k:
        return "tactical"
    return "other"


_FOLLOW_UPS = frozenset({"continuing", "ended", "update", "updated", "cleared", "resolved"})
_PARTY_KEYS = ("party_id", "other_party", "other_party_id", "owner", "other_owner")
_PARTY_LIST_KEYS = ("parties", "party_ids", "owners")


def _alerts(events: Sequence[Event]) -> list[_Alert]:
    """Alerts as raised: follow-ups dropped, the copies in several parties' feeds merged."""
    merged: dict[tuple[Any, ...], tuple[float, str, set[str]]] = {}
    for e in events:
        p = _dict(e.payload)
        change = p.get("change") or p.get("status")
        if isinstance(change, str) and change.lower() in _FOLLOW_UPS:
            continue
        ident = p.get("alert_id") or p.get("id")
        key = (
            (e.kind, str(ident))
            if ident is not None
            else (e.kind, e.time, repr(p.get("pair") or p.get("aircraft")))
        )
        parties = {e.party_id}
        parties.update(v for k in _PARTY_KEYS if isinstance(v := p.get(k), str))
        for k in _PARTY_LIST_KEYS:
            if isinstance(v := p.get(k), list | tuple):
                parties.update(x for x in v if isinstance(x, str))
        if key in merged:
            time, kind, known = merged[key]
            merged[key] = (min(time, e.time), kind, known | parties)
        else:
            merged[key] = (e.time, e.kind, parties)
    alerts = [
        _Alert(time, kind, _alert_family(kind), tuple(sorted(parties)))
        for time, kind, parties in merged.values()
    ]
    return sorted(alerts, key=lambda a: a.time)


def _availability_changes(events: Sequence[Event]) -> list[_Change]:
    changes: dict[tuple[str, float, str], _Change] = {}
    for e in events:
        p = _dict(e.payload)
        named = p.get("party_id")
        party = named if isinstance(named, str) else e.party_id
        new = str(p.get("availability") or "Unknown")
        previous = str(p.get("previous") or "Unknown")
        changes.setdefault((party, e.time, new), _Change(e.time, party, previous, new))
    return sorted(changes.values(), key=lambda c: (c.time, c.party))


def _incidents(
    changes: Sequence[_Change], liveness: Sequence[Liveness], start: float
) -> list[_Incident]:
    """A party's spells outside Normal: from entering Unresponsive or Down to being Normal
    again. A spell already running when the period starts is kept, beginning at the period's
    start (or, for a party with no change in the period, when its current state began)."""
    open_: dict[str, _Incident] = {}
    done: list[_Incident] = []
    seen: set[str] = set()
    for c in changes:
        if c.party not in seen:
            seen.add(c.party)
            if c.previous in DEGRADED:
                open_[c.party] = _Incident(c.party, start, None, c.previous, carried=True)
        current = open_.get(c.party)
        if c.availability in DEGRADED:
            if current is None:
                open_[c.party] = _Incident(c.party, c.time, None, c.availability)
            elif c.availability == "Down":
                open_[c.party] = replace(current, worst="Down")
        elif current is not None:
            done.append(replace(current, ended=c.time))
            del open_[c.party]
    for lv in liveness:
        if lv.party_id not in seen and lv.availability in DEGRADED and lv.changed_at < start:
            open_[lv.party_id] = _Incident(lv.party_id, lv.changed_at, None, lv.availability)
    return sorted([*done, *open_.values()], key=lambda i: i.began)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------------------------
# Formatting


class _Html(str):
    """Markup that is already escaped; everything else is escaped on the way out."""


def _esc(value: object) -> str:
    return value if isinstance(value, _Html) else html.escape(str(value), quote=True)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%MZ")


def _at(t: float) -> _Html:
    """A time for a table cell: kept on one line."""
    return _Html(f"<time>{_esc(_when(t))}</time>")


def _duration(seconds: float) -> str:
    sign = "−" if seconds < 0 else ""
    s = abs(seconds)
    if s < 90:
        return f"{sign}{s:.0f} s"
    if s < 90 * 60:
        minutes = s / 60
        text = f"{minutes:.1f}".removesuffix(".0") if minutes < 10 else f"{minutes:.0f}"
        return f"{sign}{text} min"
    if s < 48 * HOUR:
        hours, minutes = divmod(round(s / 60), 60)
        return f"{sign}{hours} h {minutes:02d} min"
    days, hours = divmod(round(s / HOUR), 24)
    return f"{sign}{days} d {hours} h"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Iterable[int] = ()
) -> str:
    right = set(numeric)

    def cell(tag: str, i: int, value: object) -> str:
        cls = ' class="num"' if i in right else ""
        return f"<{tag}{cls}>{_esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _empty(text: str) -> str:
    return f'<p class="empty">{_esc(text)}</p>'


def _legend(items: Sequence[tuple[str, str]]) -> str:
    keys = "".join(
        f'<span><i style="background:{colour}"></i>{_esc(label)}</span>' for label, colour in items
    )
    return f'<div class="legend">{keys}</div>'


def _figure(svg: str, caption: str, legend: str = "") -> str:
    return f"<figure>{svg}{legend}<figcaption>{_esc(caption)}</figcaption></figure>"


def _code(text: str) -> _Html:
    return _Html(f"<code>{_esc(text)}</code>")


# ------------------------------------------------------------------------------------------------
# Charts: pure functions from numbers (and their labels) to inline SVG

W = 880
"""Chart width in SVG units; the page's content column is about as wide, so text keeps its size."""


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is at least ``raw``."""
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _count_ticks(top: float) -> list[float]:
    """Whole-number gridlines from 0 to at least ``top``, four or five of them."""
    step = max(1.0, math.ceil(_nice_step(top / 4)))
    count = max(1, math.ceil(top / step))
    return [i * step for i in range(count + 1)]


def _number(v: float) -> str:
    text = f"{v:.0f}" if float(v).is_integer() else f"{v:g}"
    return text.replace("-", "−")


HALO = 'paint-order="stroke" stroke="#fff" stroke-width="3"'
"""Value labels keep a white outline so a reference line crossing them does not hide them."""


def _svg(width: float, height: float, body: Iterable[str], label: str) -> str:
    return (
        f'<svg viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{_esc(label)}" font-size="11" fill="{INK}">'
        + "".join(body)
        + "</svg>"
    )


def _y_grid(ticks: Sequence[float], left: float, right: float, y: Any) -> list[str]:
    out = []
    for t in ticks:
        out.append(
            f'<line x1="{left}" x2="{right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" fill="{MUTED}">'
            f"{_number(t)}</text>"
        )
    return out


def _x_labels(
    labels: Sequence[str], xs: Sequence[float], baseline: float, room: float
) -> list[str]:
    """Labels under the axis, thinned so that they never overlap."""
    widest = max((len(label) for label in labels), default=1) * 6.5 + 8
    every = max(1, math.ceil(widest / room)) if room > 0 else 1
    return [
        f'<text x="{x:.1f}" y="{baseline + 15:.1f}" text-anchor="middle" fill="{MUTED}">'
        f"{_esc(label)}</text>"
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % every == 0
    ]


def bar_chart_svg(
    labels: Sequence[str],
    *series: Sequence[float],
    colours: Sequence[str] = (ACCENT,),
    height: int = 190,
    label: str = "bar chart",
) -> str:
    """Vertical bars, one per label; several series stack bottom-up in the order given."""
    n = len(labels)
    totals = [sum(s[i] for s in series) for i in range(n)]
    ticks = _count_ticks(max(totals, default=0))
    left, right, top, bottom = 40.0, W - 8.0, 14.0, height - 24.0
    slot = (right - left) / max(n, 1)
    bar = max(1.0, slot * 0.72)

    def y(v: float) -> float:
        return bottom - (bottom - top) * v / ticks[-1]

    body = _y_grid(ticks, left, right, y)
    centres = [left + (i + 0.5) * slot for i in range(n)]
    for i, cx in enumerate(centres):
        base = 0.0
        for values, colour in zip(series, _cycle(colours, len(series)), strict=True):
            v = values[i]
            if v > 0:
                body.append(
                    f'<rect x="{cx - bar / 2:.1f}" y="{y(base + v):.1f}" width="{bar:.1f}" '
                    f'height="{y(base) - y(base + v):.1f}" fill="{colour}"/>'
                )
            base += v
        if totals[i] > 0 and bar >= 14:
            body.append(
                f'<text x="{cx:.1f}" y="{y(totals[i]) - 4:.1f}" text-anchor="middle" {HALO}>'
                f"{_number(totals[i])}</text>"
            )
    body.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{MUTED}"/>')
    body += _x_labels(labels, centres, bottom, slot)
    return _svg(W, height, body, label)


def histogram_svg(
    values: Sequence[float],
    edges: Sequence[float],
    *,
    flagged: Sequence[bool] | None = None,
    marks: Sequence[tuple[float, str]] = (),
    extra: Sequence[tuple[str, int]] = (),
    unit: str = "",
    height: int = 210,
    label: str = "histogram",
) -> str:
    """Counts of ``values`` in the bins between ``edges``, values past the last edge in a "≥"
    bin; ``flagged`` values stack at the bottom in the late colour; ``marks`` are dashed
    reference lines (a value and its label); ``extra`` are separate grey bars (e.g. "no ack")."""
    flags = list(flagged) if flagged is not None else [False] * len(values)
    bins = len(edges) - 1
    counts, late = [0] * (bins + 1), [0] * (bins + 1)
    for v, f in zip(values, flags, strict=True):
        i = min(bins, max(0, bisect.bisect_right(edges, v) - 1))
        counts[i] += 1
        late[i] += f
    overflow = counts[bins] > 0
    slots = bins + (1 if overflow else 0) + (len(extra) + 0.5 if extra else 0)
    ticks = _count_ticks(max([*counts, *(c for _, c in extra)], default=0))
    left, right, top, bottom = 40.0, W - 8.0, 26.0 + 12 * (len(marks) > 1), height - 24.0
    slot = (right - left) / max(slots, 1)

    def y(v: float) -> float:
        return bottom - (bottom - top) * v / ticks[-1]

    def x_at(value: float) -> float:
        return left + slot * bins * (value - edges[0]) / (edges[-1] - edges[0])

    body = _y_grid(ticks, left, right, y)
    on_top: list[str] = []  # counts over the bars, drawn after the reference lines
    for i in range(bins + (1 if overflow else 0)):
        x0 = left + i * slot + 0.5
        for count, base, colour in ((late[i], 0, LATE), (counts[i] - late[i], late[i], ACCENT)):
            if count:
                body.append(
                    f'<rect x="{x0:.1f}" y="{y(base + count):.1f}" width="{slot - 1:.1f}" '
                    f'height="{y(base) - y(base + count):.1f}" fill="{colour}"/>'
                )
        if counts[i] and slot >= 14:
            on_top.append(
                f'<text x="{x0 + slot / 2:.1f}" y="{y(counts[i]) - 4:.1f}" '
                f'text-anchor="middle" {HALO}>{counts[i]}</text>'
            )
    first_extra = bins + (1 if overflow else 0) + 0.5
    for k, (name, count) in enumerate(extra):
        x0 = left + (first_extra + k) * slot + 0.5
        if count:
            body.append(
                f'<rect x="{x0:.1f}" y="{y(count):.1f}" width="{slot - 1:.1f}" '
                f'height="{y(0) - y(count):.1f}" fill="{MUTED}"/>'
            )
        body.append(
            f'<text x="{x0 + slot / 2:.1f}" y="{y(count) - 4:.1f}" text-anchor="middle">'
            f"{count}</text>"
            f'<text x="{x0 + slot / 2:.1f}" y="{bottom + 15:.1f}" text-anchor="middle" '
            f'fill="{MUTED}">{_esc(name)}</text>'
        )
    body.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{MUTED}"/>')
    edge_labels = [f"{_number(e)}" for e in edges]
    edge_xs = [left + i * slot for i in range(len(edges))]
    if overflow:
        edge_labels[-1] = f"≥{_number(edges[-1])}"
        edge_xs[-1] = left + (bins + 0.5) * slot
    body += _x_labels(edge_labels, edge_xs, bottom, slot)
    if unit:
        body.append(
            f'<text x="{left + slot * (bins + (1 if overflow else 0)):.1f}" y="11" '
            f'text-anchor="end" fill="{MUTED}">{_esc(unit)}</text>'
        )
    for k, (value, text) in enumerate(marks):
        if edges[0] <= value <= edges[-1]:
            mx, ty = x_at(value), top - 1 - 12 * (k % 2)
            anchor, dx = ("end", -4) if mx > right - 140 else ("start", 4)
            body.append(
                f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{ty - 9}" y2="{bottom}" stroke="{INK}" '
                f'stroke-width="1.5" stroke-dasharray="5 3"/>'
                f'<text x="{mx + dx:.1f}" y="{ty}" text-anchor="{anchor}" font-weight="600">'
                f"{_esc(text)}</text>"
            )
    return _svg(W, height, body + on_top, label)


def timeline_svg(
    rows: Sequence[tuple[str, Sequence[tuple[float, float, str]]]],
    start: float,
    end: float,
    ticks: Sequence[tuple[float, str]],
    *,
    colours: Mapping[str, str] = STATE_COLOURS,
    label: str = "timeline",
) -> str:
    """One band per row over ``[start, end)``, coloured by state; unknown stretches left pale."""
    label_w, right, row_h, top = 170.0, W - 8.0, 24.0, 6.0
    height = top + row_h * len(rows) + 24

    def x(t: float) -> float:
        return label_w + (right - label_w) * (min(max(t, start), end) - start) / (end - start)

    body = []
    for r, (name, segments) in enumerate(rows):
        y0 = top + r * row_h
        short = name if len(name) <= 26 else name[:25] + "…"
        body.append(
            f'<text x="{label_w - 8}" y="{y0 + row_h / 2 + 4:.1f}" text-anchor="end">'
            f"{_esc(short)}</text>"
            f'<rect x="{label_w}" y="{y0 + 3}" width="{right - label_w}" height="{row_h - 6}" '
            f'fill="#f3f5f8"/>'
        )
        for t0, t1, state in segments:
            if t1 > start and t0 < end and x(t1) > x(t0):
                body.append(
                    f'<rect x="{x(t0):.1f}" y="{y0 + 3}" width="{x(t1) - x(t0):.1f}" '
                    f'height="{row_h - 6}" fill="{colours.get(state, NO_DATA)}"/>'
                )
    bottom = top + row_h * len(rows)
    tick_xs = [x(t) for t, _ in ticks]
    for tx in tick_xs:
        body.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{bottom + 3}" stroke="#ffffff" '
            f'stroke-opacity="0.7"/>'
        )
    room = (right - label_w) / max(len(ticks), 1)
    body += _x_labels([t for _, t in ticks], tick_xs, bottom, room)
    return _svg(W, height, body, label)


def _cycle(items: Sequence[str], n: int) -> list[str]:
    return [items[i % len(items)] for i in range(n)]


# ------------------------------------------------------------------------------------------------
# Time buckets for the per-day charts


def _buckets(start: float, end: float) -> tuple[float, list[float], list[str], str]:
    """Bucket size, bucket starts and labels: hours for two days or less, weeks past two
    months, days otherwise (UTC)."""
    span = end - start
    if span <= 2 * DAY:
        step, fmt, word = HOUR, "%H:00", "hour"
    elif span <= 62 * DAY:
        step, fmt, word = DAY, "%d %b", "day"
    else:
        step, fmt, word = WEEK, "%d %b", "week"
    first = math.floor(start / min(step, DAY)) * min(step, DAY)
    starts = []
    t = first
    while t < end:
        starts.append(t)
        t += step
    labels = [datetime.fromtimestamp(t, UTC).strftime(fmt) for t in starts]
    return step, starts, labels, word


def _per_bucket(times: Iterable[float], starts: Sequence[float], step: float) -> list[int]:
    counts = [0] * len(starts)
    for t in times:
        i = int((t - starts[0]) // step)
        if 0 <= i < len(counts):
            counts[i] += 1
    return counts


def _time_ticks(start: float, end: float) -> list[tuple[float, str]]:
    _, starts, labels, _ = _buckets(start, end)
    return [(t, label) for t, label in zip(starts, labels, strict=True) if t >= start]


# ------------------------------------------------------------------------------------------------
# Sections


def _headline(f: _Facts) -> str:
    """The numbers the meeting opens with; a number that needs talking about is drawn in the
    late colour (or, for messages, the overdue line under it)."""
    late = sum(n.late for n in f.notices)
    acked = [r.acked_at - m.sent_at for m, r in f.receipts if r.acked_at is not None]
    unacked = sum(1 for _, r in f.receipts if r.acked_at is None)
    overdue = sum(1 for m, r in f.receipts if _overdue(m, r, f.now))
    pairs = len({c.parties for c in f.conflicts})
    families = Counter(a.family for a in f.alerts)
    median = _median(acked)
    affected = len({i.party for i in f.incidents})
    cards = [
        ("Operations filed", f.filed, f"{_count(f.writes, 'write')} in all", False),
        ("Conflicts", len(f.conflicts), f"between {_count(pairs, 'party pair')}", False),
        ("Late notices", late, f"of {_count(len(f.notices), 'notice')} ({_share(late, len(f.notices))})", late > 0),
        ("Hotline messages", len(f.messages), f"{unacked} unacknowledged, {overdue} overdue", False),
        ("Median ack time", _duration(median) if median is not None else "–",
         f"{len(acked)} of {_count(len(f.receipts), 'receipt')} acknowledged", False),
        ("Tactical alerts", families["tactical"], "predicted or lost separation", families["tactical"] > 0),
        ("Conformance alerts", families["conformance"], "aircraft outside notified volumes",
         families["conformance"] > 0),
        ("Availability incidents", len(f.incidents), f"{_count(affected, 'party', 'parties')} affected",
         len(f.incidents) > 0),
    ]  # fmt: skip
    items = []
    for name, value, sub, flag in cards:
        sub_class = "sub attention" if name == "Hotline messages" and overdue else "sub"
        items.append(
            f'<div class="card{" attention" if flag else ""}"><div class="value">{_esc(value)}</div>'
            f'<div class="label">{_esc(name)}</div><div class="{sub_class}">{_esc(sub)}</div></div>'
        )
    return f'<section class="headline"><div class="cards">{"".join(items)}</div></section>'


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _section(number: int, title: str, lede: str, body: str) -> str:
    return (
        f'<section><h2><span class="n">{number}</span>{_esc(title)}</h2>'
        f'<p class="lede">{_esc(lede)}</p>{body}</section>'
    )


def _notices_section(f: _Facts) -> str:
    lede = (
        "Every notice a party gave another of an operation in this period: its lead time is "
        "from being told to the operation becoming active."
    )
    if not f.notices:
        return _section(1, "Notices and lead times", lede, _empty("No notices in this period."))
    leads = [n.lead_s / 60 for n in f.notices]
    required = sorted({n.required_s / 60 for n in f.notices})
    edges = _edges(leads, required)
    marks = [(r, f"required {_duration(r * 60)}") for r in required[:3]]
    chart = histogram_svg(
        leads,
        edges,
        flagged=[n.late for n in f.notices],
        marks=marks,
        unit="lead time, minutes",
        label="Notices by lead time",
    )
    legend = _legend([("on time", ACCENT), ("late", LATE)])
    what = "line is the required lead" if len(marks) == 1 else "lines are the required leads"
    figure = _figure(chart, f"Notices by lead time (minutes); the dashed {what} (agreed per pair of parties, or the default).",
                     legend)  # fmt: skip
    given: dict[str, list[Notice]] = defaultdict(list)
    received: dict[str, list[Notice]] = defaultdict(list)
    for n in f.notices:
        given[n.owner].append(n)
        received[n.party_id].append(n)
    rows = []
    for party in sorted(given.keys() | received.keys(), key=f.name):
        g, r = given.get(party, []), received.get(party, [])
        late_given = sum(n.late for n in g)
        median = _median([n.lead_s for n in g])
        rows.append(
            (
                f.name(party),
                len(g),
                late_given,
                _share(late_given, len(g)),
                _duration(median) if median is not None else "–",
                len(r),
                sum(n.late for n in r),
            )
        )
    table = _table(
        [
            "Party",
            "Notices given",
            "Late",
            "Share late",
            "Median lead",
            "Received",
            "Late received",
        ],
        rows,
        numeric=range(1, 7),
    )
    return _section(1, "Notices and lead times", lede, figure + table)


def _edges(values: Sequence[float], marks: Sequence[float], bins: int = 14) -> list[float]:
    """Histogram edges from 0 (or below, for negative values) to past the marks and the bulk of
    the values; the few far beyond go to an overflow bin rather than squash the rest."""
    low = min(0.0, min(values, default=0.0))
    high = max([*(2 * m for m in marks), _percentile(values, 0.9) if values else 1.0, 1.0])
    step = _nice_step((high - low) / bins)
    first = math.floor(low / step) * step
    count = max(1, math.ceil((high - first) / step))
    return [first + i * step for i in range(count + 1)]


def _late_notices_section(f: _Facts) -> str:
    lede = (
        "Notices given with less lead time than the two parties agreed (or the default), "
        "the furthest short first."
    )
    late = sorted(
        (n for n in f.notices if n.late), key=lambda n: (n.lead_s - n.required_s, n.told_at)
    )
    if not late:
        return _section(2, "Late notices", lede, _empty("No late notices in this period."))
    note = ""
    if len(late) > MAX_ROWS:
        note = (
            f'<p class="note">The {MAX_ROWS} that fell furthest short of {len(late)} late notices; '
            "the table in section 1 counts them all.</p>"
        )
        late = late[:MAX_ROWS]
    rows = [
        (
            _at(n.told_at),
            f.name(n.owner),
            f.name(n.party_id),
            _code(n.operation_id),
            _duration(n.lead_s),
            _duration(n.required_s),
            _duration(n.required_s - n.lead_s),
        )
        for n in late
    ]
    table = _table(
        ["Told", "Owner", "Affected party", "Operation", "Lead", "Required", "Short by"],
        rows,
        numeric=(4, 5, 6),
    )
    return _section(2, "Late notices", lede, table + note)


def _conflicts_section(f: _Facts) -> str:
    lede = (
        "Pairs of operations of different parties whose volumes intersect, counted once when a "
        "write first recorded them."
    )
    if not f.conflicts:
        return _section(3, "Conflicts", lede, _empty("No conflicts in this period."))
    step, starts, labels, word = _buckets(f.start, f.end)
    counts = _per_bucket((c.time for c in f.conflicts), starts, step)
    chart = _figure(
        bar_chart_svg(labels, counts, label=f"Conflicts per {word}"), f"Conflicts per {word} (UTC)."
    )
    by_pair: dict[tuple[str, ...], list[_Conflict]] = defaultdict(list)
    for c in f.conflicts:
        by_pair[c.parties].append(c)
    rows = sorted(
        (
            (f.pair(parties), len(cs), _at(cs[0].time), _at(cs[-1].time))
            for parties, cs in by_pair.items()
        ),
        key=lambda row: (-row[1], row[0]),
    )
    table = _table(["Parties", "Conflicts", "First", "Last"], rows, numeric=(1,))
    return _section(3, "Conflicts", lede, chart + table)


def _overdue(m: Message, r: Receipt, now: float) -> bool:
    return r.acked_at is None and m.ack_deadline is not None and m.ack_deadline < now


def _acks_section(f: _Facts) -> str:
    lede = (
        "How long each recipient took to acknowledge the hotline messages sent in this period, "
        "from sending to acknowledgement."
    )
    if not f.receipts:
        return _section(4, "Hotline acknowledgements", lede, _empty("No hotline messages in this period."))  # fmt: skip
    acked = [(m, r) for m, r in f.receipts if r.acked_at is not None]
    times = [r.acked_at - m.sent_at for m, r in acked if r.acked_at is not None]
    late_acks = [
        r.acked_at > m.ack_deadline
        for m, r in acked
        if r.acked_at is not None and m.ack_deadline is not None
    ]
    unacked = [(m, r) for m, r in f.receipts if r.acked_at is None]
    minutes = bool(times) and _percentile(times, 0.9) > 600
    scale, unit = (60.0, "minutes") if minutes else (1.0, "seconds")
    values = [t / scale for t in times]
    flags = [
        r.acked_at is not None and m.ack_deadline is not None and r.acked_at > m.ack_deadline
        for m, r in acked
    ]
    chart = histogram_svg(
        values,
        _edges(values, []),
        flagged=flags,
        extra=[("not acked", len(unacked))],
        unit=f"time to acknowledge, {unit}",
        label="Acknowledgement times",
    )
    legend = _legend(
        [("in time", ACCENT), ("after the deadline", LATE), ("not acknowledged", MUTED)]
    )
    median = _median(times)
    summary = (
        f'<p class="summary">{len(f.messages)} messages, {len(f.receipts)} receipts: '
        f"{len(acked)} acknowledged (median {_esc(_duration(median)) if median is not None else '–'}"
        f", {sum(late_acks)} after the deadline), {len(unacked)} not acknowledged.</p>"
    )
    figure = _figure(chart, f"Time from sending to acknowledgement ({unit}).", legend)
    return _section(
        4,
        "Hotline acknowledgements",
        lede,
        summary + figure + _acks_by_party(f) + _overdue_table(f),
    )


def _acks_by_party(f: _Facts) -> str:
    per: dict[str, list[tuple[Message, Receipt]]] = defaultdict(list)
    for m, r in f.receipts:
        per[r.party_id].append((m, r))
    rows = []
    for party in sorted(per, key=f.name):
        items = per[party]
        times = [r.acked_at - m.sent_at for m, r in items if r.acked_at is not None]
        median = _median(times)
        rows.append(
            (
                f.name(party),
                len(items),
                len(times),
                _duration(median) if median is not None else "–",
                _duration(max(times)) if times else "–",
                len(items) - len(times),
                sum(1 for m, r in items if _overdue(m, r, f.now)),
            )
        )
    return _table(
        ["Recipient", "Receipts", "Acknowledged", "Median", "Slowest", "Not acked", "Overdue"],
        rows,
        numeric=range(1, 7),
    )


def _overdue_table(f: _Facts) -> str:
    """Receipts past their deadline at ``now`` without acknowledgement, and those acknowledged
    after it: by how much, how far they escalated, and what the message said."""
    rows = []
    for m, r in f.receipts:
        if m.ack_deadline is None:
            continue
        if r.acked_at is None and m.ack_deadline < f.now:
            status, by = "not acknowledged", f.now - m.ack_deadline
        elif r.acked_at is not None and r.acked_at > m.ack_deadline:
            status, by = "acknowledged late", r.acked_at - m.ack_deadline
        else:
            continue
        # The page goes to every party at the meeting: the message's words stay with its
        # sender and recipients (the audit log keeps only their digest, too).
        text = f"{Urgency(m.urgency).name.lower()} · message {m.id[:8]}"
        rows.append(
            (
                _at(m.ack_deadline),
                f.name(m.sender),
                f.name(r.party_id),
                status,
                _duration(by),
                r.level,
                _Html(f'<span class="kind">{_esc(m.kind)}</span> {_esc(text)}'),
            )
        )
    if not rows:
        return _empty("Every acknowledgement that was due came in time.")
    note = ""
    if len(rows) > MAX_ROWS:
        note = f'<p class="note">The first {MAX_ROWS} of {len(rows)}.</p>'
        rows = rows[:MAX_ROWS]
    headers = ["Deadline", "From", "To", "Status", "By", "Escalations", "Message"]
    return (
        "<h3>Overdue and late acknowledgements</h3>" + note + _table(headers, rows, numeric=(4, 5))
    )


def _alerts_section(f: _Facts) -> str:
    lede = (
        "Alerts the service raised for the parties: tactical (predicted or lost separation "
        "between aircraft) and conformance (an aircraft outside its notified volumes)."
    )
    if not f.alerts:
        return _section(5, "Tactical and conformance alerts", lede, _empty("No alerts in this period."))  # fmt: skip
    step, starts, labels, word = _buckets(f.start, f.end)
    families = ("tactical", "conformance", "other")
    colours = {"tactical": LATE, "conformance": CONFORMANCE, "other": MUTED}
    present = [fam for fam in families if any(a.family == fam for a in f.alerts)]
    series = [_per_bucket((a.time for a in f.alerts if a.family == fam), starts, step) for fam in present]  # fmt: skip
    chart = bar_chart_svg(
        labels, *series, colours=[colours[p] for p in present], label=f"Alerts per {word}"
    )
    legend = _legend([(fam, colours[fam]) for fam in present])
    by_pair: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    for a in f.alerts:
        by_pair[a.parties][a.family] += 1
    rows = sorted(
        (
            (f.pair(p), c["tactical"], c["conformance"], c["other"], sum(c.values()))
            for p, c in by_pair.items()
        ),
        key=lambda row: (-row[4], row[0]),
    )
    kinds = Counter(a.kind for a in f.alerts)
    kind_line = ", ".join(f"{_esc(k)}: {n}" for k, n in sorted(kinds.items()))
    table = _table(["Parties", "Tactical", "Conformance", "Other", "Total"], rows, range(1, 5))
    return _section(
        5,
        "Tactical and conformance alerts",
        lede,
        _figure(chart, f"Alerts raised per {word} (UTC).", legend)
        + table
        + f'<p class="note">By kind — {kind_line}.</p>',
    )


def _liveness_section(f: _Facts) -> str:
    lede = (
        "Whether each party was reachable: Normal, Unresponsive (no heartbeat for a while or an "
        "acknowledgement overdue) or Down. An incident runs from leaving Normal to coming back."
    )
    current = {lv.party_id: lv for lv in f.liveness}
    parties = sorted(
        set(f.names) | set(current) | {c.party for c in f.changes}, key=lambda p: f.name(p)
    )
    if not parties:
        return _section(6, "Availability", lede, _empty("No parties yet."))
    by_party: dict[str, list[_Change]] = defaultdict(list)
    for c in f.changes:
        by_party[c.party].append(c)
    stop = min(f.end, f.now)
    rows = [(f.name(p), _segments(by_party[p], current.get(p), f.start, stop)) for p in parties]
    chart = timeline_svg(rows, f.start, f.end, _time_ticks(f.start, f.end), label="Availability")
    legend = _legend([(state, colour) for state, colour in STATE_COLOURS.items()])
    figure = _figure(chart, "Availability of each party over the period (UTC).", legend)
    incidents = f.incidents
    state_rows = []
    for p in parties:
        lv = current.get(p)
        mine = [i for i in incidents if i.party == p]
        degraded = sum((i.ended or stop) - max(i.began, f.start) for i in mine)
        state_rows.append(
            (
                f.name(p),
                _Html(_badge(lv.availability)) if lv else _Html(_badge("Unknown")),
                _at(lv.changed_at) if lv else "–",
                _at(lv.last_heartbeat) if lv and lv.last_heartbeat is not None else "never",
                len(by_party[p]),
                len(mine),
                _duration(degraded) if mine else "–",
            )
        )
    states = _table(
        ["Party", "Now", "Since", "Last heartbeat", "Changes", "Incidents", "Time degraded"],
        state_rows,
        numeric=(4, 5, 6),
    )
    if incidents:
        incident_rows = [
            (
                f.name(i.party),
                "before the period" if i.carried else _at(i.began),
                _at(i.ended) if i.ended is not None else _still(current.get(i.party), f.end),
                ("≥ " if i.carried else "") + _duration((i.ended or stop) - i.began),
                _Html(_badge(i.worst)),
            )
            for i in incidents
        ]
        listing = "<h3>Incidents</h3>" + _table(
            ["Party", "Began", "Ended", "Lasted", "Worst"], incident_rows, numeric=(3,)
        )
    else:
        listing = _empty("No availability incidents in this period.")
    return _section(6, "Availability", lede, figure + states + listing)


def _still(now: Liveness | None, end: float) -> str:
    """How an incident not over by the end of the period stands now."""
    if now is not None and now.availability not in DEGRADED and now.changed_at >= end:
        return "after the period"
    return "ongoing"


def _segments(
    changes: Sequence[_Change], now: Liveness | None, start: float, stop: float
) -> list[tuple[float, float, str]]:
    """The states a party was in between ``start`` and ``stop``, from its changes in the period
    (and, with none, from its current liveness when that predates the period)."""
    if not changes:
        if now is None or now.changed_at >= stop:
            return []
        return [(max(start, now.changed_at), stop, now.availability)]
    out = [(start, changes[0].time, changes[0].previous)]
    for c, following in zip(changes, [*changes[1:], None], strict=True):
        out.append((c.time, following.time if following else stop, c.availability))
    return out


def _badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, NO_DATA) if state != "Unknown" else MUTED
    return f'<span class="badge" style="border-color:{colour};color:{colour}">{_esc(state)}</span>'


# ------------------------------------------------------------------------------------------------
# The page


def _default_title(start: float, end: float) -> str:
    return f"Coordination review, {_day(start)} to {_day(end)}"


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%d %b %Y")


def _page(f: _Facts, title: str) -> str:
    names = ", ".join(sorted(f.names.values())) or "none registered"
    header = (
        f"<header><h1>{_esc(title)}</h1>"
        f'<p class="period">Period <b>{_esc(_when(f.start))}</b> to <b>{_esc(_when(f.end))}</b> '
        f"(end excluded) · made {_esc(_when(f.now))}</p>"
        f'<p class="parties">Parties: {_esc(names)}</p></header>'
    )
    sections = [
        _headline(f),
        _notices_section(f),
        _late_notices_section(f),
        _conflicts_section(f),
        _acks_section(f),
        _alerts_section(f),
        _liveness_section(f),
    ]
    footer = (
        "<footer>All times UTC. Read from the deconfliction store in one transaction; "
        "how each number is worked out is described in docs/report.md.</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{header}{''.join(sections)}{footer}</main></body></html>\n"
    )


_CSS = f"""
:root {{ color-scheme: light; }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; background: #eef1f5; color: {INK};
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; -webkit-print-color-adjust: exact; print-color-adjust: exact; }}
main {{ max-width: 960px; margin: 24px auto; background: #fff; padding: 32px 40px;
  box-shadow: 0 1px 3px rgba(0,0,0,.08); }}
header {{ border-bottom: 3px solid {ACCENT}; padding-bottom: 12px; margin-bottom: 20px; }}
h1 {{ font-size: 24px; margin: 0 0 6px; letter-spacing: -.01em; }}
header p {{ margin: 2px 0; color: {MUTED}; }}
header b {{ color: {INK}; font-weight: 600; }}
h2 {{ font-size: 18px; margin: 30px 0 4px; padding-top: 14px; border-top: 1px solid {GRID};
  break-after: avoid; }}
h2 .n {{ display: inline-block; min-width: 1.6em; color: {ACCENT}; }}
h3 {{ font-size: 14px; margin: 18px 0 6px; break-after: avoid; }}
.lede {{ color: {MUTED}; margin: 0 0 12px; }}
.cards {{ display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; }}
.card {{ background: #f5f7fa; border-left: 4px solid {ACCENT}; padding: 10px 12px;
  break-inside: avoid; }}
.card.attention {{ border-left-color: {LATE}; }}
.card .value {{ font-size: 26px; font-weight: 650; line-height: 1.15;
  font-variant-numeric: tabular-nums; }}
.card.attention .value {{ color: {LATE}; }}
.card .label {{ font-weight: 600; }}
.card .sub {{ color: {MUTED}; font-size: 12px; }}
.card .sub.attention {{ color: {LATE}; font-weight: 600; }}
figure {{ margin: 8px 0 14px; break-inside: avoid; }}
figure svg {{ width: 100%; height: auto; display: block; }}
figcaption {{ color: {MUTED}; font-size: 12px; margin-top: 2px; }}
.legend {{ display: flex; gap: 16px; font-size: 12px; color: {MUTED}; margin-top: 4px; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 5px;
  vertical-align: -1px; }}
table {{ border-collapse: collapse; width: 100%; margin: 8px 0 6px; font-size: 13px; }}
th, td {{ text-align: left; padding: 4px 8px; border-bottom: 1px solid {GRID};
  vertical-align: top; }}
th {{ font-weight: 600; color: {MUTED}; font-size: 12px; border-bottom: 1.5px solid {MUTED}; }}
tbody tr:nth-child(even) {{ background: #fafbfc; }}
tr {{ break-inside: avoid; }}
time {{ white-space: nowrap; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
code {{ font: 12px ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  overflow-wrap: anywhere; }}
.badge {{ display: inline-block; padding: 0 6px; border: 1.5px solid; border-radius: 3px;
  font-size: 12px; font-weight: 600; }}
.empty {{ color: {MUTED}; font-style: italic; background: #f7f8fa; padding: 10px 12px;
  margin: 6px 0; }}
.kind {{ color: {MUTED}; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; }}
.summary {{ margin: 0 0 4px; }}
.note {{ color: {MUTED}; font-size: 12px; }}
footer {{ margin-top: 32px; padding-top: 10px; border-top: 1px solid {GRID}; color: {MUTED};
  font-size: 12px; }}
@page {{ size: A4; margin: 14mm 12mm; }}
@media print {{
  body {{ background: #fff; font-size: 10pt; }}
  main {{ margin: 0; padding: 0; max-width: none; box-shadow: none; }}
  h2 {{ margin-top: 18px; }}
  table {{ font-size: 9pt; }}
}}
@media (max-width: 700px) {{ .cards {{ grid-template-columns: repeat(2, 1fr); }}
  main {{ padding: 16px; }} }}
"""
