"""Progress reporting: a small protocol the workflow calls, a silent default and a Rich renderer.

The workflow never prints. It announces steps (``task``), advances them, and logs one-line
events (``log``, plain text with a level); the CLI hands in ``RichProgress`` to turn those into
progress bars and coloured lines.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol, TextIO

Advance = Callable[[int], None]
Level = Literal["info", "ok", "warn", "error"]


class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> contextlib.AbstractContextManager[Advance]:
        """A step: the context yields ``advance(n)``; the step ends with the block."""
        ...

    def log(self, message: str, *, level: Level = "info") -> None:
        """A one-line event worth showing (an attempt rejected, a bundle written), as plain text."""
        ...


class NullProgress:
    """Reports nothing: the default for the Python API."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        yield lambda _n: None

    def log(self, message: str, *, level: Level = "info") -> None:
        return None


class RecordingProgress:
    """Keeps every task and log line: for tests and for callers that render later."""

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.messages: list[str] = []
        self.levels: list[Level] = []

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        self.tasks.append(description)
        yield lambda _n: None

    def log(self, message: str, *, level: Level = "info") -> None:
        self.messages.append(message)
        self.levels.append(level)


class RichProgress:
    """Progress bars and log lines on a Rich console (bound to the stream it was created with).

    Binding the stream up front matters: the toolchains' own output is captured while they run
    (``converter.quiet``), and the bars must keep drawing on the real terminal meanwhile.
    """

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichBars

        self._own_stream = _terminal_copy()
        if console is None:
            console = Console(file=self._own_stream or sys.stdout)
        self.console = console
        self._bars = RichBars(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._bars.stop()
        if self._own_stream is not None:
            self._own_stream.close()
            self._own_stream = None

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        task_id = self._bars.add_task(description, total=total)
        try:
            yield lambda n: self._bars.advance(task_id, n)
        finally:
            self._bars.remove_task(task_id)

    def log(self, message: str, *, level: Level = "info") -> None:
        from rich.markup import escape

        mark = {"info": "[dim]·[/]", "ok": "[green]✓[/]", "warn": "[yellow]![/]", "error": "[red]✗[/]"}[level]
        self._bars.console.print(f"{mark} {escape(message)}", highlight=False)


def _terminal_copy() -> TextIO | None:
    """A stream on a duplicate of file descriptor 1, when stdout really is file descriptor 1.

    ``converter.quiet`` points descriptor 1 at a temporary file while a toolchain runs; the copy
    keeps pointing at the terminal. Under a test runner that replaced ``sys.stdout`` with a buffer,
    there is no such descriptor and the bars go to ``sys.stdout`` as usual.
    """
    try:
        if sys.stdout is None or sys.stdout.fileno() != 1:
            return None
        sys.stdout.flush()
        return os.fdopen(os.dup(1), "w", buffering=1, encoding=sys.stdout.encoding or "utf-8")
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
