"""Tables stay readable when a command's output is piped to a file or a log (not a terminal)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.table import Table

from edgefleet.cli._console import make_console

LONG_CELLS = (
    "intel-x86-openvino",
    "digits-cnn 1.1.0, mobilenet-mini 2.0.0",
    "site=amsterdam-north,rack=17,row=b",
)


def _table() -> Table:
    table = Table(title="1 device(s)")
    for column in ("id", "profile", "models", "tags"):
        table.add_column(column, overflow="fold")
    table.add_row("nuc-01", *LONG_CELLS)
    return table


def _row_with(text: str, needle: str) -> str:
    return next(line for line in text.splitlines() if needle in line)


def test_piped_tables_keep_their_natural_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    buffer = io.StringIO()  # not a terminal
    console = make_console(file=buffer, width=None)
    console.print(_table())
    console.print(_table(), _table())  # several renderables in one call
    row = _row_with(buffer.getvalue(), "nuc-01")
    assert all(cell in row for cell in LONG_CELLS), buffer.getvalue()
    widths = {len(line.rstrip()) for line in buffer.getvalue().splitlines() if "nuc-01" in line}
    assert max(widths) > 80


def test_an_explicit_width_or_columns_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    make_console(file=buffer, width=40).print(_table())
    assert max(len(line) for line in buffer.getvalue().splitlines()) <= 40
    monkeypatch.setenv("COLUMNS", "60")
    buffer = io.StringIO()
    make_console(file=buffer).print(_table())
    assert max(len(line) for line in buffer.getvalue().splitlines()) <= 60


def test_a_real_piped_command_prints_whole_rows() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet", "profiles", "list"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    row = _row_with(result.stdout, "intel-x86-openvino")
    assert "openvino, onnxruntime" in row, result.stdout
    assert "raspberry-pi-zero-2w" in result.stdout
