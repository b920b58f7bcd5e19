"""The rollout controller over a real database (SQLite and PostgreSQL), one step at a time.

Devices are registry rows; their telemetry is written the way the MQTT ingest writes it (OTA
reports in ``device_events``, metrics in ``device_metrics``, drift windows in ``drift_windows``),
and the clock is the test's. This exercises every decision quickly; the end-to-end tests with
real agents are in ``test_rollout_e2e.py``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, text

from fleet.auth import Principal, Role
from fleet.db import (
    AuditEntry,
    Bundle,
    Database,
    Device,
    DeviceEvent,
    DeviceMetrics,
    DriftWindow,
    upgrade_to_head,
)
from fleet.errors import Conflict, Invalid
from fleet.rollouts import (
    ControllerSettings,
    RolloutController,
    RolloutRefused,
    SnapshotSettings,
    act,
    create_rollout,
)
from fleet.rollouts.controller import load_tracks
from fleet.rollouts.gates import GateConfig, evaluate_gates
from fleet.rollouts.locking import LOCK_CLASS, lock_key
from fleet.rollouts.models import DesiredStateRecord, Rollout, RolloutDevice
from fleet.rollouts.schemas import RolloutCreate
from fleet.rollouts.snapshot import NO_PROFILE, gather
from models.stats import ReferenceStats, build_reference_stats, count_window
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration

MODEL = "m"
OPERATOR = Principal(name="ops", role=Role.OPERATOR)
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BOUNDS = [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with ExitStack() as stack:
        url = (
            stack.enter_context(fresh_database())
            if request.param == "postgresql"
            else f"sqlite:///{tmp_path}/f.db"
        )
        db = Database(url)
        stack.callback(db.dispose)
        upgrade_to_head(db.engine)
        yield db


@dataclass
class Notes:
    """The publisher's stand-in: which devices' desired states the controller said changed."""

    nudged: list[str] = field(default_factory=list)

    def nudge(self, device_ids: Iterable[str]) -> None:
        self.nudged.extend(device_ids)


@dataclass
class References:
    """The reference catalog's stand-in: version -> reference statistics."""

    by_version: dict[str, ReferenceStats] = field(default_factory=dict)

    def for_version(self, session: Any, name: str, version: str) -> Mapping[str, Any]:
        stats = self.by_version.get(version)
        return {} if stats is None else {stats.fingerprint(): _Ref(stats)}


@dataclass(frozen=True)
class _Ref:
    stats: ReferenceStats


@dataclass
class World:
    """A small fleet in the database, a clock, and the controller."""

    db: Database
    now: datetime = START
    notes: Notes = field(default_factory=Notes)
    references: References = field(default_factory=References)
    seqs: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    controller: RolloutController = field(init=False)

    def __post_init__(self) -> None:
        self.controller = RolloutController(
            self.db,
            references=self.references,
            notifier=self.notes,
            settings=ControllerSettings(snapshot=SnapshotSettings(min_drift_samples=100)),
            clock=lambda: self.now,
        )

    def add_devices(
        self, count: int, *, version: str = "1.0.0", prefix: str = "d", profile: str | None = "p1"
    ) -> list[str]:
        ids = [f"{prefix}{i}" for i in range(count)]
        with self.db.session() as session:
            for device_id in ids:
                session.add(
                    Device(
                        id=device_id,
                        fleet="lab",
                        profile=profile,
                        models={MODEL: version},
                        online=True,
                        tags=[],
                    )
                )
        return ids

    def add_bundles(self, *versions: str) -> None:
        with self.db.session() as session:
            for version in versions:
                session.add(
                    Bundle(
                        sha256=version.replace(".", "").ljust(64, "0"),
                        name=MODEL,
                        version=version,
                        profile="p1",
                        format="onnx",
                        precision="fp32",
                        size=1000,
                        key_id="k",
                        manifest={},
                        created=START,
                    )
                )

    def create(self, version: str = "2.0.0", **options: Any) -> str:
        body = RolloutCreate(model=MODEL, version=version, **{"bake_s": 0, **options})
        with self.db.session() as session:
            return create_rollout(session, body, OPERATOR, now=self.now).id

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)
        self.controller.tick()

    def report(self, device_id: str, version: str, state: str, rollout_id: str, reason: str = "") -> None:
        payload = {
            "kind": "ota",
            "model": MODEL,
            "version": version,
            "state": state,
            "rollout_id": rollout_id,
        }
        self._event(DeviceEvent, device_id, {**payload, "reason": reason}, kind="ota")

    def commit_all(self, device_ids: Iterable[str], version: str, rollout_id: str) -> None:
        for device_id in device_ids:
            for state in ("downloading", "verifying", "staged", "switching", "watching", "committed"):
                self.report(device_id, version, state, rollout_id)

    def metrics(
        self, device_id: str, version: str, *, requests: int = 100, errors: int = 0, slow: bool = False
    ) -> None:
        counts = [0] * (len(BOUNDS) + 1)
        counts[5 if slow else 1] = requests - errors  # (25, 50] ms or (1, 2.5] ms
        entry = {
            "model": MODEL,
            "version": version,
            "requests": requests,
            "errors": {"INTERNAL": errors} if errors else {},
            "latency": {"bucket_bounds_ms": BOUNDS, "bucket_counts": counts},
        }
        self._event(DeviceMetrics, device_id, {"kind": "metrics", "models": [entry]}, model_name=MODEL)

    def drift(self, device_id: str, version: str, outputs: np.ndarray) -> None:
        reference = self.references.by_version[version]
        window = count_window(reference, outputs={"y": outputs}).to_dict()
        self._event(
            DriftWindow,
            device_id,
            {"kind": "drift", "window": window},
            model_name=MODEL,
            model_version=version,
            window_start=self.now,
            window_end=self.now,
            samples=len(outputs),
        )

    def _event(self, table: type, device_id: str, payload: dict[str, Any], **columns: Any) -> None:
        with self.db.session() as session:
            session.add(
                table(
                    device_id=device_id,
                    seq=next(self.seqs),
                    sent_at=self.now,
                    received_at=self.now,
                    payload=payload,
                    **columns,
                )
            )

    def set_running(self, device_id: str, version: str, *, online: bool = True) -> None:
        with self.db.session() as session:
            device = session.get(Device, device_id)
            assert device is not None
            device.models = {MODEL: version}
            device.online = online

    def set_online(self, device_id: str, online: bool) -> None:
        with self.db.session() as session:
            device = session.get(Device, device_id)
            assert device is not None
            device.online = online

    def rollout(self, rollout_id: str) -> Rollout:
        with self.db.session() as session:
            rollout = session.get(Rollout, rollout_id)
            assert rollout is not None
            return rollout

    def states(self, rollout_id: str) -> dict[str, str]:
        with self.db.session() as session:
            return {t.device_id: t.state for t in load_tracks(session, rollout_id)}

    def waves(self, rollout_id: str) -> dict[str, int]:
        with self.db.session() as session:
            return {t.device_id: t.wave for t in load_tracks(session, rollout_id)}

    def desired(self, device_id: str) -> dict[str, Any] | None:
        with self.db.session() as session:
            record = session.get(DesiredStateRecord, device_id)
            return None if record is None else {"revision": record.revision, **record.models}

    def audit(self, rollout_id: str) -> list[AuditEntry]:
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(AuditEntry).where(AuditEntry.target == rollout_id).order_by(AuditEntry.id)
                ).all()
            )


@pytest.fixture
def world(database: Database) -> World:
    world = World(database)
    world.add_bundles("1.0.0", "2.0.0")
    return world


def in_wave(world: World, rollout_id: str, wave: int) -> list[str]:
    return sorted(d for d, w in world.waves(rollout_id).items() if w == wave)


def commit_and_serve(world: World, rollout_id: str, devices: Iterable[str], **canary: Any) -> None:
    """The devices commit; once the controller saw the wave committed, one interval of traffic."""
    world.commit_all(devices, "2.0.0", rollout_id)
    world.tick()
    traffic(world, rollout_id, **canary)


def traffic(world: World, rollout_id: str, target: str = "2.0.0", **canary: Any) -> None:
    """One metrics interval from every device: the canary's on ``target``, the others on 1.0.0."""
    for device_id, state in world.states(rollout_id).items():
        if state == "pending":
            world.metrics(device_id, "1.0.0")
        else:
            world.metrics(device_id, target, **canary)


def test_a_good_version_goes_canary_then_waves_then_completes(world: World) -> None:
    devices = world.add_devices(4)
    rollout_id = world.create(canary="1", waves=["50%", "100%"], gates={"min_requests": 50})
    assert world.rollout(rollout_id).sizes == [1, 2, 4]
    world.tick()
    canary = in_wave(world, rollout_id, 0)
    assert [d for d, s in world.states(rollout_id).items() if s == "assigned"] == canary
    desired = world.desired(canary[0])
    assert desired is not None and desired[MODEL]["version"] == "2.0.0"
    assert desired[MODEL]["rollout_id"] == rollout_id and desired[MODEL]["allow_rollback"] is False
    assert desired[MODEL]["bundle_url"].endswith(desired[MODEL]["bundle_sha256"])
    assert world.notes.nudged == canary
    assert all(world.desired(d) is None for d in devices if d not in canary)

    world.report(canary[0], "2.0.0", "downloading", rollout_id)
    world.tick()
    assert world.states(rollout_id)[canary[0]] == "downloading"
    assert world.rollout(rollout_id).wave == 0  # not committed: installed is not good

    world.commit_all(canary, "2.0.0", rollout_id)
    traffic(world, rollout_id)
    world.tick()
    assert world.rollout(rollout_id).wave == 0  # traffic from before the wave committed is not judged
    decision = world.rollout(rollout_id).decision
    assert decision is not None and decision["verdict"] == "wait"
    traffic(world, rollout_id)
    world.tick()
    assert world.rollout(rollout_id).wave == 1
    commit_and_serve(world, rollout_id, in_wave(world, rollout_id, 1))
    world.tick()
    assert world.rollout(rollout_id).wave == 2
    commit_and_serve(world, rollout_id, in_wave(world, rollout_id, 2))
    world.tick()

    rollout = world.rollout(rollout_id)
    assert (rollout.state, rollout.settled) == ("completed", True)
    assert set(world.states(rollout_id).values()) == {"committed"}
    actions = [entry.action for entry in world.audit(rollout_id)]
    assert actions == ["rollout.create", "rollout.wave", "rollout.wave", "rollout.wave", "rollout.complete"]
    last = world.audit(rollout_id)[-1].details
    gates = {g["name"]: g for g in last["decision"]["gates"]}
    assert all(g["passed"] for g in gates.values())
    assert last["figures"]["canary"]["committed"] == 4
    assert last["figures"]["baseline"]["requests"] > 0  # the last wave has no control: its own past


def test_a_failed_canary_aborts_and_only_the_canary_ever_gets_the_version(world: World) -> None:
    devices = world.add_devices(5)
    rollout_id = world.create(canary="2", waves=["100%"])
    world.tick()
    canary = in_wave(world, rollout_id, 0)
    assert len(canary) == 2
    world.report(canary[0], "2.0.0", "failed", rollout_id, reason="golden check failed: logits")
    world.tick()

    rollout = world.rollout(rollout_id)
    assert rollout.state == "aborted"
    assert rollout.reason is not None and rollout.reason.startswith("failure_rate: 1/2 devices failed")
    states = world.states(rollout_id)
    assert states[canary[0]] == "reverted"  # it failed by itself and never left 1.0.0
    assert states[canary[1]] == "reverting"
    assert {states[d] for d in devices if d not in canary} == {"skipped"}
    for device_id in canary:
        desired = world.desired(device_id)
        assert desired is not None and desired[MODEL]["version"] == "1.0.0"
        assert desired[MODEL]["allow_rollback"] is True
    assert all(world.desired(d) is None for d in devices if d not in canary)  # never beyond the canary
    abort = world.audit(rollout_id)[-1]
    assert abort.action == "rollout.abort" and abort.actor == "rollout-controller"
    failure = next(g for g in abort.details["decision"]["gates"] if g["name"] == "failure_rate")
    assert (failure["passed"], failure["value"]) == (False, 0.5)
    assert abort.details["reverting"] == canary

    assert world.rollout(rollout_id).settled is False
    world.set_running(canary[1], "1.0.0")  # its status says it runs the previous version again
    world.tick()
    assert world.states(rollout_id)[canary[1]] == "reverted"
    assert world.rollout(rollout_id).settled is True


def test_the_latency_gate_pauses_then_an_operator_resumes_and_promotes(world: World) -> None:
    world.add_devices(4)
    rollout_id = world.create(canary="1", waves=["100%"], on_failure="pause", gates={"min_requests": 50})
    world.tick()
    canary = in_wave(world, rollout_id, 0)
    commit_and_serve(world, rollout_id, canary, slow=True)
    world.tick()
    rollout = world.rollout(rollout_id)
    assert rollout.state == "paused" and rollout.reason is not None
    assert rollout.reason.startswith("p95_latency_ratio: canary p95")
    assert rollout.decision is not None and rollout.decision["verdict"] == "pause"
    world.tick()
    assert world.rollout(rollout_id).wave == 0  # paused: nothing new is assigned

    act(world.db, rollout_id, "resume", OPERATOR, reason=None, now=world.now)
    resumed = world.rollout(rollout_id)
    assert resumed.state == "running" and resumed.window_started_at == world.now
    world.tick()  # no telemetry since the resume: waiting, not paused again
    assert world.rollout(rollout_id).state == "running"
    assert world.rollout(rollout_id).decision["verdict"] == "wait"  # type: ignore[index]

    result = act(world.db, rollout_id, "promote", OPERATOR, reason="latency is fine on site", now=world.now)
    assert set(result.desired) == set(in_wave(world, rollout_id, 1))
    assert world.rollout(rollout_id).wave == 1
    actions = [(e.action, e.actor) for e in world.audit(rollout_id)]
    assert ("rollout.pause", "rollout-controller") in actions
    assert ("rollout.resume", "token:ops") in actions and ("rollout.wave", "token:ops") in actions
    with pytest.raises(Conflict, match="cannot resume"):
        act(world.db, rollout_id, "resume", OPERATOR, reason=None, now=world.now)


def test_an_operator_abort_sends_committed_devices_back(world: World) -> None:
    world.add_devices(3)
    rollout_id = world.create(canary="1", waves=["100%"])
    world.tick()
    canary = in_wave(world, rollout_id, 0)
    world.commit_all(canary, "2.0.0", rollout_id)
    world.set_running(canary[0], "2.0.0")
    world.tick()
    result = act(world.db, rollout_id, "abort", OPERATOR, reason="customer complaint", now=world.now)
    assert result.desired == set(canary)
    assert world.states(rollout_id)[canary[0]] == "reverting"
    assert world.rollout(rollout_id).reason == "aborted by ops: customer complaint"
    world.report(canary[0], "1.0.0", "committed", rollout_id)
    world.tick()
    assert world.states(rollout_id)[canary[0]] == "reverted"


def test_a_silent_online_device_times_out_an_offline_one_waits(world: World) -> None:
    world.add_devices(4)
    rollout_id = world.create(canary="2", waves=["100%"], device_timeout_s=30)
    world.tick()
    quiet, away = in_wave(world, rollout_id, 0)
    world.set_online(away, False)
    world.tick(20)
    world.tick(20)
    rollout = world.rollout(rollout_id)
    assert rollout.state == "aborted"
    # The offline device is not counted: one failure out of one device that could answer.
    assert rollout.reason == "failure_rate: 1/1 devices failed (100%, limit 0%)"
    states = world.states(rollout_id)
    # The silent one never left 1.0.0: it is back already; the offline one goes back when it returns.
    assert states[quiet] == "reverted" and states[away] == "reverting"
    with world.db.session() as session:
        reason = next(t.reason for t in load_tracks(session, rollout_id) if t.device_id == quiet)
    assert reason is not None and "no progress for 40 s in state assigned" in reason


def test_an_offline_device_does_not_hold_the_waves_and_converges_later(world: World) -> None:
    devices = world.add_devices(3)
    world.set_online(devices[0], False)
    world.set_online(devices[1], False)
    rollout_id = world.create(canary="1", waves=["100%"], device_timeout_s=30, gates={"min_requests": 10})
    world.tick()
    canary = in_wave(world, rollout_id, 0)
    assert canary == [devices[2]]  # online devices go first
    commit_and_serve(world, rollout_id, canary)
    world.tick()
    assert world.rollout(rollout_id).wave == 1
    for _ in range(5):
        world.tick(20)  # well past the device timeout: they are offline, not failing
        traffic(world, rollout_id)
    rollout = world.rollout(rollout_id)
    assert (rollout.state, rollout.settled) == ("completed", False)
    assert world.states(rollout_id)[devices[0]] == "assigned"

    world.set_online(devices[0], True)
    world.set_online(devices[1], True)
    world.commit_all(devices[:2], "2.0.0", rollout_id)
    world.tick()
    assert set(world.states(rollout_id).values()) == {"committed"}
    assert world.rollout(rollout_id).settled is True


def test_the_drift_gate_compares_canary_with_control(world: World) -> None:
    rng = np.random.default_rng(3)
    outputs = rng.normal(size=(2000, 4)).astype(np.float32)
    for version in ("1.0.0", "2.0.0"):
        world.references.by_version[version] = _reference(outputs)
    world.add_devices(4)
    rollout_id = world.create(canary="1", waves=["100%"], gates={"min_requests": 10})
    world.tick()
    canary = in_wave(world, rollout_id, 0)
    commit_and_serve(world, rollout_id, canary)
    for device_id, state in world.states(rollout_id).items():
        same = rng.normal(size=(300, 4)).astype(np.float32)
        if state == "pending":
            world.drift(device_id, "1.0.0", same)
        else:
            world.drift(device_id, "2.0.0", same + np.array([4.0, 0, 0, 0], dtype=np.float32))  # class 0 wins
    world.tick()
    rollout = world.rollout(rollout_id)
    assert rollout.state == "aborted"
    assert rollout.reason is not None and rollout.reason.startswith("output_drift_delta: canary JS")
    figures = rollout.decision["figures"]  # type: ignore[index]
    assert figures["canary"]["output_drift"] > figures["control"]["output_drift"] + 0.1
    assert figures["canary"]["drift_samples"] == 300 and figures["control"]["drift_samples"] == 900


def test_the_snapshot_compares_latency_per_hardware_profile(world: World) -> None:
    """A slow Pi canary beside Jetson controls: per profile, the Pi against its own past, the
    Jetson canary against the Jetson controls; devices without a profile form their own group."""
    pi = world.add_devices(1, prefix="pi", profile="raspberry-pi-5")[0]
    jetsons = world.add_devices(3, prefix="jet", profile="jetson-orin")
    bare = world.add_devices(1, prefix="bare", profile=None)[0]
    canary_ids = [pi, jetsons[0], bare]
    tracks = [
        RolloutDevice(device_id=d, wave=0, profile=p, state="committed")
        for d, p in ((pi, "raspberry-pi-5"), (jetsons[0], "jetson-orin"), (bare, None))
    ] + [RolloutDevice(device_id=d, wave=1, profile="jetson-orin", state="pending") for d in jetsons[1:]]
    world.now = START + timedelta(seconds=5)  # before the wave: the Pi on its old version, as slow
    world.metrics(pi, "1.0.0", slow=True)
    world.now = START + timedelta(seconds=30)  # the wave committed at START + 20 s
    world.metrics(pi, "2.0.0", slow=True)
    world.metrics(jetsons[0], "2.0.0")
    world.metrics(bare, "2.0.0")
    for device_id in jetsons[1:]:
        world.metrics(device_id, "1.0.0")
    rollout = Rollout(
        id="r1",
        model=MODEL,
        version="2.0.0",
        bake_s=0.0,
        wave=0,
        wave_started_at=START + timedelta(seconds=10),
        wave_committed_at=START + timedelta(seconds=20),
    )
    with world.db.session() as session:
        gathered = gather(
            session,
            rollout,
            tracks,
            dict.fromkeys(canary_ids, True),
            now=START + timedelta(seconds=40),
            references=None,
        )
    snapshot = gathered.snapshot
    fast, slow = 1.0 + 1.5 * 0.95, 25.0 + 25.0 * 0.95  # p95 inside (1, 2.5] and (25, 50] ms
    pairs = [
        (p.profile, p.canary_p95_ms, p.reference_p95_ms, p.reference) for p in snapshot.latency_by_profile
    ]
    assert pairs == [
        (NO_PROFILE, pytest.approx(fast), None, "baseline"),  # nothing to compare with
        ("jetson-orin", pytest.approx(fast), pytest.approx(fast), "control"),
        ("raspberry-pi-5", pytest.approx(slow), pytest.approx(slow), "baseline"),  # no Pi control
    ]
    # Pooled, the Pi drags the canary's p95 far above the Jetson controls'.
    assert snapshot.control is not None and snapshot.control.p95_ms == pytest.approx(fast)
    assert snapshot.canary.p95_ms is not None and snapshot.canary.p95_ms > 10 * fast
    assert snapshot.baseline is None  # the control reported: the pooled gates use it
    decision = evaluate_gates(snapshot, GateConfig(min_requests=10))
    latency = next(g for g in decision.gates if g.name == "p95_latency_ratio")
    assert latency.passed is True and latency.value == pytest.approx(1.0)
    assert "also" in latency.detail and f"{NO_PROFILE} not compared" in latency.detail
    assert [p["profile"] for p in gathered.figures()["latency_by_profile"]] == [
        NO_PROFILE,
        "jetson-orin",
        "raspberry-pi-5",
    ]


def _reference(outputs: np.ndarray) -> ReferenceStats:
    return build_reference_stats({}, {"y": outputs}, layouts={"y": "NC"})


def test_an_older_version_is_refused_unless_the_rollback_is_explicit(world: World) -> None:
    world.add_devices(2, version="2.0.0")
    with pytest.raises(RolloutRefused, match=r"1\.0\.0 is older than what 2 of the 2 targeted devices run"):
        world.create("1.0.0")
    rollout_id = world.create("1.0.0", rollback=True)
    world.tick()
    canary = in_wave(world, rollout_id, 0)
    desired = world.desired(canary[0])
    assert desired is not None and desired[MODEL]["allow_rollback"] is True
    assert world.rollout(rollout_id).allow_rollback is True


def test_creation_refuses_what_cannot_work(world: World) -> None:
    world.add_devices(2)
    with pytest.raises(Invalid, match="no device matches the target profile=other"):
        world.create(target="profile=other")
    with pytest.raises(Invalid, match=r"every targeted device already runs m 1\.0\.0"):
        world.create("1.0.0")
    world.add_bundles("3.0.0")
    world.add_devices(1, version="0.5.0", prefix="old")
    with pytest.raises(Invalid, match=r"old0 runs 0\.5\.0, which the registry lacks"):
        world.create("3.0.0")
    first = world.create("2.0.0", target="device=d0")
    with pytest.raises(Conflict, match=f"rollout {first} of m is still active"):
        world.create("2.0.0", target="device=d0,profile=p1")


def test_a_restarted_controller_continues_without_repeating_a_wave(world: World) -> None:
    world.add_devices(3)
    rollout_id = world.create(canary="1", waves=["100%"], gates={"min_requests": 10})
    world.tick()
    revision = world.desired(in_wave(world, rollout_id, 0)[0])
    restarted = World(world.db, now=world.now, references=world.references, seqs=world.seqs)
    restarted.tick()
    restarted.tick()
    assert world.desired(in_wave(world, rollout_id, 0)[0]) == revision  # not assigned again
    waves = [e for e in restarted.audit(rollout_id) if e.action == "rollout.wave"]
    assert len(waves) == 1


def test_another_replica_holding_the_lock_is_left_alone(postgres_url: str) -> None:
    """PostgreSQL only: SQLite serves one process, where a mutex keeps writers apart."""
    database = Database(postgres_url)
    upgrade_to_head(database.engine)
    world = World(database)
    world.add_bundles("1.0.0", "2.0.0")
    world.add_devices(2)
    rollout_id = world.create(canary="1", waves=["100%"])
    with world.db.engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": lock_key(rollout_id)})
        assert world.controller.step(rollout_id) is None
        assert world.rollout(rollout_id).wave == -1
        other.execute(text("SELECT pg_advisory_unlock(:c, :k)"), {"c": LOCK_CLASS, "k": lock_key(rollout_id)})
    outcome = world.controller.step(rollout_id)
    assert outcome is not None and world.rollout(rollout_id).wave == 0
    database.dispose()


def test_desired_revisions_only_grow(world: World) -> None:
    world.add_devices(1)
    rollout_id = world.create(canary="1", waves=["100%"])
    world.tick()
    first = world.desired("d0")
    act(world.db, rollout_id, "abort", OPERATOR, reason=None, now=world.now)
    second = world.desired("d0")
    assert first is not None and second is not None
    assert second["revision"] > first["revision"] >= int(START.timestamp() * 1000)
    assert json.dumps(second[MODEL]["version"]) == '"1.0.0"'
