"""The service's background duties, as a process runs them: webhooks are delivered by one
thread and their cursors recorded by another, so a delivery pass never waits for that write."""

from __future__ import annotations

import json
import time
from pathlib import Path

from deconfliction.config import Settings
from deconfliction.core.hotline import MessageKind
from deconfliction.runtime import Runtime


def test_the_service_delivers_webhooks_and_records_their_cursors_in_the_background(
    tmp_path: Path,
) -> None:
    runtime = Runtime.open(Settings(db=str(tmp_path / "duties.db")))
    got: list[int] = []

    def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        got.extend(e["id"] for e in json.loads(body)["events"])
        return 200

    duties = runtime.duties(post)
    assert duties.webhooks.settle_later  # the service's passes leave the cursor write to a duty
    blue = runtime.strategic.add_party("blue").id
    red = runtime.strategic.add_party("red").id
    runtime.hotline.configure(red, webhook_url="http://receiver.example/hook")
    duties.start()
    try:
        names = {t.name for t in duties._threads}
        assert {"deconfliction-webhooks", "deconfliction-webhook-settle"} <= names
        runtime.hotline.send(blue, [red], MessageKind.TEXT, "hello")
        event = runtime.strategic.events(red)[-1].id

        def cursor() -> int:
            found = runtime.store.transact(lambda tx: tx.get_webhook_cursor(red), write=False)
            return found.delivered if found else 0

        deadline = time.monotonic() + 10
        while (event not in got or cursor() < event) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [event]  # delivered once
        assert cursor() == event  # and recorded, by the settle duty
    finally:
        duties.stop()
        runtime.close()
