"""The MQTT broker side of the server: an embedded amqtt broker, or a check on an external one.

amqtt 0.12 speaks MQTT 3.1.1 only (no MQTT 5, no ``$share`` subscriptions): it is the zero-setup
default for a laptop or a demo; real deployments point ``--mqtt`` at Mosquitto or EMQX.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import Any, Protocol

from fleet.config import BrokerSettings, EmbeddedBrokerSettings, HostPort
from fleet.errors import PortInUse

log = logging.getLogger(__name__)


class BrokerLink(Protocol):
    """What the app needs from the broker side: a description and a reachability check."""

    @property
    def description(self) -> str: ...

    async def check(self) -> str | None:
        """None when the broker answers; otherwise what is wrong."""


def mqtt_port_in_use(listen: HostPort, reason: str = "already in use") -> PortInUse:
    return PortInUse(
        f"cannot start the embedded MQTT broker on {listen}: the address is {reason} "
        "(is Mosquitto or another edgefleet server running there?)",
        hint=f"pick a free port with --mqtt-listen HOST:PORT, or use the broker already on {listen} "
        f"with --mqtt mqtt://{listen}",
    )


def check_bindable(address: HostPort) -> None:
    """Raise OSError when nothing could listen on ``address`` (the same options as asyncio's server)."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address.host, address.port))


def bind_listener(address: HostPort, *, option: str) -> socket.socket:
    """A bound socket for the HTTP API (uvicorn listens on it), or PortInUse naming ``option``."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise PortInUse(
            f"cannot listen for HTTP on {address}: {reason}",
            hint=f"pick a free address with {option} HOST:PORT (is another edgefleet server running?)",
        ) from exc
    return sock


async def tcp_reachable(host: str, port: int, *, timeout: float = 2.0) -> str | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return f"cannot connect to {HostPort(host, port)}: {exc or type(exc).__name__}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


class EmbeddedBroker:
    """amqtt in the server's own event loop, anonymous, on the ``--mqtt-listen`` address."""

    def __init__(self, settings: EmbeddedBrokerSettings) -> None:
        self.listen = settings.listen
        self.description = settings.description
        self._broker: Any = None

    async def start(self) -> None:
        try:
            check_bindable(self.listen)
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise mqtt_port_in_use(self.listen, reason) from exc
        from amqtt.broker import Broker
        from amqtt.errors import BrokerError

        config = {
            "listeners": {"default": {"type": "tcp", "bind": str(self.listen)}},
            # Only anonymous auth: no $SYS publisher, no packet logging.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError):
                raise mqtt_port_in_use(self.listen, cause.strerror or str(cause)) from exc
            raise
        self._broker = broker
        log.info("embedded MQTT broker listening on %s", self.listen)

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def check(self) -> str | None:
        if not self.running:
            return "the embedded broker is not running"
        return await tcp_reachable(self.listen.connect_host, self.listen.port)


class ExternalBroker:
    """A broker someone else runs; readiness checks that it accepts TCP connections."""

    def __init__(self, host: str, port: int, description: str) -> None:
        self.host = host
        self.port = port
        self.description = description

    async def start(self) -> None:
        problem = await self.check()
        if problem is not None:
            # Not fatal: devices and the ingest reconnect when it comes up; /readyz says not ready.
            log.warning("external MQTT broker not reachable yet: %s", problem)

    async def stop(self) -> None:
        return None

    async def check(self) -> str | None:
        return await tcp_reachable(self.host, self.port)


def make_broker(settings: BrokerSettings) -> EmbeddedBroker | ExternalBroker:
    if isinstance(settings, EmbeddedBrokerSettings):
        return EmbeddedBroker(settings)
    return ExternalBroker(settings.url.host, settings.url.port, settings.description)
