"""Where the demo writes everything: one folder a person can poke at afterwards.

edgefleet-demo/
  .edgefleet-demo          marks the folder as the demo's own (a re-run may clear it)
  data/                    calibration and evaluation sets (.npz)
  keys/                    the signing key pair (kept across runs)
  release-1.0.0/ ...       bundles (.efb), report.json and report.md per release
  server/                  the fleet server's data directory: fleet.db, admin.token, bundles
  devices/<id>/            each simulated device's agent data directory (slots, spool)
  logs/                    server.log and one log per agent
  processes.json           every process the demo started (pid, role), for checking shutdown
  summary.json             what the demo ended with (devices, rollouts, alerts, traffic)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgefleet.cli._console import CLIError

MARKER = ".edgefleet-demo"
KEY_NAME = "edgefleet-demo"

# What a run writes and the next run replaces. keys/ is kept; data/ is rewritten; release-*/ are
# reused when identical (edgefleet.demo.release_cache) and replaced otherwise.
_REPLACED = ("server", "devices", "logs", "profiles", "processes.json", "summary.json")
# What the converter-only demo of earlier versions wrote at the top.
_REPLACED_GLOBS = ("*.efb", "report.json", "report.md", "artifacts")


@dataclass(frozen=True)
class DemoLayout:
    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def admin_token(self) -> Path:
        return self.server_dir / "admin.token"

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def processes_file(self) -> Path:
        return self.root / "processes.json"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    def release_dir(self, version: str) -> Path:
        return self.root / f"release-{version}"

    def device_dir(self, device_id: str) -> Path:
        return self.root / "devices" / device_id

    def agent_log(self, device_id: str) -> Path:
        return self.logs_dir / f"agent-{device_id}.log"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    def prepare(self) -> None:
        """Create the folder, or clear what the previous demo run left in it.

        A folder that is neither empty nor the demo's own is refused: ``--out .`` by mistake
        must not delete anything.
        """
        root = self.root
        if root.exists() and not root.is_dir():
            raise CLIError(f"{root} exists and is not a directory", hint="choose another --out")
        if root.is_dir() and any(root.iterdir()) and not self._is_demo_folder():
            raise CLIError(
                f"{root} is not empty and was not written by `edgefleet demo`",
                hint="choose another --out (the demo clears and rewrites its folder on every run)",
            )
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text("written by `edgefleet demo`; a re-run replaces its contents\n")
        for name in _REPLACED:
            _remove(root / name)
        for pattern in _REPLACED_GLOBS:
            for path in root.glob(pattern):
                _remove(path)
        for directory in (self.data_dir, self.keys_dir, self.logs_dir, root / "devices"):
            directory.mkdir(parents=True, exist_ok=True)

    def _is_demo_folder(self) -> bool:
        # The marker, or the key pair an earlier version of the demo wrote without one.
        return (self.root / MARKER).is_file() or (self.keys_dir / f"{KEY_NAME}.key").is_file()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
