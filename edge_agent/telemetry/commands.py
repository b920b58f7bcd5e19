"""The ``desired`` topic: what the fleet wants this device to run.

Messages arrive on the MQTT network thread, which must never block, so ``CommandHandler.submit``
only queues the bytes; a worker thread decodes them. Decoding is strict (``decode_desired``): a
payload that is not JSON, not a ``DesiredState``, or of another kind is *rejected*: counted and
reported as a ``command_rejected`` error event, and the agent carries on serving. A valid state
with a revision the device has already seen is *ignored* (the broker redelivers the retained
state on every reconnect). A newer one is handed to ``on_desired`` (the OTA updater).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from models.mqtt_contract import ContractError, DesiredState, decode_desired

log = logging.getLogger("edgefleet.agent.telemetry")

QUEUE_SIZE = 16
PREVIEW_BYTES = 120


@dataclass(frozen=True)
class Accepted:
    desired: DesiredState


@dataclass(frozen=True)
class Ignored:
    reason: str


@dataclass(frozen=True)
class Rejected:
    reason: str


CommandOutcome = Accepted | Ignored | Rejected


def interpret_desired(payload: bytes, *, last_revision: int | None) -> CommandOutcome:
    """What to do with one message on the ``desired`` topic. Pure."""
    if not payload:
        return Ignored("the retained desired state was cleared")
    try:
        desired = decode_desired(payload)
    except ContractError as exc:
        return Rejected(str(exc))
    if last_revision is not None and desired.revision <= last_revision:
        return Ignored(f"revision {desired.revision} is not newer than {last_revision}")
    return Accepted(desired)


def preview(payload: bytes) -> str:
    """A short, printable excerpt of a payload for an event (never the whole of a large one)."""
    text = payload[:PREVIEW_BYTES].decode("utf-8", errors="replace")
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned + ("…" if len(payload) > PREVIEW_BYTES else "")


RejectHook = Callable[[str, str, bytes], None]
"""Told about a rejected message: ``(topic, reason, payload)``."""


class CommandHandler:
    """Decodes ``desired`` messages off the network thread and hands valid, newer ones on."""

    def __init__(
        self,
        *,
        on_desired: Callable[[DesiredState], None] | None,
        on_rejected: RejectHook,
        desired_topic: str,
    ) -> None:
        self.desired_topic = desired_topic
        self._on_desired = on_desired
        self._on_rejected = on_rejected
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_revision: int | None = None
        self.accepted = 0
        self.ignored = 0
        self.rejected = 0

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue a message (called on the network thread: never blocks)."""
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            with self._lock:
                self.rejected += 1
            log.warning("command queue full: a message on %s was dropped unread", topic)

    def handle(self, topic: str, payload: bytes) -> CommandOutcome:
        """Decode and dispatch one message (the worker calls this; tests may too)."""
        if topic != self.desired_topic:
            outcome: CommandOutcome = Rejected(
                f"unexpected topic {topic!r}: only {self.desired_topic} is read"
            )
        else:
            outcome = interpret_desired(payload, last_revision=self.last_revision)
        if isinstance(outcome, Rejected):
            with self._lock:
                self.rejected += 1
            log.warning("rejected a command on %s: %s", topic, outcome.reason)
            self._on_rejected(topic, outcome.reason, payload)
        elif isinstance(outcome, Ignored):
            self.ignored += 1
            log.debug("ignored a command on %s: %s", topic, outcome.reason)
        else:
            self.accepted += 1
            self.last_revision = outcome.desired.revision
            log.info("desired state revision %d received", outcome.desired.revision)
            if self._on_desired is not None:
                self._on_desired(outcome.desired)
        return outcome

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="telemetry-commands", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.handle(*item)
            except Exception:  # a failing callback must not end command handling
                log.exception("handling a command failed; the agent keeps running")
