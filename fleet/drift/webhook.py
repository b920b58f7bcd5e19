"""An optional webhook for alerts: each event POSTed as JSON, retried with backoff, never blocking.

``notify`` only puts the event on a bounded queue (a full queue drops the event and counts it);
one thread delivers them in order. A connection error, a timeout, 429 or a 5xx is retried after
1, 2, 4, ... seconds (at most 60) until ``attempts`` tries were made; any other 4xx means the
receiver refuses the event, and it is not retried. Outcomes are counted in
``edgefleet_drift_webhook_deliveries_total{outcome}``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import httpx

from edgefleet import __version__
from fleet.metrics import DriftMetrics

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
_STOP = object()


class WebhookNotifier:
    def __init__(
        self,
        url: str,
        metrics: DriftMetrics,
        *,
        timeout_s: float = 5.0,
        attempts: int = 6,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 60.0,
        queue_size: int = QUEUE_SIZE,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.attempts = attempts
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        # Waiting between retries wakes up at once when the notifier stops.
        self._sleep = sleep or (lambda seconds: self._stopping.wait(seconds))
        self._client = httpx.Client(
            timeout=timeout_s,
            transport=transport,
            headers={"User-Agent": f"edgefleet/{__version__}", "Content-Type": "application/json"},
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-webhook", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._client.close()

    def notify(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` for delivery; False (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.metrics.webhook.labels("dropped").inc()
            log.warning("the alert webhook queue is full; dropped a %s event", event.get("event"))
            return False
        return True

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            self.deliver(event)

    def deliver(self, event: dict[str, Any]) -> bool:
        """POST one event, retrying as described above; True when the receiver took it."""
        delay = self.backoff_min_s
        for attempt in range(1, self.attempts + 1):
            problem = self._post(event)
            if problem is None:
                self.metrics.webhook.labels("delivered").inc()
                return True
            retry, reason = problem
            if not retry or attempt == self.attempts:
                self.metrics.webhook.labels("failed").inc()
                log.error(
                    "alert webhook %s: giving up on a %s event after %d attempt(s): %s",
                    self.url,
                    event.get("event"),
                    attempt,
                    reason,
                )
                return False
            self.metrics.webhook.labels("retried").inc()
            log.warning("alert webhook %s: %s; retrying in %.0f s", self.url, reason, delay)
            if self._sleep(delay) and self._stopping.is_set():
                self.metrics.webhook.labels("failed").inc()
                return False
            delay = min(delay * 2, self.backoff_max_s)
        return False

    def _post(self, event: dict[str, Any]) -> tuple[bool, str] | None:
        try:
            response = self._client.post(self.url, json=event)
        except httpx.HTTPError as exc:
            return True, f"{type(exc).__name__}: {exc}"
        if response.status_code < 300:
            return None
        retry = response.status_code == 429 or response.status_code >= 500
        return retry, f"HTTP {response.status_code}"
