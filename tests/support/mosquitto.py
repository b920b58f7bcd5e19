"""A private Mosquitto broker per test: its own port, config and persistence, stoppable and restartable.

Fault tests stop the broker while an agent runs and start it again on the same port, so the broker
is a real process with a generated config file rather than the system daemon on 1883.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port, wait_for_port


class MosquittoMissing(RuntimeError):
    pass


@dataclass
class MosquittoBroker:
    workdir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    password_file: Path | None = None
    acl_file: Path | None = None
    persistence: bool = True
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_inflight_messages 100",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to the 'mosquitto' user, which cannot write persistence into
            # (or read password files from) a root-owned tmp dir; a restart would lose sessions.
            lines.append("user root")
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        return "\n".join(lines) + "\n"

    def start(self) -> MosquittoBroker:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise MosquittoMissing("mosquitto is not installed: apt-get install mosquitto")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        config.write_text(self.config_text())
        log = self.log_path.open("ab")
        self._process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)
        try:
            wait_for_port(self.host, self.port, timeout=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()[-2000:]}") from None
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        wait_for_port(self.host, self.port, timeout=10, open_=False)

    def restart(self) -> None:
        self.stop()
        self.start()
