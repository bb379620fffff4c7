"""The drift trigger: runs in the triggerer, reads progress records and fires when the plan drifts.

It lives in the installed package (saturn_airflow.operators.triggers) so the triggerer process can
import it. Each look is saturn_airflow.tasks.drift.drift_step (plain file reads, run in a thread).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Optional

from airflow.triggers.base import BaseTrigger, TriggerEvent

from saturn_airflow import settings


class DriftTrigger(BaseTrigger):
    """Fire once: kind=drift (re-plan), kind=done (every job finished) or kind=superseded."""

    def __init__(self, plan_id: str, store_url: str, t0: float, poll_s: Optional[float] = None,
                 threshold: Optional[float] = None, min_s: Optional[float] = None, max_replans: Optional[int] = None):
        super().__init__()
        self.plan_id, self.store_url, self.t0 = plan_id, store_url, float(t0)
        self.poll_s = float(settings.drift_poll_s() if poll_s is None else poll_s)
        self.threshold, self.min_s = threshold, min_s
        self.max_replans = None if max_replans is None else int(max_replans)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("saturn_airflow.operators.triggers.DriftTrigger",
                {"plan_id": self.plan_id, "store_url": self.store_url, "t0": self.t0, "poll_s": self.poll_s,
                 "threshold": self.threshold, "min_s": self.min_s, "max_replans": self.max_replans})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from saturn_airflow.tasks.drift import drift_step, new_drift_watch

        self.log.info("watching plan %s every %.0f s (t0=%.0f)", self.plan_id, self.poll_s, self.t0)
        looks = 0
        watch = new_drift_watch()  # consecutive late looks; a restarted triggerer starts counting again
        while True:
            looks += 1
            try:
                event = await asyncio.to_thread(drift_step, self.store_url, self.plan_id, self.t0,
                                                threshold=self.threshold, min_s=self.min_s,
                                                max_replans=self.max_replans, watch=watch)
            except Exception as e:  # a half-written store must not kill the watch; try again next time
                self.log.warning("drift look failed: %s", e)
                await asyncio.sleep(self.poll_s)
                continue
            if event is not None:
                self.log.info("drift watch ends: %s", event["message"])
                yield TriggerEvent(event)
                return
            last = watch.last
            if watch.streak and last is not None:
                self.log.info("plan %s late on %d consecutive look(s) (look %d): %s", self.plan_id, watch.streak,
                              looks, last.reason)
            elif last is not None and (watch.changed or looks % 12 == 1):
                # why it does not re-plan (on time, warming up, late with no choice), when that changes
                self.log.info("plan %s look %d: %s", self.plan_id, looks, last.reason)
            await asyncio.sleep(self.poll_s)
