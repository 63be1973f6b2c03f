"""Helpers shared by the benchmarks: timing, percentiles, a results table and the JSON record.

Benchmarks print a table for people and write JSON for machines (and for comparing runs). They
never assert on time: a number that misses its target is shown as such, not raised.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def now() -> float:
    return time.perf_counter()


def ms(seconds: float) -> float:
    return seconds * 1e3


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Median, p95, p99, mean and max of samples given in seconds, in milliseconds."""
    if not samples_s:
        return {"n": 0}
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        "n": int(a.size),
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def environment() -> dict[str, Any]:
    """What the numbers were measured on: enough to know whether two runs compare."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
    except OSError:
        rev, dirty = "", False
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": rev + ("-dirty" if dirty else ""),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


@dataclass
class Row:
    """One line of the results table."""

    section: str
    metric: str
    value: str
    target: str = ""
    ok: bool | None = None
    note: str = ""


@dataclass
class Report:
    """Rows for the table plus a free-form JSON record."""

    title: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        section: str,
        metric: str,
        value: str,
        target: str = "",
        ok: bool | None = None,
        note: str = "",
    ) -> None:
        self.rows.append(Row(section, metric, value, target, ok, note))

    def print(self) -> None:
        print_table(self.title, self.rows)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "title": self.title,
            "environment": environment(),
            "results": self.data,
            "table": [r.__dict__ for r in self.rows],
        }
        path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")

    def publish(self, path: Path) -> None:
        """The table on the terminal, the record in ``path``, and where it went."""
        self.print()
        self.write_json(path)
        print(f"wrote {path}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _status(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISS")


def print_table(title: str, rows: Iterable[Row]) -> None:
    rows = list(rows)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text is enough
        _print_plain(title, rows)
        return
    table = Table(title=title, show_lines=False, title_justify="left")
    for name, justify in (
        ("section", "left"),
        ("metric", "left"),
        ("value", "right"),
        ("target", "right"),
        ("", "center"),
        ("note", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    last = None
    for r in rows:
        status = _status(r.ok)
        styled = {"ok": "[green]ok[/green]", "MISS": "[bold red]MISS[/bold red]"}.get(status, "")
        table.add_row(
            r.section if r.section != last else "", r.metric, r.value, r.target, styled, r.note
        )
        last = r.section
    Console(width=max(120, _terminal_width())).print(table)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 160


def _print_plain(title: str, rows: list[Row]) -> None:
    cols = [
        [r.section for r in rows],
        [r.metric for r in rows],
        [r.value for r in rows],
        [r.target for r in rows],
        [_status(r.ok) for r in rows],
        [r.note for r in rows],
    ]
    heads = ["section", "metric", "value", "target", "", "note"]
    widths = [max([len(h)] + [len(c) for c in col]) for h, col in zip(heads, cols, strict=True)]
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    for i in range(len(rows)):
        print("  ".join(col[i].ljust(w) for col, w in zip(cols, widths, strict=True)))


def fmt_ms(x: float) -> str:
    return f"{x:.3f} ms" if x < 10 else f"{x:.1f} ms"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def fmt_s(x: float) -> str:
    return f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min"
