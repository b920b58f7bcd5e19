"""Signals during the demo: Ctrl-C and SIGTERM stop it the same way, and never halfway through cleanup.

While the demo runs, SIGTERM is turned into the ``KeyboardInterrupt`` a Ctrl-C raises, so one
``finally`` handles both. Once cleanup starts, ``shielded`` holds further signals off (saying so),
so a second Ctrl-C cannot leave agents or the server behind; every stop in the cleanup has a
bounded wait, after which it kills.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread (no-op elsewhere)."""
    with _handlers(_raise_interrupt):
        yield


@contextmanager
def shielded(notice: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``notice`` instead of interrupting the block."""

    def hold(signum: int, frame: FrameType | None) -> None:
        notice()

    with _handlers(hold):
        yield


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Handler] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
