"""Every call of both legs in one place: admission, the live calls, their one teardown.

A call on either leg (SIP+RTP, :mod:`bridge.calls.sip`; Twilio Media Streams,
:mod:`bridge.calls.streams`) goes through the same steps here:

1. :meth:`CallRegistry.refusal`: the admission rules both legs share (draining,
   ``access.max_calls``, ``access.max_calls_per_caller``, a call id already live);
   each leg adds its own (SIP: allowlist, rate, digest; Media Streams: the account)
   and answers a refusal in its own protocol (503 with Retry-After; close code 1013).
2. :meth:`CallRegistry.open`: the call is live, counted, and its call record opened.
3. :meth:`CallRegistry.answered`: the record gets its answer time, the recording starts.
4. :meth:`CallRegistry.end`: idempotent; the call leaves the live set at once, and
   :meth:`CallRegistry._teardown` closes the agent, ends the record, closes the leg's
   media and stops the recording, in that order, in a task.

The end reasons a leg gives are listed in :data:`bridge.records.calls.END_REASONS`;
``agent_error`` is the agent failing (its frame source raised), kept apart from the
network's ``rtp_timeout``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator

from .. import memory
from ..config import AccessSettings
from ..observability.metrics import Metrics
from ..records.calls import CallRecords
from .host import Leg

log = logging.getLogger("bridge.calls")

#: Finished agents kept for inspection (:attr:`CallRegistry.finished`).
FINISHED_KEPT = 4


class CallRegistry:
    """The live calls of one server, by call id (SIP Call-ID or Twilio Call SID).

    Args:
        access: the caps (``max_calls``, ``max_calls_per_caller``).
        records: where call records and recordings go.
        metrics: ``bridge_active_calls`` is kept here.

    Attributes:
        finished: the last :data:`FINISHED_KEPT` calls' agents after they ended (their
            audio released), for inspection by tests and ``bridge dial``; few, so that
            what a finished call keeps (history, transcript, timings) is not held long.
        end_reasons: ``(call id, reason)`` of the last 100 calls that ended.
        draining: new calls are refused (``bridge serve`` got SIGTERM).
    """

    def __init__(self, access: AccessSettings, records: CallRecords, metrics: Metrics) -> None:
        self.access = access
        self.records = records
        self.metrics = metrics
        self.live: dict[str, Leg] = {}
        self.finished: collections.deque = collections.deque(maxlen=FINISHED_KEPT)
        self.end_reasons: collections.deque = collections.deque(maxlen=100)
        self.draining = False
        self._tasks: set[asyncio.Task] = set()
        self._all_ended = asyncio.Event()
        self._all_ended.set()

    def __len__(self) -> int:
        return len(self.live)

    def __iter__(self) -> Iterator[Leg]:
        return iter(list(self.live.values()))

    def of_kind(self, kind: str) -> dict[str, Leg]:
        """The live calls of one leg kind (``sip`` or ``mediastreams``), by call id."""
        return {call_id: leg for call_id, leg in self.live.items() if leg.kind == kind}

    def caller_calls(self, caller: str) -> int:
        """Live calls from ``caller`` on both legs."""
        return sum(1 for leg in self.live.values() if leg.caller == caller)

    def refusal(self, call_id: str, caller: str) -> str | None:
        """Why a new call may not start, by the rules both legs share, or ``None``:
        ``draining``, ``duplicate_call_id``, ``at_capacity``, ``caller_at_capacity``."""
        if self.draining:
            return "draining"
        if call_id in self.live:
            return "duplicate_call_id"
        if len(self.live) >= self.access.max_calls:
            return "at_capacity"
        if caller and self.caller_calls(caller) >= self.access.max_calls_per_caller:
            return "caller_at_capacity"
        return None

    def open(self, leg: Leg, **record) -> None:
        """``leg`` is a call now: live, counted, its record opened with ``record``'s
        fields (:meth:`bridge.records.calls.CallRecords.started`) and its agent's turns
        attached to it."""
        self.live[leg.call_id] = leg
        self._all_ended.clear()
        self.metrics.active_calls.inc()
        self.records.started(leg.call_id, leg.kind, **record)
        if leg.conversation is not None:
            self.records.attach(leg.call_id, leg.conversation)

    def answered(self, leg: Leg) -> None:
        """The call was answered: its answer time, and its recording starts."""
        self.records.answered(leg.call_id)
        self.records.start_recording(leg.call_id, leg)

    def end(self, call_id: str, reason: str) -> bool:
        """End a live call (idempotent): it leaves the live set now, and its teardown
        runs in a task (:meth:`wait_torn_down`). Returns whether it was live."""
        leg = self.live.pop(call_id, None)
        if leg is None:
            return False
        leg.mark_ended()
        self.end_reasons.append((call_id, reason))
        self.metrics.active_calls.dec()
        if not self.live:
            self._all_ended.set()
        task = asyncio.get_running_loop().create_task(self._teardown(leg, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _teardown(self, leg: Leg, reason: str) -> None:
        """The one teardown of a call on either leg. Never raises: what fails is logged
        and the rest still runs, so no record or recording is lost to another failure."""
        duration = time.monotonic() - leg.started
        conversation = leg.conversation
        try:
            if conversation is not None:
                try:
                    await conversation.close()
                except Exception:  # noqa: BLE001 - the record and media are closed all the same
                    log.exception("call %s: closing the conversation failed", leg.call_id)
                self.finished.append(conversation)
                for role, text in conversation.transcript():
                    log.debug("call %s transcript %s: %s", leg.call_id, role, text)
            self.records.ended(leg.call_id, reason, conversation)
            try:
                await leg.close_media()
            except Exception:  # noqa: BLE001
                log.exception("call %s: closing its media failed", leg.call_id)
            await self.records.stop_recording(leg)
        finally:
            leg.release_agent()  # no reference cycle keeps the call's memory until a GC pass
            await memory.release_after_call(len(self.live))
            # Logged last: the call's resources are all released when this line appears.
            log.info("call %s: ended (%s) after %.1f s", leg.call_id, reason, duration)

    async def wait_all_ended(self, timeout: float | None = None) -> bool:
        """Wait until no call is live; ``False`` if ``timeout`` seconds passed first."""
        try:
            await asyncio.wait_for(self._all_ended.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def wait_torn_down(self) -> None:
        """Wait for the teardowns in progress."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
