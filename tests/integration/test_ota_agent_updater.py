"""The updater in one process: real bundles, ONNX Runtime, a real HTTP server, real files.

Each test builds a "device" (an engine with the factory bundle installed, and an updater on its
own data directory), hands it desired states as the telemetry would, and checks what it
reported, what it serves by default, and what its journal and slots say.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.ota import (
    HAPPY_PATH,
    DownloadSettings,
    StepTimeouts,
    Updater,
    UpdaterSettings,
    WatchPolicy,
)
from edge_agent.serving import InferenceEngine, InferRequest, InputTensor, ModelState, ServingError
from models.mqtt_contract import DesiredState, OtaPayload
from tests.integration.test_ota_agent_support import BundleServer, desired_state
from tests.support.bundles import fixed_private_key
from tests.support.ota_bundles import GATHER_NAME, Release, gather_release, tiny_release

pytestmark = pytest.mark.integration

TINY = "tiny-linear"
KEY = fixed_private_key()
FAST_WATCH = WatchPolicy(window_s=0.5, check_interval_s=0.05)


@dataclass
class Device:
    data_dir: Path
    engine: InferenceEngine
    updater: Updater
    reports: list[OtaPayload] = field(default_factory=list)

    def converge(self, desired: DesiredState, timeout: float = 60.0) -> list[OtaPayload]:
        """Hand ``desired`` over and wait until the updater is idle; returns the new reports."""
        before = len(self.reports)
        self.updater.on_desired(desired)
        assert self.updater.wait_idle(timeout), f"not idle after {timeout} s: {self.states()}"
        return self.reports[before:]

    def states(self, reports: list[OtaPayload] | None = None) -> list[str]:
        return [r.state for r in (self.reports if reports is None else reports)]

    def default_version(self, model: str = TINY) -> str:
        return self.engine.infer(_request(model)).model_version

    def ready(self, model: str = TINY) -> set[str]:
        return {e.version for e in self.engine.index() if e.name == model and e.state is ModelState.READY}

    def wait_for_state(self, state: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while state not in self.states():
            assert time.monotonic() < deadline, f"never reached {state}: {self.states()}"
            time.sleep(0.02)


def _request(model: str = TINY, index: int = 0) -> InferRequest:
    if model == GATHER_NAME:
        return InferRequest(model, [InputTensor.from_array("indices", np.array([index], dtype=np.int64))])
    return InferRequest(model, [InputTensor.from_array("x", np.ones((1, 4), np.float32))])


class DeviceFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: list[Device] = []

    def __call__(
        self,
        factory: Release | None,
        *,
        name: str = "device",
        settings: UpdaterSettings | None = None,
        pause_at: str = "",
        report: Callable[[OtaPayload], None] | None = None,
        resume: bool = True,
    ) -> Device:
        data_dir = self.root / name
        engine = InferenceEngine.create(data_dir=data_dir, trusted_keys=[KEY.public_key()])
        if factory is not None:
            engine.install(factory.path)
        reports: list[OtaPayload] = []
        updater = Updater(
            engine,
            data_dir=data_dir,
            trusted_keys=[KEY.public_key()],
            device_id=name,
            report=report or reports.append,
            settings=settings or UpdaterSettings(watch=FAST_WATCH),
            pause_at=pause_at,
        )
        device = Device(data_dir, engine, updater, reports)
        self.devices.append(device)
        if resume:
            updater.resume()
        return device

    def close(self) -> None:
        for device in self.devices:
            device.updater.stop(timeout=10)
            device.engine.close()


@pytest.fixture
def make_device(tmp_path: Path) -> Iterator[DeviceFactory]:
    factory = DeviceFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def server() -> Iterator[BundleServer]:
    with BundleServer() as bundle_server:
        yield bundle_server


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Release]:
    out = tmp_path_factory.mktemp("tiny")
    releases = {version: tiny_release(out, version) for version in ("1.0.0", "2.0.0", "3.0.0")}
    releases["broken"] = tiny_release(out, "3.1.0", broken_golden=True)
    return releases


def _desired(server: BundleServer, revision: int, release: Release, **options: Any) -> DesiredState:
    return desired_state(revision, {release.name: (release, server.add(release))}, **options)


class Traffic:
    """Requests without a version from a background thread, until stopped; remembers every answer."""

    def __init__(self, engine: InferenceEngine, make: Callable[[int], InferRequest]) -> None:
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(engine, make), daemon=True)
        self._thread.start()

    def _run(self, engine: InferenceEngine, make: Callable[[int], InferRequest]) -> None:
        count = 0
        while not self._stop.is_set():
            try:
                self.answers.append(engine.infer(make(count)).model_version)
            except ServingError as exc:
                self.failures.append(exc.status)
            count += 1
            time.sleep(0.002)

    def wait_for(self, answers: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < answers:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers in {timeout} s"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# --- the way through -------------------------------------------------------------------------------


def test_a_good_version_is_committed_and_served_by_default(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    device = make_device(tiny["1.0.0"])
    reports = device.converge(_desired(server, 1, tiny["2.0.0"], rollout_id="r-1"))
    assert device.states(reports) == [state.value for state in HAPPY_PATH]
    assert {(r.model, r.version, r.previous_version, r.rollout_id) for r in reports} == {
        (TINY, "2.0.0", "1.0.0", "r-1")
    }
    by_state = {r.state: r for r in reports}
    assert by_state["verifying"].details["bytes"] == tiny["2.0.0"].size
    assert by_state["switching"].details["golden"]["outputs"]["y"]["passed"] is True
    assert by_state["committed"].details["watch"]["window"]["requests"] == 0

    assert device.default_version() == "2.0.0"
    assert device.ready() == {"2.0.0"}  # the old version was unloaded at commit
    journal = device.updater.journal()
    slots = journal.models[TINY]
    assert slots.active == "a" and slots.slots["a"].version == "2.0.0" and slots.slots["a"].committed
    assert (device.data_dir / slots.slots["a"].directory / "model.onnx").is_file()
    assert not any((device.data_dir / "ota" / "downloads").iterdir())
    status = device.updater.slot_state()
    assert (status.active, status.state) == ("a", "committed")


def test_no_request_fails_while_the_version_switches(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    device = make_device(tiny["1.0.0"], settings=UpdaterSettings(watch=WatchPolicy(window_s=1.0)))
    traffic = Traffic(device.engine, lambda i: _request())
    try:
        traffic.wait_for(20)
        reports = device.converge(_desired(server, 1, tiny["2.0.0"]))
        traffic.wait_for(len(traffic.answers) + 20)
    finally:
        traffic.stop()
    assert device.states(reports)[-1] == "committed"
    assert traffic.failures == []
    assert {"1.0.0", "2.0.0"} <= set(traffic.answers)
    switched = traffic.answers.index("2.0.0")
    assert set(traffic.answers[switched:]) == {"2.0.0"}  # once switched, never back


def test_a_version_that_fails_its_golden_check_never_serves(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    device = make_device(tiny["1.0.0"])
    traffic = Traffic(device.engine, lambda i: _request())
    try:
        reports = device.converge(_desired(server, 1, tiny["broken"]))
    finally:
        traffic.stop()
    assert device.states(reports) == ["assigned", "downloading", "verifying", "staged", "failed"]
    failed = reports[-1]
    assert failed.reason.startswith("golden check failed: y:")
    assert failed.details["golden"]["outputs"]["y"]["top1_agreement"] == 0.0
    assert set(traffic.answers) == {"1.0.0"} and traffic.failures == []
    assert device.ready() == {"1.0.0"}  # the broken version was unloaded again
    assert device.updater.journal().models[TINY].active is None  # nothing was committed


def test_errors_in_the_watch_window_roll_back_to_the_previous_version(
    make_device: DeviceFactory, server: BundleServer, tmp_path: Path
) -> None:
    healthy = gather_release(tmp_path / "g", "1.0.0", faulty=False)
    faulty = gather_release(tmp_path / "g", "2.0.0", faulty=True)
    watch = WatchPolicy(window_s=3.0, min_requests=20, check_interval_s=0.05)
    device = make_device(healthy, settings=UpdaterSettings(watch=watch))
    # Indices 0..19: the healthy table has them all; the faulty one fails for 10..19.
    traffic = Traffic(device.engine, lambda i: _request(GATHER_NAME, i % 20))
    try:
        traffic.wait_for(50)  # a baseline for the old version
        reports = device.converge(_desired(server, 1, faulty))
    finally:
        traffic.stop()
    assert device.states(reports)[-3:] == ["switching", "watching", "rolled_back"]
    rolled = reports[-1]
    assert rolled.reason.startswith("error rate ") and "0.0% before" in rolled.reason
    assert rolled.details["watch"]["window"]["errors"] > 0
    assert device.default_version(GATHER_NAME) == "1.0.0"
    assert device.ready(GATHER_NAME) == {"1.0.0"}
    assert "INTERNAL" in traffic.failures  # the faulty version did serve, briefly


def test_an_older_version_is_refused_unless_the_rollback_is_explicit(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    device = make_device(tiny["2.0.0"])
    refused = device.converge(_desired(server, 1, tiny["1.0.0"]))
    assert device.states(refused) == ["assigned", "downloading", "verifying", "failed"]
    assert "older than the installed 2.0.0" in refused[-1].reason
    assert device.default_version() == "2.0.0"

    allowed = device.converge(_desired(server, 2, tiny["1.0.0"], allow_rollback=True))
    assert device.states(allowed)[-1] == "committed"
    assert device.default_version() == "1.0.0"
    assert device.ready() == {"1.0.0"}


def test_a_revision_not_newer_than_the_last_is_ignored(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    device = make_device(tiny["1.0.0"])
    device.converge(_desired(server, 5, tiny["2.0.0"]))
    assert device.converge(_desired(server, 5, tiny["3.0.0"])) == []
    assert device.converge(_desired(server, 4, tiny["3.0.0"])) == []
    assert device.default_version() == "2.0.0"
    assert device.updater.journal().revision == 5


def test_a_failed_target_is_tried_again_only_for_a_newer_revision(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    device = make_device(tiny["1.0.0"])
    # Idle right after the failure: the worker planned nothing more for this revision.
    assert device.states(device.converge(_desired(server, 1, tiny["broken"])))[-1] == "failed"
    assert device.states().count("assigned") == 1
    again = device.converge(_desired(server, 2, tiny["broken"]))
    assert device.states(again) == ["assigned", "downloading", "verifying", "staged", "failed"]
    assert again[-1].details["revision"] == 2


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda out: tiny_release(out, "2.0.0", key=fixed_private_key(9)),
            "bundle refused: the bundle is signed by key",
        ),
        (
            lambda out: tiny_release(out, "2.0.0", min_agent_version="99.0.0"),
            "the bundle needs agent 99.0.0 or newer",
        ),
    ],
    ids=["untrusted-signer", "newer-agent-needed"],
)
def test_a_bundle_the_device_must_not_run_is_refused_while_verifying(
    make_device: DeviceFactory,
    server: BundleServer,
    tiny: dict[str, Release],
    tmp_path: Path,
    make: Callable[[Path], Release],
    reason: str,
) -> None:
    device = make_device(tiny["1.0.0"])
    reports = device.converge(_desired(server, 1, make(tmp_path / "refused")))
    assert device.states(reports) == ["assigned", "downloading", "verifying", "failed"]
    assert reports[-1].reason.startswith(reason)
    assert device.default_version() == "1.0.0"
    assert not any((device.data_dir / "ota" / "downloads").iterdir())  # nothing refused is kept


# --- downloads -----------------------------------------------------------------------------------


def test_a_download_cut_off_resumes_from_the_bytes_it_has(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    release = tiny["2.0.0"]
    server.cut_at[release.sha256] = 3000
    device = make_device(
        tiny["1.0.0"],
        settings=UpdaterSettings(watch=FAST_WATCH, download=DownloadSettings(retry_base_s=0.05)),
    )
    reports = device.converge(_desired(server, 1, release))
    assert device.states(reports)[-1] == "committed"
    seen = server.requests_for(release)
    assert [(s.range, s.status, s.sent) for s in seen] == [
        (None, 200, 3000),
        ("bytes=3000-", 206, release.size - 3000),
    ]
    assert next(r for r in reports if r.state == "verifying").details["requests"] == 2


def test_a_newer_desired_state_replaces_a_stalled_download(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    server.stall_at[tiny["2.0.0"].sha256] = 2048
    device = make_device(tiny["1.0.0"])
    device.updater.on_desired(_desired(server, 1, tiny["2.0.0"]))
    device.wait_for_state("downloading")
    reports = device.converge(_desired(server, 2, tiny["3.0.0"]))
    replaced = [r for r in device.reports if r.version == "2.0.0"]
    assert replaced[-1].state == "failed"
    assert replaced[-1].reason == "replaced by desired revision 2"
    assert device.states(reports)[-1] == "committed" and reports[-1].version == "3.0.0"
    assert device.default_version() == "3.0.0"


def test_a_step_that_overruns_its_timeout_times_out(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    server.stall_at[tiny["2.0.0"].sha256] = 2048
    settings = UpdaterSettings(watch=FAST_WATCH, timeouts=StepTimeouts(downloading=1.0))
    device = make_device(tiny["1.0.0"], settings=settings)
    reports = device.converge(_desired(server, 1, tiny["2.0.0"]))
    assert device.states(reports) == ["assigned", "downloading", "timed_out"]
    assert reports[-1].reason == "downloading did not finish within 1 s"
    assert device.default_version() == "1.0.0"
    server.unstall()


def test_refused_credentials_fail_with_what_to_check(
    make_device: DeviceFactory, tiny: dict[str, Release]
) -> None:
    from edge_agent.ota import Credentials

    with BundleServer(username="dev-1", password="right") as guarded:
        settings = UpdaterSettings(watch=FAST_WATCH, credentials=Credentials("dev-1", "wrong"))
        device = make_device(tiny["1.0.0"], settings=settings)
        reports = device.converge(_desired(guarded, 1, tiny["2.0.0"]))
        assert device.states(reports)[-1] == "failed"
        assert "refused the device's credentials" in reports[-1].reason
        assert "MQTT user name and password" in reports[-1].reason
        assert [s.status for s in guarded.seen] == [401]

        good = make_device(
            tiny["1.0.0"],
            name="good",
            settings=UpdaterSettings(watch=FAST_WATCH, credentials=Credentials("dev-1", "right")),
        )
        assert good.states(good.converge(_desired(guarded, 1, tiny["2.0.0"])))[-1] == "committed"


def test_bytes_that_are_not_the_announced_bundle_are_refused(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    announced, served = tiny["2.0.0"], tiny["3.0.0"]
    assert announced.size == served.size  # the same size: only the hash can tell them apart
    desired = desired_state(1, {TINY: (announced, server.add(served))})
    settings = UpdaterSettings(watch=FAST_WATCH, download=DownloadSettings(max_failures=2, retry_base_s=0.01))
    device = make_device(tiny["1.0.0"], settings=settings)
    reports = device.converge(desired)
    assert device.states(reports)[-1] == "failed"
    assert f"not the announced {announced.sha256}" in reports[-1].reason
    assert device.default_version() == "1.0.0"


# --- restarts ------------------------------------------------------------------------------------


def test_a_restarted_agent_serves_its_committed_slot_and_reports_nothing_again(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    first = make_device(tiny["1.0.0"], name="dev")
    first.converge(_desired(server, 1, tiny["2.0.0"]))
    first.updater.stop()
    first.engine.close()

    again = make_device(tiny["1.0.0"], name="dev")  # the configuration still names 1.0.0
    assert again.updater.wait_idle(10)
    assert again.default_version() == "2.0.0"
    assert again.ready() == {"2.0.0"}
    served = again.engine.loaded_models()[0].installed.directory
    assert served.is_relative_to(again.data_dir / "slots" / TINY / "a")
    assert again.reports == []


def test_a_damaged_active_slot_falls_back_to_the_previous_committed_one(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    first = make_device(tiny["1.0.0"], name="dev")
    first.converge(_desired(server, 1, tiny["2.0.0"]))  # slot a
    first.converge(_desired(server, 2, tiny["3.0.0"]))  # slot b, active
    first.updater.stop()
    first.engine.close()
    journal = first.updater.journal()
    assert journal.models[TINY].active == "b"
    model = first.data_dir / journal.models[TINY].slots["b"].directory / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")

    again = make_device(tiny["1.0.0"], name="dev")
    assert again.updater.wait_idle(30)
    # It served 2.0.0 from slot a, then converged to the desired 3.0.0 once more.
    assert again.states() == [state.value for state in HAPPY_PATH]
    assert {r.previous_version for r in again.reports} == {"2.0.0"}
    assert again.default_version() == "3.0.0"


def test_a_restart_in_the_watch_window_rolls_back_then_tries_again(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    first = make_device(tiny["1.0.0"], name="dev", pause_at="watching")
    first.updater.on_desired(_desired(server, 1, tiny["2.0.0"]))
    first.wait_for_state("watching")
    assert first.default_version() == "2.0.0"  # switched, not yet committed
    # The "crash": a second agent takes over the data directory while the first never finishes.
    again = make_device(tiny["1.0.0"], name="dev")
    assert again.updater.wait_idle(30)
    assert again.states() == ["rolled_back", *[state.value for state in HAPPY_PATH]]
    rolled = again.reports[0]
    assert rolled.reason.startswith("the agent restarted while watching")
    assert rolled.details["attempt"] == 1 and rolled.details["interrupted_in"] == "watching"
    assert again.reports[-1].details["attempt"] == 2
    assert again.default_version() == "2.0.0"


def test_a_job_resumed_after_a_restart_yields_to_a_newer_desired_state(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    first = make_device(tiny["1.0.0"], name="dev", pause_at="downloading")
    first.updater.on_desired(_desired(server, 1, tiny["2.0.0"]))
    first.wait_for_state("downloading")
    again = make_device(tiny["1.0.0"], name="dev", resume=False)
    again.updater.on_desired(_desired(server, 2, tiny["3.0.0"]))  # arrived while it was down
    again.updater.resume()
    assert again.updater.wait_idle(30)
    replaced = [r for r in again.reports if r.version == "2.0.0"]
    assert [(r.state, r.reason) for r in replaced] == [("failed", "replaced by desired revision 2")]
    assert again.reports[-1].version == "3.0.0" and again.reports[-1].state == "committed"
    assert again.default_version() == "3.0.0"


def test_a_transition_the_reporter_could_not_take_is_reported_after_the_restart(
    make_device: DeviceFactory, server: BundleServer, tiny: dict[str, Release]
) -> None:
    taken: list[OtaPayload] = []

    def flaky(payload: OtaPayload) -> None:
        if payload.state == "committed":
            raise OSError("the spool is closed")
        taken.append(payload)

    first = make_device(tiny["1.0.0"], name="dev", report=flaky)
    first.updater.on_desired(_desired(server, 1, tiny["2.0.0"]))
    assert first.updater.wait_idle(30)
    assert [r.state for r in taken][-1] == "watching"
    assert first.updater.journal().jobs[TINY].reported is False
    first.updater.stop()
    first.engine.close()

    again = make_device(tiny["1.0.0"], name="dev")
    assert again.updater.wait_idle(30)
    assert [(r.version, r.state) for r in again.reports] == [("2.0.0", "committed")]
    assert again.updater.journal().jobs[TINY].reported is True
