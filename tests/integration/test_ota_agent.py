"""Issue 7, agent side: real agent processes, a real Mosquitto, a real fleet server, tritonclient.

The fleet server stores the bundles and serves the downloads (HTTP Basic with each device's MQTT
credentials); the test plays the rollout controller's part and publishes each device's retained
desired state on the broker. Each test provisions its own device and starts its own agent (the
kill test restarts it on the same data directory).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.ota import HAPPY_PATH, OtaState
from models.mqtt_contract import Channel
from tests.integration.test_ota_agent_support import (
    BundleServer,
    Fleet,
    InferenceLoad,
    OtaAgentProcess,
    desired_state,
    publish_desired,
)
from tests.support.fleet_process import FleetServer
from tests.support.mosquitto import MosquittoBroker
from tests.support.ota_bundles import DigitsReleases, Release, digits_releases
from tests.support.telemetry import Recorder, dedup

pytestmark = pytest.mark.integration

MODEL = "digits-cnn-onnx"
FLEET = "lab"
WATCH = {"window_s": 2.0, "check_interval_s": 0.1}
_DEVICE_NUMBERS = itertools.count(1)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsReleases:
    return digits_releases(tmp_path_factory)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    running = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, broker: MosquittoBroker, digits: DigitsReleases
) -> Iterator[Fleet]:
    server = FleetServer(
        tmp_path_factory.mktemp("fleet"), trusted_keys=(digits.public_key_path,), mqtt_url=broker.url
    ).start()
    yield Fleet(server)
    server.stop()


@pytest.fixture
def agents() -> Iterator[list[OtaAgentProcess]]:
    started: list[OtaAgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


@pytest.fixture
def device(
    fleet: Fleet,
    broker: MosquittoBroker,
    digits: DigitsReleases,
    agents: list[OtaAgentProcess],
    tmp_path: Path,
) -> OtaAgentProcess:
    """A provisioned device whose agent serves 1.0.0 (not started yet)."""
    name = f"dev-{next(_DEVICE_NUMBERS)}"
    username, password = fleet.add_device(name)
    agent = OtaAgentProcess(
        tmp_path / name,
        broker.url,
        name,
        digits["v1"].path,
        digits.public_key_path,
        fleet=FLEET,
        username=username,
        password=password,
        settings={"watch": WATCH},
    )
    agents.append(agent)
    return agent


def publish(
    broker: MosquittoBroker, agent: OtaAgentProcess, revision: int, release: Release, url: str, **options: Any
) -> None:
    publish_desired(
        broker.host,
        broker.port,
        FLEET,
        agent.device,
        desired_state(revision, {MODEL: (release, url)}, **options),
    )


def ota_messages(recorder: Recorder) -> list[dict[str, Any]]:
    return [m.data for m in dedup(recorder.snapshot()) if m.channel == Channel.OTA]


def wait_for_ota(recorder: Recorder, version: str, state: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    recorder.wait_until(
        lambda messages: any(
            m.channel == Channel.OTA and m.data["version"] == version and m.data["state"] == state
            for m in messages
        ),
        timeout,
        f"the OTA report {version} {state}",
    )
    return ota_messages(recorder)


def test_a_good_version_commits_with_no_failed_request(
    device: OtaAgentProcess, fleet: Fleet, broker: MosquittoBroker, digits: DigitsReleases
) -> None:
    recorder = Recorder(broker, FLEET, device.device)
    try:
        device.start()
        sample = digits.golden_inputs[:1]
        load = InferenceLoad(device, MODEL, sample)
        try:
            publish(broker, device, 1, digits["v2"], fleet.push(digits["v2"]), rollout_id="rollout-7")
            device.wait_for_job(MODEL, "2.0.0", "committed")
            reports = wait_for_ota(recorder, "2.0.0", "committed")
        finally:
            load.stop()
        assert load.failures == []
        assert {"1.0.0", "2.0.0"} <= set(load.answers)
        assert set(load.answers[load.answers.index("2.0.0") :]) == {"2.0.0"}

        assert [r["state"] for r in reports] == [state.value for state in HAPPY_PATH]
        assert {(r["device_id"], r["previous_version"], r["rollout_id"]) for r in reports} == {
            (device.device, "1.0.0", "rollout-7")
        }
        version, logits = device.infer(MODEL, digits.golden_inputs)
        assert version == "2.0.0"
        np.testing.assert_allclose(logits, digits.golden_outputs, rtol=1e-3, atol=1e-4)

        statuses = [
            m.data for m in dedup(recorder.snapshot()) if m.channel == Channel.STATUS and m.data["online"]
        ]
        latest = statuses[-1]
        assert [(m["name"], m["version"]) for m in latest["models"]] == [(MODEL, "2.0.0")]
        assert latest["ota"]["state"] == "committed"
        assert latest["ota"]["slots"][MODEL]["active"] == "a"
    finally:
        recorder.close()


def test_a_broken_version_fails_its_golden_check_on_the_device(
    device: OtaAgentProcess, fleet: Fleet, broker: MosquittoBroker, digits: DigitsReleases
) -> None:
    recorder = Recorder(broker, FLEET, device.device)
    try:
        device.start()
        load = InferenceLoad(device, MODEL, digits.golden_inputs[:1])
        try:
            publish(broker, device, 1, digits["broken"], fleet.push(digits["broken"]))
            job = device.wait_for_job(MODEL, "3.0.0", "failed")
            reports = wait_for_ota(recorder, "3.0.0", "failed")
        finally:
            load.stop()
        assert job["reason"].startswith("golden check failed: logits:")
        assert [r["state"] for r in reports] == ["assigned", "downloading", "verifying", "staged", "failed"]
        assert reports[-1]["reason"] == job["reason"]
        assert set(load.answers) == {"1.0.0"} and load.failures == []  # the broken version never served
        assert device.infer(MODEL, digits.golden_inputs[:1])[0] == "1.0.0"
    finally:
        recorder.close()


def test_a_slow_version_is_rolled_back_by_the_watch_window(
    device: OtaAgentProcess, fleet: Fleet, broker: MosquittoBroker, digits: DigitsReleases
) -> None:
    device.settings = {"watch": {"window_s": 3.0, "min_latency_samples": 20, "max_latency_ratio": 2.0}}
    device.start()
    load = InferenceLoad(device, MODEL, digits.golden_inputs[:1])
    try:
        _wait_for(lambda: len(load.answers) >= 50, "a baseline of 50 requests on 1.0.0")
        publish(broker, device, 1, digits["slow"], fleet.push(digits["slow"]))
        job = device.wait_for_job(MODEL, "4.0.0", "rolled_back")
    finally:
        load.stop()
    assert job["reason"].startswith("p95 latency ") and "the previous version's" in job["reason"]
    figures = job["details"]["watch"]
    assert figures["p95_ratio"] > 2.0
    assert figures["window"]["latency_samples"] >= 20 and figures["baseline"]["latency_samples"] >= 20
    assert load.failures == []
    assert "4.0.0" in load.answers  # it did serve, for its watch window
    assert device.infer(MODEL, digits.golden_inputs[:1])[0] == "1.0.0"


def test_an_older_version_is_refused_on_the_device_unless_the_rollback_is_explicit(
    device: OtaAgentProcess, fleet: Fleet, broker: MosquittoBroker, digits: DigitsReleases
) -> None:
    device.bundle = digits["v2"].path
    device.start()
    url = fleet.push(digits["older"])
    publish(broker, device, 1, digits["older"], url)
    job = device.wait_for_job(MODEL, "0.9.0", "failed")
    assert "version 0.9.0 is older than the installed 2.0.0" in job["reason"]
    assert device.infer(MODEL, digits.golden_inputs[:1])[0] == "2.0.0"

    publish(broker, device, 2, digits["older"], url, allow_rollback=True)
    device.wait_for_job(MODEL, "0.9.0", "committed")
    assert device.infer(MODEL, digits.golden_inputs[:1])[0] == "0.9.0"


def test_an_offline_device_converges_when_it_comes_back(
    device: OtaAgentProcess, fleet: Fleet, broker: MosquittoBroker, digits: DigitsReleases
) -> None:
    recorder = Recorder(broker, FLEET, device.device)
    try:
        device.start()
        assert device.stop() == 0  # offline for the whole rollout
        publish(broker, device, 1, digits["v2"], fleet.push(digits["v2"]), rollout_id="r-1")
        publish(
            broker, device, 2, digits["v2"], fleet.push(digits["v2"]), rollout_id="r-2"
        )  # retained: the last wins
        device.start()
        job = device.wait_for_job(MODEL, "2.0.0", "committed")
        assert (job["revision"], job["rollout_id"]) == (2, "r-2")
        assert device.infer(MODEL, digits.golden_inputs[:1])[0] == "2.0.0"
        reports = wait_for_ota(recorder, "2.0.0", "committed")
        assert {r["rollout_id"] for r in reports} == {"r-2"}
    finally:
        recorder.close()


def test_an_interrupted_download_resumes_from_where_it_stopped(
    device: OtaAgentProcess, broker: MosquittoBroker, digits: DigitsReleases
) -> None:
    """Cut once by the network, then killed mid-transfer: each time the next request asks for the rest."""
    release = digits["v2"]
    with BundleServer(username=device.username, password=device.password) as server:
        url = server.add(release)
        server.cut_at[release.sha256] = 30_000
        server.stall_at[release.sha256] = 50_000  # of the second response: 80,000 bytes in all
        device.settings = {"watch": WATCH, "download": {"retry_base_s": 0.1}}
        device.start()
        publish(broker, device, 1, release, url)
        part = device.data_dir / "ota" / "downloads" / f"{release.sha256}.efb.part"
        _wait_for(lambda: part.exists() and part.stat().st_size == 80_000, "80,000 bytes on disk")
        device.kill()
        server.unstall()
        device.start()
        device.wait_for_job(MODEL, "2.0.0", "committed")
        seen = server.requests_for(release)
        assert [(s.range, s.status) for s in seen] == [
            (None, 200),
            ("bytes=30000-", 206),
            ("bytes=80000-", 206),
        ]
        assert (seen[0].sent, seen[-1].sent) == (30_000, release.size - 80_000)
        assert device.infer(MODEL, digits.golden_inputs[:1])[0] == "2.0.0"


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- kill at every state ------------------------------------------------------------------------

GIVES_UP = {"failed": "broken", "rolled_back": "slow", "timed_out": "v2"}
"""States an update ends in without success, and the release that leads there."""


@pytest.mark.parametrize("state", [state.value for state in OtaState])
def test_killed_in_any_state_the_device_serves_a_verified_model_and_converges(
    state: str, device: OtaAgentProcess, fleet: Fleet, broker: MosquittoBroker, digits: DigitsReleases
) -> None:
    """SIGKILL right after the state is journaled and reported, then a restart without the pause."""
    target = digits[GIVES_UP.get(state, "v2")]
    device.settings = {"watch": {"window_s": 1.0, "check_interval_s": 0.1}}
    stalled: BundleServer | None = None
    load: InferenceLoad | None = None
    recorder = Recorder(broker, FLEET, device.device)
    try:
        url = fleet.push(target)
        if state == "timed_out":  # a download that never finishes, and a short step timeout
            stalled = BundleServer().start()
            url = stalled.add(target)
            stalled.stall_at[target.sha256] = 10_000
            device.settings["timeouts"] = {"downloading": 2.0}
        if state == "rolled_back":  # a slow version, judged on real traffic
            device.settings["watch"] = {"window_s": 3.0, "check_interval_s": 0.1}
        device.start(pause_at=state)
        if state == "rolled_back":
            load = InferenceLoad(device, MODEL, digits.golden_inputs[:1])
            baseline = load
            _wait_for(lambda: len(baseline.answers) >= 50, "a baseline of 50 requests")
        publish(broker, device, 1, target, url)
        device.wait_paused(state, timeout=90)
        assert device.job(MODEL)["state"] == state
        if load is not None:
            load.stop()
        device.kill()
        if stalled is not None:
            stalled.stop()

        device.start()
        version, logits = device.infer(MODEL, digits.golden_inputs)
        assert version in {"1.0.0", target.version}
        np.testing.assert_allclose(logits, digits.golden_outputs, rtol=1e-3, atol=1e-4)

        if state in GIVES_UP:
            job = device.wait_for_job(MODEL, target.version, state)
            assert job["revision"] == 1  # not retried: a failed target waits for a newer revision
            assert device.infer(MODEL, digits.golden_inputs[:1])[0] == "1.0.0"
            publish(broker, device, 2, digits["v2"], fleet.push(digits["v2"]))
        device.wait_for_job(MODEL, "2.0.0", "committed")
        assert device.infer(MODEL, digits.golden_inputs[:1])[0] == "2.0.0"

        reports = wait_for_ota(recorder, "2.0.0", "committed")
        attempts: dict[tuple[str, int, int], list[str]] = {}
        for report in reports:
            key = (report["version"], report["details"]["revision"], report["details"]["attempt"])
            attempts.setdefault(key, []).append(report["state"])
        for key, states in attempts.items():
            assert len(states) == len(set(states)), f"{key} reported a state twice: {states}"
        final = max(key for key in attempts if key[0] == "2.0.0")
        assert attempts[final] == [s.value for s in HAPPY_PATH]
        if state in ("switching", "watching"):  # the new version was serving: a crash, rolled back
            assert attempts[("2.0.0", 1, 1)][-2:] == [state, "rolled_back"]
            assert final == ("2.0.0", 1, 2)
    finally:
        recorder.close()
        if load is not None:
            load.stop()
        if stalled is not None:
            stalled.stop()
