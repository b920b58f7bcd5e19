"""The line an agent logs once it serves, which supervisors wait for: the demo, tests, service wrappers.

``agent ready: grpc=HOST:PORT uds=PATH ...`` (``-`` for a listener that is off), then the
command's own ``key=value`` facts. Light on purpose: the CLI imports it before any runtime.
"""

from __future__ import annotations

import re

READY_MARKER = "agent ready"
READY_LINE = re.compile(rf"{READY_MARKER}: grpc=(?P<tcp>\S+) uds=(?P<uds>\S+)")


def ready_message(tcp: object, uds: object, **facts: object) -> str:
    """The ready line for these listeners (None: off), followed by ``key=value`` for each fact."""
    listeners = f"{READY_MARKER}: grpc={tcp or '-'} uds={uds or '-'}"
    return " ".join([listeners, *(f"{key}={value}" for key, value in facts.items())])
