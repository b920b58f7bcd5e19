"""The README's "A 10-minute tour", run as written, then the next things a new user does.

The tour's shell blocks are read from README.md (``tests.support.readme_tour``) and pasted into one
bash, in a scratch directory, with ``.venv/bin`` first on ``PATH``, against a private Mosquitto and
a throw-away PostgreSQL database. Only what the README documents as changeable is changed: the
ports given to ``--grpc``, ``--http`` and ``--mqtt`` (and the addresses that name them) and the
database that ``createdb`` makes. Everything else runs as the README says, so when the README
changes, this test runs what it says then.

After the tour, with its server and agent still running:

- the agent that took the OTA update is stopped with SIGTERM: it exits 0, says so, flushes its
  spool and the fleet sees it offline within seconds (issue 18: it used to die with SIGSEGV);
- a second device takes an OTA update and is killed with SIGKILL: the fleet sees it offline
  within the keep-alive (issue 18: its Last Will used to be ignored after an OTA).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from psycopg import sql

from edge_agent.agent import SPOOL_FILE
from edge_agent.ota.updater import JOURNAL_FILE
from tests.support.mosquitto import MosquittoBroker
from tests.support.net import free_port
from tests.support.postgres import ADMIN_DSN
from tests.support.readme_tour import TourShell, check_rewrites, rewrite, tour_blocks

pytestmark = pytest.mark.integration

BLOCK_TIMEOUT_S = 600.0
AGENT_KEEPALIVE_S = 30  # edge_agent.config's default for --mqtt-keepalive-s, which the tour keeps
T = TypeVar("T")


@dataclass
class Tour:
    shell: TourShell
    workdir: Path
    outputs: list[str]
    replacements: dict[str, str]
    database: str

    @property
    def fleet_url(self) -> str:
        return f"http://{self.replacements['127.0.0.1:8080']}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.replacements['127.0.0.1:1883']}"

    @property
    def token(self) -> str:
        return (self.workdir / "tour" / "fleet" / "admin.token").read_text().strip()

    def device(self, device_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.fleet_url}/api/v1/devices/{device_id}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        response.raise_for_status()
        return dict(response.json())

    def stored_status(self, device_id: str) -> dict[str, Any] | None:
        """The last status payload the fleet stored for ``device_id`` (from its database)."""
        dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{self.database}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT status FROM devices WHERE id = %s", (device_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return row[0] if isinstance(row[0], dict) else json.loads(row[0])

    def job_pid(self, pattern: str) -> int:
        """The pid of the shell's running background job whose command matches ``pattern``."""
        listing = self.shell.run("jobs -l", timeout=30)
        for line in listing.splitlines():
            match = re.match(r"\[\d+\][+-]?\s+(\d+)\s+Running\s+(.*)", line)
            if match and re.search(pattern, match[2]):
                return int(match[1])
        raise AssertionError(f"no running job matches {pattern!r}:\n{listing}")


def _database_url_admin() -> psycopg.Connection[Any]:
    return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)


def _shell_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EDGEFLEET_", "PYTEST_")) and k not in ("COLUMNS", "LINES")
    }
    # "Run from the repository root with .venv/bin on your PATH".
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    workdir = tmp_path_factory.mktemp("readme-tour")
    broker = MosquittoBroker(workdir=workdir / "mosquitto").start()
    database = f"edgefleet_tour_{uuid.uuid4().hex[:10]}"
    replacements = {
        "127.0.0.1:8080": f"127.0.0.1:{free_port()}",
        "127.0.0.1:8001": f"127.0.0.1:{free_port()}",
        "127.0.0.1:8101": f"127.0.0.1:{free_port()}",
        "127.0.0.1:1883": f"127.0.0.1:{broker.port}",
        "edgefleet_tour": database,
    }
    blocks = tour_blocks()
    check_rewrites(blocks, replacements)
    shell = TourShell(workdir, _shell_env())
    try:
        outputs = [shell.run(rewrite(block, replacements), timeout=BLOCK_TIMEOUT_S) for block in blocks]
        yield Tour(shell, workdir, outputs, replacements, database)
    finally:
        shell.close()
        broker.stop()
        with _database_url_admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def _row(output: str, *needles: str) -> str:
    rows = [line for line in output.splitlines() if all(needle in line for needle in needles)]
    assert rows, f"no line has all of {needles}:\n{output}"
    return rows[-1]


def _eventually(check: Callable[[], T | None], what: str, timeout: float) -> tuple[T, float]:
    """Poll ``check`` until it returns something; the value and how long it took."""
    start = time.monotonic()
    while True:
        value = check()
        if value is not None and value is not False:
            return value, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def _spooled(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / SPOOL_FILE) as db:
        return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


# --- the tour, as written -------------------------------------------------------------------------


def test_the_tour_runs_as_written(tour: Tour) -> None:
    convert, serve, fleet, rollout = tour.outputs
    build = tour.workdir / "tour" / "build"
    assert (build / "digits-cnn-1.0.0-intel-x86-openvino.efb").is_file(), convert
    assert (build / "digits-cnn-1.0.0-raspberry-pi-5.efb").is_file(), convert
    # The converter's table went to a pipe too: one line per attempt, names and decisions whole.
    assert re.search(r"intel-x86-openvino\s.*\bopenvino\b.*\b(packaged|degraded)\b", convert), convert

    predicted = re.search(r"predicted (\d+) label (\d+)", serve)
    assert predicted is not None, serve
    assert predicted[1] == predicted[2], serve

    # Step 3's `devices ls` went to a pipe, not a terminal: its rows must not be folded.
    assert _row(fleet, "nuc-01", "intel-x86-openvino")
    # Step 4 ends with the device on the new version.
    assert "online" in _row(rollout, "nuc-01", "intel-x86-openvino", "digits-cnn 1.1.0")
    assert tour.device("nuc-01")["models"] == {"digits-cnn": "1.1.0"}


# --- what comes next ---------------------------------------------------------------------------------


def test_the_promoted_rollout_says_who_promoted_it_and_what_it_compared(tour: Tour) -> None:
    before = tour.outputs[3]
    after = tour.shell.run(
        'edgefleet rollout status "$ID"; edgefleet rollout ls; edgefleet audit ls', timeout=60
    )
    # The lone canary has no control: what the gates compared against is named truthfully.
    controls = re.findall(r"^control: .*$", before + "\n" + after, re.M)
    assert controls and all(line.startswith("control: none") for line in controls), controls
    assert "baseline: 1/1 reporting" not in before + after
    # The operator promoted the canary; nothing says it passed its gates.
    assert "passed its gates" not in after, after
    assert "promoted by admin" in after and "idle lab device" in after, after
    assert "promoted by admin" in _row(after, "digits-cnn", "1.1.0", "completed")  # `rollout ls`


def test_sigterm_after_the_ota_stops_the_agent_cleanly(tour: Tour) -> None:
    pid = tour.job_pid(r"agent run .*--device-id nuc-01")
    start = len(tour.shell.lines)
    result = tour.shell.run(f'kill -TERM {pid}; rc=0; wait {pid} || rc=$?; echo "agent exit $rc"', timeout=90)
    assert "agent exit 0" in result, tour.shell.output(start)
    assert re.search(r"received SIGTERM: stopping", result) and re.search(r"\bstopped\b", result), result
    assert _spooled(tour.workdir / "tour" / "nuc-01") == 0  # everything delivered before it exited
    # A clean disconnect keeps the broker's Last Will to itself: offline can only be the goodbye.
    _eventually(lambda: not tour.device("nuc-01")["online"], "nuc-01 offline after SIGTERM", timeout=15)


def test_sigkill_after_an_ota_goes_offline_within_the_keepalive(tour: Tour) -> None:
    grpc = f"127.0.0.1:{free_port()}"
    tour.shell.run(
        f"""
edgefleet devices add nuc-02 --profile intel-x86-openvino --tag site=b --json \\
    | python -c "import json, sys; print(json.load(sys.stdin)['mqtt']['password'])" > tour/nuc-02.password
edgefleet agent run --mqtt {tour.mqtt_url} --device-id nuc-02 --profile intel-x86-openvino \\
    --mqtt-username nuc-02 --mqtt-password-file tour/nuc-02.password \\
    --fleet-url {tour.fleet_url} --trusted-key tour/keys/edgefleet.pub.pem \\
    --bundle tour/build/digits-cnn-1.0.0-intel-x86-openvino.efb \\
    --grpc {grpc} --data-dir tour/nuc-02 --ota-watch-s 2 &
""",
        timeout=60,
    )
    _eventually(lambda: tour.device("nuc-02")["online"], "nuc-02 online", timeout=120)
    tour.shell.run(
        "edgefleet rollout create digits-cnn:1.1.0 --target device=nuc-02 --canary 1 --waves 100% --bake 1s",
        timeout=60,
    )
    journal = tour.workdir / "tour" / "nuc-02" / JOURNAL_FILE

    def committed() -> bool:
        job = (
            json.loads(journal.read_text()).get("jobs", {}).get("digits-cnn", {}) if journal.exists() else {}
        )
        return job.get("version") == "1.1.0" and job.get("state") == "committed" and bool(job.get("finished"))

    _eventually(committed, "nuc-02 committed 1.1.0", timeout=120)

    def settled_status() -> dict[str, Any] | None:
        # The status sent once the old version was unloaded: it lists 1.1.0 alone.
        status = tour.stored_status("nuc-02")
        versions = [(m["name"], m["version"]) for m in (status or {}).get("models", [])]
        return status if versions == [("digits-cnn", "1.1.0")] else None

    status, _ = _eventually(settled_status, "the fleet stores nuc-02's status after the OTA", timeout=60)
    assert status["online"] is True and status["will_seq"] is not None, status

    pid = tour.job_pid(r"agent run .*--device-id nuc-02")
    os.kill(pid, signal.SIGKILL)
    _eventually(
        lambda: not tour.device("nuc-02")["online"],
        "nuc-02 offline after SIGKILL (its Last Will)",
        timeout=AGENT_KEEPALIVE_S * 1.5 + 5,
    )
