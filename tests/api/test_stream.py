"""The live event stream (SSE) on a real server: resume after a disconnect, nothing lost or
repeated; webhooks and the stream both fed by a second process's writes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from deconfliction.api.app import create_app
from deconfliction.config import Settings
from deconfliction.core.hotline import MessageKind
from deconfliction.runtime import Runtime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, Runtime, dict[str, str], dict[str, str]]]:
    runtime = Runtime.open(Settings(db=str(tmp_path / "live.db"), sqlite_synchronous="OFF"))
    ids = {n: runtime.strategic.add_party(n).id for n in ("blue", "red")}
    tokens = {n: runtime.tokens.issue(i) for n, i in ids.items()}
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", runtime, ids, tokens
    server.should_exit = True
    thread.join(10)
    runtime.close()


def read_events(
    url: str, token: str, count: int, last_id: int | None = None, timeout: float = 10.0
) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    got: list[dict] = []
    with httpx.stream("GET", f"{url}/v1/events/stream", headers=headers, timeout=timeout) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event: dict = {}
        for line in r.iter_lines():
            if line.startswith("id: "):
                event["id"] = int(line[4:])
            elif line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and "id" in event:
                got.append(event)
                event = {}
                if len(got) == count:
                    break
    return got


def test_resume_after_a_disconnect_loses_and_repeats_nothing(live) -> None:
    url, runtime, ids, tokens = live
    send = runtime.hotline.send
    for i in range(5):
        send(ids["blue"], [ids["red"]], MessageKind.TEXT, f"before {i}")
    first = read_events(url, tokens["red"], 3)
    assert [e["data"]["payload"]["message"]["text"] for e in first] == [
        "before 0",
        "before 1",
        "before 2",
    ]
    for i in range(3):  # written while red is away
        send(ids["blue"], [ids["red"]], MessageKind.TEXT, f"while away {i}")
    rest = read_events(url, tokens["red"], 5, last_id=first[-1]["id"])
    ids_seen = [e["id"] for e in first + rest]
    assert ids_seen == sorted(set(ids_seen))
    assert [e["id"] for e in first + rest] == [e.id for e in runtime.strategic.events(ids["red"])]


def test_an_event_committed_while_connected_arrives_promptly(live) -> None:
    url, runtime, ids, tokens = live
    result: list[dict] = []
    reader = threading.Thread(target=lambda: result.extend(read_events(url, tokens["red"], 1)))
    reader.start()
    time.sleep(0.3)
    sent = time.monotonic()
    runtime.hotline.send(ids["blue"], [ids["red"]], MessageKind.WARNING, "now")
    reader.join(10)
    assert result and result[0]["event"] == "message"
    assert time.monotonic() - sent < 5  # generous; the latency itself is measured in bench/


def test_the_stream_needs_a_token_and_a_valid_last_event_id(live) -> None:
    url, _, _, tokens = live
    assert httpx.get(f"{url}/v1/events/stream").status_code == 401
    bad = httpx.get(
        f"{url}/v1/events/stream",
        headers={"Authorization": f"Bearer {tokens['red']}", "Last-Event-ID": "x"},
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_event_id"
