"""A clean stop after an OTA update, on every runtime (issue 18).

The agent used to die with SIGSEGV (exit 139, in milliseconds, with no "stopping" line) when it
got SIGTERM after an OTA update of an OpenVINO model. The cause: OpenVINO's CPU plugin gives the
thread that creates it an alternate signal stack in the plugin's own memory. The model loaded at
start (on the main thread) was unloaded by the updater's thread, which tore that plugin down and
freed the stack without the main thread knowing; Python's signal handlers run on the alternate
stack, so the kernel could not deliver SIGTERM and killed the process. One process-wide
``ov.Core`` (``edge_agent.runtimes.openvino_backend.shared_core``) keeps the plugin alive.

Each runtime here goes through the same real path: ``edgefleet agent run`` serving 1.0.0, a
rollout to 1.1.0 from a real fleet server, the device's commit, then SIGTERM: the agent must exit
0, flush its spool, and the fleet must see it offline.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge_agent.agent import SPOOL_FILE
from tests.integration.test_ota_agent_support import Fleet
from tests.integration.test_rollout_support import RolloutAgent
from tests.support import bundles as tiny
from tests.support.digits_bundles import BundleSet, rebuild_with_version, shared_bundles
from tests.support.fleet_process import FleetServer
from tests.support.mosquitto import MosquittoBroker
from tests.support.ota_bundles import Release

pytestmark = pytest.mark.integration

RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert", "openvino": "openvino"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> BundleSet:
    return shared_bundles(tmp_path_factory)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    running = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, broker: MosquittoBroker, digits: BundleSet
) -> Iterator[Fleet]:
    server = FleetServer(
        tmp_path_factory.mktemp("fleet"), trusted_keys=(digits.public_key_path,), mqtt_url=broker.url
    ).start()
    yield Fleet(server)
    server.stop()


def _device(fleet: Fleet, device_id: str) -> dict[str, object]:
    with fleet.server.client(fleet.server.admin_token) as api:
        response = api.get(f"/api/v1/devices/{device_id}")
        response.raise_for_status()
        return dict(response.json())


def _wait(condition: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


@pytest.mark.parametrize("fmt", sorted(RUNTIMES), ids=[RUNTIMES[f] for f in sorted(RUNTIMES)])
def test_sigterm_after_an_ota_exits_cleanly(
    fmt: str, digits: BundleSet, fleet: Fleet, broker: MosquittoBroker, tmp_path: Path
) -> None:
    model = digits.name(fmt)
    v1 = Release.of(digits.path(fmt), _manifest(digits.path(fmt)))
    v2_path = rebuild_with_version(digits, fmt, "1.1.0", tmp_path / "v2")
    v2 = Release.of(v2_path, _manifest(v2_path))
    fleet.push(v1)
    fleet.push(v2)
    device = f"stop-{fmt}"
    username, password = fleet.add_device(device)
    agent = RolloutAgent(
        tmp_path / device,
        broker.url,
        device,
        v1.path,
        digits.public_key_path,
        username=username,
        password=password,
        fleet_url=fleet.server.url,
    )
    agent.start()
    try:
        with httpx.Client(base_url=fleet.server.url, timeout=30) as api:
            response = api.post(
                "/api/v1/rollouts",
                headers={"Authorization": f"Bearer {fleet.server.admin_token}"},
                json={
                    "model": model,
                    "version": "1.1.0",
                    "target": f"device={device}",
                    "canary": "1",
                    "waves": ["100%"],
                    "bake_s": 1,
                },
            )
            assert response.status_code == 201, response.text
        agent.wait_for_job(model, "1.1.0", "committed", timeout=120)
        agent.wait_for_log(f"unloaded {model} 1.0.0", timeout=30)
        code = agent.stop()
    finally:
        agent.kill()
    log = agent.log()
    assert code == 0, f"the agent exited with {code} after the OTA:\n{log[-4000:]}"
    assert "received SIGTERM: stopping" in log and log.rstrip().endswith("stopped"), log[-2000:]
    with sqlite3.connect(agent.data_dir / SPOOL_FILE) as spool:
        assert spool.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
    _wait(lambda: _device(fleet, device)["online"] is False, f"{device} offline", timeout=15)
    assert _device(fleet, device)["models"] == {model: "1.1.0"}


def _manifest(path: Path) -> object:
    from models.bundle import inspect_bundle

    return inspect_bundle(path)


def test_an_openvino_model_unloaded_on_another_thread_leaves_signals_deliverable(tmp_path: Path) -> None:
    """The mechanism alone, in a child process: a model compiled on the main thread and released on
    another thread (as the OTA updater does), then a signal to the main thread's Python handler."""
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny.tiny_onnx_model())
    script = textwrap.dedent(
        f"""
        import os, signal, threading, time
        from pathlib import Path
        import numpy as np
        from edge_agent.runtimes.openvino_backend import OpenVINOSession

        handled = []
        signal.signal(signal.SIGTERM, lambda *_: handled.append(True))
        sessions = [OpenVINOSession(Path({str(model)!r}))]          # loaded at start, on the main thread

        def update():                                        # the updater's thread
            sessions.append(OpenVINOSession(Path({str(model)!r})))
            sessions.pop(0).close()

        worker = threading.Thread(target=update)
        worker.start()
        worker.join()
        sessions[0].infer({{"x": np.ones((1, 4), np.float32)}})
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("handled" if handled else "not handled")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert result.stdout.strip().endswith("handled") and "not handled" not in result.stdout


def test_openvino_plugins_leave_the_callers_signal_stack_as_it_was(tmp_path: Path) -> None:
    """The premise and the guard, in a child process: compiling on a new Core points the thread's
    alternate signal stack into the plugin (so a Core released elsewhere leaves it dangling); under
    ``preserved_signal_stack`` the thread keeps its own. Then the dangerous sequence, guarded: a
    Core compiled on the main thread, released on another one, and a signal to the main thread."""
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny.tiny_onnx_model())
    script = textwrap.dedent(
        f"""
        import gc, os, signal, threading, time
        import openvino as ov
        from edge_agent.runtimes.signal_stack import current_signal_stack, preserved_signal_stack

        handled = []
        signal.signal(signal.SIGTERM, lambda *_: handled.append(True))
        before = current_signal_stack()
        kept = [ov.Core()]
        kept.append(kept[0].compile_model({str(model)!r}, "CPU"))
        print("unguarded changed", current_signal_stack() != before)   # the premise
        guarded_before = current_signal_stack()
        with preserved_signal_stack():
            doomed = [ov.Core()]
            doomed.append(doomed[0].compile_model({str(model)!r}, "CPU"))
        print("guarded unchanged", current_signal_stack() == guarded_before)
        worker = threading.Thread(target=lambda: (doomed.clear(), gc.collect()))
        worker.start()
        worker.join()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("handled" if handled else "not handled")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
    lines = result.stdout.split("\n")
    assert "unguarded changed True" in lines, result.stdout
    assert "guarded unchanged True" in lines and "handled" in lines, result.stdout
