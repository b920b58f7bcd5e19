"""The README's "A 10-minute tour", as code: its shell blocks, and a shell to run them in.

``tour_blocks`` reads the ```bash blocks of the tour section from README.md as it is now, so the
tour test runs whatever the README says. ``rewrite`` changes only the addresses and the database
name the README documents as changeable (ports given to ``--grpc``, ``--http`` and ``--mqtt``, and
the database ``createdb`` makes), and refuses to run if one of them is no longer in the text: a
README that moved to other ports must not send the test to this machine's real services.

``TourShell`` is one ``bash`` process, fed the blocks one at a time on its standard input as a
user pastes them into a terminal, so background jobs (``&``), ``kill %1`` and variables carry
over from block to block. It runs with ``set -euo pipefail``: a failing command ends the shell,
and the test reports the output.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
TOUR_HEADING = "## A 10-minute tour"
_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
_DIRECTORY = re.compile(r"(?<![\w./-])(tour)/")


def tour_section(readme: Path = README) -> str:
    text = readme.read_text(encoding="utf-8")
    if TOUR_HEADING not in text:
        raise AssertionError(f"{readme} has no {TOUR_HEADING!r} section")
    return text.split(TOUR_HEADING, 1)[1].split("\n## ", 1)[0]


def tour_blocks(readme: Path = README) -> list[str]:
    """The tour's shell blocks, in order, exactly as README.md has them."""
    blocks = _BLOCK.findall(tour_section(readme))
    if not blocks:
        raise AssertionError(f"the tour in {readme} has no ```bash blocks")
    return blocks


def tour_directories(readme: Path = README) -> set[str]:
    """The top-level folders the tour writes into (relative to where it runs)."""
    return set(_DIRECTORY.findall("\n".join(tour_blocks(readme))))


def rewrite(block: str, replacements: Mapping[str, str]) -> str:
    for old, new in replacements.items():
        block = block.replace(old, new)
    return block


def check_rewrites(blocks: list[str], replacements: Mapping[str, str]) -> None:
    """Every documented address and name the test moves must still be in the tour's text."""
    text = "\n".join(blocks)
    missing = [old for old in replacements if old not in text]
    if missing:
        raise AssertionError(
            f"the README tour no longer mentions {missing}: update the tour test's rewrites "
            "(tests/integration/test_readme_tour.py) to what the README documents now"
        )


class TourShell:
    """One bash, fed blocks on stdin; its output (and its jobs') is collected line by line."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            text=True,
            bufsize=1,
            start_new_session=True,  # the shell and every job it starts: one group to clean up
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.send("set -euo pipefail")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.rstrip("\n") + "\n")
        self.process.stdin.flush()

    def run(self, block: str, *, timeout: float) -> str:
        """Run ``block`` and return what it printed (its background jobs' lines included)."""
        marker = f"__tour_block_done_{uuid.uuid4().hex}__"
        start = len(self.lines)
        self.send(block)
        self.send(f"echo {marker}")
        deadline = time.monotonic() + timeout
        with self._changed:
            while marker not in self.lines[start:]:
                if self.process.poll() is not None:
                    self._changed.wait(0.5)  # the shell's last lines may still be in the pipe
                    if marker in self.lines[start:]:
                        break
                    raise AssertionError(
                        f"the shell exited with {self.process.returncode} in this block:\n{block}\n"
                        f"--- output ---\n{self.output(start)}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"this block did not finish within {timeout:.0f} s:\n{block}\n"
                        f"--- output ---\n{self.output(start)}"
                    )
                self._changed.wait(min(left, 1.0))
            end = self.lines.index(marker, start)
        return "\n".join(self.lines[start:end])

    def output(self, start: int = 0) -> str:
        return "\n".join(self.lines[start:])[-20000:]

    def close(self) -> None:
        """Stop the shell and every job it left running."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(10)
