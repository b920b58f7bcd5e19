"""Telemetry for one device: metrics, drift windows, status and events, spooled and sent over MQTT.

``Telemetry`` wires the parts together and owns one reporter thread:

- ``observer`` goes to the inference engine (metrics, drift counting and opt-in capture);
- every ``metrics_interval_s`` the reporter spools a ``MetricsPayload`` (and, once the link is up
  again after drops, the drop report: in the payload's ``spool_dropped`` and as an event);
  between two reports it samples the requests in flight per model for ``queue_depth_max``;
- drift windows are spooled as the drift worker closes them;
- the link publishes the spool, the birth on each connection, and feeds ``desired`` messages to
  the command handler.

``stop`` closes the open windows, spools the last metrics and an offline status, and gives the
link a few seconds to deliver them before disconnecting cleanly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge_agent.telemetry.capture import CaptureSettings, RawCapture, TokenBucket
from edge_agent.telemetry.commands import CommandHandler, preview
from edge_agent.telemetry.drift import ClosedWindow, DriftMonitor
from edge_agent.telemetry.metrics import MetricsCollector, ModelKey
from edge_agent.telemetry.mqtt_link import LinkCallbacks, LinkSettings, MqttLink
from edge_agent.telemetry.observer import ObserverFanOut
from edge_agent.telemetry.outbox import Outbox, drop_event
from edge_agent.telemetry.spool import DropReport, Spool
from edge_agent.telemetry.status import DeviceIdentity, StatusBuilder
from edge_agent.telemetry.system import SystemSampler
from models.mqtt_contract import (
    Channel,
    DesiredState,
    DriftPayload,
    EventLevel,
    EventPayload,
    MetricsPayload,
    ModelState,
    SlotState,
    encode,
    topic,
)
from models.stats import ReferenceStats

log = logging.getLogger("edgefleet.agent.telemetry")

QUEUE_SAMPLE_S = 0.05


@dataclass(frozen=True)
class TelemetrySettings:
    identity: DeviceIdentity
    link: LinkSettings | None
    """None: spool only (nothing is published); for tools and tests."""
    metrics_interval_s: float = 10.0
    drift_window: int = 1000
    drift_window_s: float = 300.0
    capture: CaptureSettings | None = None
    stop_flush_s: float = 5.0

    def __post_init__(self) -> None:
        if self.metrics_interval_s <= 0:
            raise ValueError(f"metrics_interval_s must be positive, got {self.metrics_interval_s}")


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class Telemetry:
    """Everything a device reports, from counting requests to the broker's PUBACK."""

    def __init__(
        self,
        settings: TelemetrySettings,
        spool: Spool,
        *,
        models: Callable[[], list[ModelState]],
        in_flight: Callable[[], Mapping[ModelKey, int]] = dict,
        on_desired: Callable[[DesiredState], None] | None = None,
        ota: Callable[[], SlotState] | None = None,
        system: SystemSampler | None = None,
    ) -> None:
        identity = settings.identity
        self.settings = settings
        self.spool = spool
        self.outbox = Outbox(spool, fleet=identity.fleet, device_id=identity.device_id)
        self.status = StatusBuilder(identity, models=models, ota=ota)
        self.system = system or SystemSampler()
        self.metrics = MetricsCollector()
        self.drift = DriftMonitor(
            window_samples=settings.drift_window, window_s=settings.drift_window_s, on_window=self._send_drift
        )
        self.capture = RawCapture(settings.capture) if settings.capture is not None else None
        self.observer = ObserverFanOut([self.metrics, self.drift])
        if self.capture is not None:
            self.observer.add(self.capture)
        self.commands = CommandHandler(
            on_desired=on_desired,
            on_rejected=self._command_rejected,
            desired_topic=topic(identity.fleet, identity.device_id, Channel.DESIRED),
        )
        self.link = (
            MqttLink(
                settings.link,
                spool,
                LinkCallbacks(
                    will=self._will,
                    on_connected=self._birth,
                    on_message=self.commands.submit,
                    subscriptions=(self.commands.desired_topic,),
                ),
            )
            if settings.link is not None
            else None
        )
        self._in_flight = in_flight
        self._rejection_events = TokenBucket(rate_per_s=1.0, burst=5, now=time.monotonic())
        self._stop = threading.Event()
        self._reporter: threading.Thread | None = None
        self._window_start = time.time()
        self._window_mono = time.monotonic()

    # --- models ---------------------------------------------------------------------------------

    def register_model(self, name: str, version: str, reference: ReferenceStats | None) -> None:
        """Count drift for a loaded version (when its bundle carries reference statistics)."""
        if reference is None:
            log.info("%s %s has no reference statistics: no drift windows for it", name, version)
            return
        self.drift.register(name, version, reference)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._window_start, self._window_mono = time.time(), time.monotonic()
        self.drift.start()
        self.commands.start()
        if self.capture is not None:
            self.capture.start()
        if self.link is not None:
            self.link.start()
        self._reporter = threading.Thread(target=self._report_loop, name="telemetry-reporter", daemon=True)
        self._reporter.start()

    def stop(self) -> None:
        """Close open windows, spool the last metrics and an offline status, deliver, disconnect."""
        self._stop.set()
        if self._reporter is not None:
            self._reporter.join()
            self._reporter = None
        self.drift.stop(flush=True)
        self.send_metrics()
        self.commands.stop()
        if self.capture is not None:
            self.capture.stop()
        self.outbox.send(Channel.STATUS, lambda seq: self.status.status(seq, online=False))
        if self.link is not None:
            if not self.link.flush(self.settings.stop_flush_s):
                log.warning(
                    "%d message(s) stay spooled (broker unreachable); they go out when the agent is back",
                    self.spool.count,
                )
            self.link.stop()

    # --- what is sent ---------------------------------------------------------------------------

    def publish_status(self) -> int:
        """Spool a fresh status (after a model was loaded or unloaded); returns its seq.

        It names the will of the connection that carries it, as the birth does: the fleet judges
        a Last Will by the will seq of the newest status, and a status without one would leave
        the device online forever once it dies.
        """
        with self.spool.batch() as batch:
            will_seq = batch.connection_will_seq()
            return self.outbox.add(
                batch, Channel.STATUS, lambda seq: self.status.status(seq, online=True, will_seq=will_seq)
            )

    def event(self, level: EventLevel, code: str, message: str, details: dict[str, Any] | None = None) -> int:
        return self.outbox.event(level, code, message, details)

    def send_metrics(self) -> int:
        """Close the metrics window now and spool it; returns its seq."""
        now, mono = time.time(), time.monotonic()
        window_start, window_s = self._window_start, max(mono - self._window_mono, 1e-3)
        self._window_start, self._window_mono = now, mono
        depths = dict(self._in_flight())
        models = self.metrics.take(depths.keys())
        system = self.system.sample()
        skipped = self.drift.take_skipped()
        device = self.settings.identity.device_id
        connected = self.link is not None and self.link.connected
        with self.spool.batch() as batch:
            # Drops are reported once the link is back: reported while offline, the report
            # itself would sit in the full spool, first in line to be dropped.
            drops = batch.claim_drops() if connected else DropReport()
            seq = self.outbox.add(
                batch,
                Channel.METRICS,
                lambda seq: MetricsPayload(
                    device_id=device,
                    seq=seq,
                    window_start=_utc(window_start),
                    window_s=window_s,
                    models=models,
                    system=system,
                    spool_dropped=dict(drops.counts),
                ),
            )
            if drops:
                self.outbox.add(
                    batch, Channel.EVENTS, lambda s: drop_event(device, s, drops, self.spool.max_bytes)
                )
            if skipped:
                self.outbox.add(
                    batch,
                    Channel.EVENTS,
                    lambda s: EventPayload(
                        device_id=device,
                        seq=s,
                        level=EventLevel.WARNING,
                        code="drift_samples_skipped",
                        message=f"{skipped} sample(s) were left out of drift counting: the agent fell behind",
                        details={"samples": skipped},
                    ),
                )
        if drops:
            log.warning("reported %d spooled message(s) dropped while offline: %s", drops.total, drops.counts)
        return seq

    def _send_drift(self, closed: ClosedWindow) -> None:
        device = self.settings.identity.device_id
        self.outbox.send(
            Channel.DRIFT,
            lambda seq: DriftPayload(
                device_id=device,
                seq=seq,
                model=closed.model,
                version=closed.version,
                window_start=_utc(closed.start),
                window_end=_utc(closed.end),
                window=closed.window.to_dict(),
            ),
        )

    def _will(self, will_seq: int) -> tuple[str, bytes]:
        payload = self.status.status(will_seq, online=False, will_seq=will_seq)
        return self.outbox.topic(Channel.STATUS), encode(payload)

    def _birth(self, will_seq: int) -> None:
        with self.spool.batch() as batch:
            self.outbox.add(
                batch, Channel.STATUS, lambda seq: self.status.status(seq, online=True, will_seq=will_seq)
            )
            batch.release_will_seq(will_seq)

    def _command_rejected(self, topic_name: str, reason: str, payload: bytes) -> None:
        # Whoever can publish garbage on the desired topic must not flood the spool with events:
        # a burst goes out, then one a second; ``rejected_total`` counts the ones not reported.
        if not self._rejection_events.take(time.monotonic()):
            return
        self.outbox.event(
            EventLevel.ERROR,
            "command_rejected",
            f"rejected a message on {topic_name}: {reason}",
            {
                "topic": topic_name,
                "reason": reason,
                "bytes": len(payload),
                "preview": preview(payload),
                "rejected_total": self.commands.rejected,
            },
        )

    # --- the reporter thread --------------------------------------------------------------------

    def _report_loop(self) -> None:
        interval = self.settings.metrics_interval_s
        next_report = time.monotonic() + interval
        while not self._stop.wait(min(QUEUE_SAMPLE_S, interval)):
            try:
                self.metrics.note_queue_depth(self._in_flight())
                now = time.monotonic()
                if now >= next_report:
                    self.send_metrics()
                    # Keep the schedule, but never try to catch up with a burst after a stall.
                    next_report = max(next_report + interval, now + interval / 2)
            except Exception:
                log.exception("the metrics reporter hit an error; it keeps running")
