"""Shared terminal plumbing for every command group: one console, JSON output, friendly errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


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
