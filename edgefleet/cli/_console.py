"""Shared terminal plumbing for every command group: one console, JSON output, friendly errors.

Output piped to a file or a log is not a terminal, and Rich would then lay everything out in 80
columns: a table of device ids and profile names folds into "intel-x8/6-openvi/no". Our consoles
instead print each table at its natural width when the output is not a terminal (and ``COLUMNS``
does not set one), so every line of a table stays one line in the log, whatever the command.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.measure import measure_renderables

UNBOUNDED_WIDTH = 100_000
"""The layout width for output that is not a terminal: wide enough for any table we print."""


class PipeFriendlyConsole(Console):
    """A Rich console that, off a terminal, lays each renderable out at its natural width."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.natural_width = (
            kwargs.get("width") is None and not self.is_terminal and "COLUMNS" not in os.environ
        )
        if self.natural_width:
            self.width = UNBOUNDED_WIDTH

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self.natural_width and kwargs.get("width") is None:
            # Text is not measured: off a terminal it may run as long as it is, one line per line.
            renderables = [obj for obj in objects if not isinstance(obj, str)]
            if renderables:
                kwargs["width"] = max(1, measure_renderables(self, self.options, renderables).maximum)
        super().print(*objects, **kwargs)


def make_console(**kwargs: Any) -> Console:
    """A console for this CLI (``Console``'s arguments): tables keep their width when piped."""
    return PipeFriendlyConsole(**kwargs)


console = make_console()
err_console = make_console(stderr=True)


class CLIError(Exception):
    """An error the operator can act on: a message, what to do next, and an exit code."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def fail(message: str, *, hint: str | None = None, exit_code: int = 1) -> NoReturn:
    """Print an error (and what to do about it) to stderr and exit with ``exit_code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=exit_code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn a CLIError raised inside a command into a clean message and exit code."""
    try:
        yield
    except CLIError as exc:
        fail(exc.message, hint=exc.hint, exit_code=exc.exit_code)


def print_json(data: Any) -> None:
    """Write machine-readable output to stdout, bypassing Rich's markup and wrapping."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
