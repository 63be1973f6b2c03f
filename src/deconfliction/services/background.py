"""The periodic duties of a service process: deliver webhooks, escalate, watch liveness, seal.

Every process runs them (``serve`` starts them with each worker; ``deconfliction worker`` runs
them alone). They are safe to run side by side: webhook cursors are leased, escalation and
liveness steps are conditional changes in serializable transactions, and a seal is only added
to an unsealed head. Stopping any one process therefore stops nothing a party depends on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deconfliction.services.audit import AuditLog
from deconfliction.services.delivery import WebhookDelivery
from deconfliction.services.hotline import Hotline
from deconfliction.services.tactical import TacticalMonitor

log = logging.getLogger("deconfliction.background")


@dataclass
class Duty:
    name: str
    every_s: float
    run: Callable[[], object]
    next_at: float = 0.0


@dataclass
class Duties:
    hotline: Hotline
    audit: AuditLog
    webhooks: WebhookDelivery
    webhook_every_s: float = 0.02
    webhook_settle_every_s: float = 0.05
    escalate_every_s: float = 1.0
    liveness_every_s: float = 5.0
    seal_every_s: float = 60.0
    tactical: TacticalMonitor | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def duties(self) -> list[Duty]:
        return [
            Duty("webhooks", self.webhook_every_s, self.webhooks.deliver_once),
            Duty("webhook-settle", self.webhook_settle_every_s, self.webhooks.flush),
            Duty("escalation", self.escalate_every_s, self.hotline.escalate_due),
            Duty("liveness", self.liveness_every_s, self.hotline.check_liveness),
            Duty("seal", self.seal_every_s, self.audit.seal_now),
            *(
                [Duty("tactical", self.tactical.settings.cycle_s, self.tactical.run_once)]
                if self.tactical
                else []
            ),
        ]

    def run_pending(self, duties: list[Duty]) -> float:
        """Run what is due; return how long to sleep before the next duty is due."""
        now = time.monotonic()
        for duty in duties:
            if now >= duty.next_at:
                try:
                    duty.run()
                except Exception:  # one failing duty must not stop the others
                    log.exception("background duty %s failed", duty.name)
                duty.next_at = time.monotonic() + duty.every_s
        return max(0.0, min(d.next_at for d in duties) - time.monotonic())

    def start(self) -> None:
        if self._threads:
            return
        duties = self.duties()
        # Webhooks wait on other parties' servers: they get a thread of their own, so a slow
        # receiver can delay only its own deliveries, never the tactical cycle or escalation.
        # Their cursors are written in a third (WebhookDelivery.settle_later), so that a pass
        # never waits for that write before the next one.
        own = ("webhooks", "webhook-settle")
        groups = {
            **{name: [d for d in duties if d.name == name] for name in own},
            "duties": [d for d in duties if d.name not in own],
        }
        for name, group in groups.items():

            def loop(group: list[Duty] = group) -> None:
                while not self._stop.is_set():
                    self._stop.wait(self.run_pending(group))

            thread = threading.Thread(target=loop, name=f"deconfliction-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if self.tactical is not None and self.tactical.holding:
            try:
                self.tactical.release()  # hand the cycle over at once rather than after the lease
            except Exception:
                log.exception("could not release the tactical lease")
        try:
            self.webhooks.release()  # likewise for the webhook cursors this process feeds
        except Exception:  # the store may be gone already; the leases then simply run out
            log.warning("could not release webhook leases on stop", exc_info=True)
        self.webhooks.close()
