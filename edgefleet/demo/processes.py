"""The demo's child processes: each in its own process group, logged, recorded, and always stopped.

Every child starts in a new session (its own process group), so a Ctrl-C in the terminal reaches
the demo alone, which then stops the children in order: the agents first (they say goodbye to
the broker inside the server), then the server. Stopping sends SIGTERM to the whole group, waits,
and sends SIGKILL to whatever is left. ``processes.json`` lists every child with its pid, so
anyone (the tests do) can check afterwards that none is left running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet.cli._console import CLIError


@dataclass
class ChildProcess:
    name: str
    role: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_for_log(self, pattern: re.Pattern[str], timeout_s: float, *, what: str) -> re.Match[str]:
        """The first match of ``pattern`` in the log, or a CLIError with the log's tail."""
        deadline = time.monotonic() + timeout_s
        while True:
            match = pattern.search(self.log_tail(1_000_000))
            if match:
                return match
            if not self.alive():
                raise CLIError(
                    f"{self.name} exited with code {self.process.returncode} before {what}:\n"
                    f"{self.log_tail()}",
                    hint=f"its whole log is {self.log_path}",
                )
            if time.monotonic() > deadline:
                raise CLIError(
                    f"{self.name} did not get to {what} within {timeout_s:.0f} s:\n{self.log_tail()}",
                    hint=f"its whole log is {self.log_path}; the machine may be busy",
                )
            time.sleep(0.1)

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        # The child leads its own group (start_new_session), so its pid is the group id; the
        # group takes any helper processes it started with it.
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:  # the pid was reused by someone else's process: leave it alone
            pass


@dataclass
class ProcessBook:
    """Starts children and remembers them (in memory and in ``record``) until they are stopped."""

    record: Path
    children: list[ChildProcess] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(
        self,
        name: str,
        role: str,
        command: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ChildProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        child = ChildProcess(name, role, list(command), log_path, process)
        with self._lock:
            self.children.append(child)
            self._write()
        return child

    def running(self, role: str | None = None) -> list[ChildProcess]:
        with self._lock:
            return [c for c in self.children if c.alive() and (role is None or c.role == role)]

    def stop_all(self, order: Sequence[str], *, grace_s: Mapping[str, float]) -> list[str]:
        """Stop children role by role in ``order`` (then any other role); the names of those that
        had to be killed."""
        roles = list(order) + sorted({c.role for c in self.children} - set(order))
        killed: list[str] = []
        for role in roles:
            killed += self._stop_role(role, grace_s.get(role, 10.0))
        with self._lock:
            self._write()
        return killed

    def _stop_role(self, role: str, grace_s: float) -> list[str]:
        group = [c for c in self.children if c.role == role]
        for child in group:
            if child.alive():
                child.terminate()
        deadline = time.monotonic() + grace_s
        killed = []
        for child in group:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(child.name)
                child.kill()
                child.process.wait()
            # Helpers left in its group (none expected) go too: while any member lives, its
            # group id stays taken, so the signal cannot reach a stranger.
            child.kill()
        return killed

    def _write(self) -> None:
        entries = [
            {
                "name": c.name,
                "role": c.role,
                "pid": c.pid,
                "log": str(c.log_path),
                "returncode": c.process.returncode,
            }
            for c in self.children
        ]
        self.record.write_text(json.dumps({"processes": entries}, indent=1) + "\n")
