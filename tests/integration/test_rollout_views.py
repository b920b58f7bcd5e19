"""What `rollout status`, `rollout ls` and the audit log are told, over a real database (SQLite and
PostgreSQL) (issue 18, items 3 to 5):

- a wave an operator promoted is recorded as promoted (who, why, when, over which decision), not
  as passed, in the REST schema, the completion reason and the audit log;
- the figures say what the gates compared the canary with when no control device exists;
- a device's ``running`` version is the one it serves, as its last status says, also while an
  update or a revert has two versions loaded.

The rollout setup is the controller tests' (``World``); device statuses go through the MQTT
ingest's writer (``BatchWriter``), as the server stores them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fleet.db import Database, upgrade_to_head
from fleet.ingest.decode import Message
from fleet.ingest.writer import BatchWriter
from fleet.metrics import IngestMetrics
from fleet.rollouts import act
from fleet.rollouts.controller import fleet_view, load_tracks
from fleet.rollouts.schemas import RolloutDetail, RolloutInfo
from fleet.rollouts.service import get_rollout, state_counts
from fleet.rollouts.views import rollout_detail, rollout_info
from models.mqtt_contract import Channel, ModelState, SlotState, StatusPayload, encode, topic
from tests.integration.test_rollout_controller import (
    MODEL,
    OPERATOR,
    World,
    commit_and_serve,
    in_wave,
    traffic,
)
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration


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


@pytest.fixture
def world(database: Database) -> World:
    world = World(database)
    world.add_bundles("1.0.0", "2.0.0")
    return world


def detail_of(world: World, rollout_id: str) -> RolloutDetail:
    with world.db.session() as session:
        rollout = get_rollout(session, rollout_id)
        tracks = load_tracks(session, rollout_id)
        return rollout_detail(
            rollout, tracks, fleet_view(session, rollout.model, [t.device_id for t in tracks])
        )


def info_of(world: World, rollout_id: str) -> RolloutInfo:
    with world.db.session() as session:
        rollout = get_rollout(session, rollout_id)
        return rollout_info(rollout, state_counts(session, [rollout_id])[rollout_id])


# --- 3. promoted, not passed --------------------------------------------------------------------------


def test_the_tours_promote_is_recorded_as_a_promote_with_who_and_why(world: World) -> None:
    """One idle lab device, canary 1, waves 100%: the gates wait for traffic; the operator promotes."""
    world.add_devices(1)
    rollout_id = world.create(canary="1", waves=["100%"])
    world.tick()
    world.commit_all(in_wave(world, rollout_id, 0), "2.0.0", rollout_id)
    world.tick()
    world.tick()
    waiting = world.rollout(rollout_id).decision
    assert waiting is not None and waiting["verdict"] == "wait"

    act(world.db, rollout_id, "promote", OPERATOR, reason="idle lab device", now=world.now)
    world.tick()

    rollout = world.rollout(rollout_id)
    assert rollout.state == "completed"
    assert rollout.reason == "completed: canary promoted by ops (idle lab device)"
    detail = detail_of(world, rollout_id)
    (canary,) = detail.wave_list
    assert canary.ended is not None
    assert (canary.ended.how, canary.ended.by, canary.ended.reason) == ("promoted", "ops", "idle lab device")
    assert canary.ended.at == world.now - timedelta(seconds=1)
    assert canary.ended.decision is not None and canary.ended.decision.verdict == "wait"
    assert [(p.label, p.by, p.reason) for p in detail.promotions] == [("canary", "ops", "idle lab device")]
    assert info_of(world, rollout_id).promotions == detail.promotions
    assert detail.model_dump(mode="json")["wave_list"][0]["ended"]["how"] == "promoted"

    entries = world.audit(rollout_id)
    promote = next(e for e in entries if e.action == "rollout.promote")
    assert promote.actor == "token:ops"
    assert promote.details["reason"] == "idle lab device"
    assert (promote.details["wave"], promote.details["label"]) == (0, "canary")
    assert promote.details["decision"]["verdict"] == "wait"  # what the operator overrode
    complete = entries[-1]
    assert complete.action == "rollout.complete" and complete.actor == "token:ops"
    assert complete.details["reason"] == rollout.reason


def test_promoted_and_passed_waves_are_told_apart(world: World) -> None:
    world.add_devices(4)
    rollout_id = world.create(canary="1", waves=["50%", "100%"], gates={"min_requests": 50})
    world.tick()
    commit_and_serve(world, rollout_id, in_wave(world, rollout_id, 0))
    world.tick()
    assert world.rollout(rollout_id).wave == 1  # the canary passed its gates
    act(world.db, rollout_id, "promote", OPERATOR, reason="night shift", now=world.now)
    assert world.rollout(rollout_id).wave == 2
    commit_and_serve(world, rollout_id, in_wave(world, rollout_id, 1) + in_wave(world, rollout_id, 2))
    world.tick()

    rollout = world.rollout(rollout_id)
    assert rollout.state == "completed"
    assert rollout.reason == (
        "completed: canary passed its gates; wave 1 promoted by ops (night shift); wave 2 passed its gates"
    )
    ends = [w.ended for w in detail_of(world, rollout_id).wave_list]
    assert [(e.how, e.by) for e in ends if e is not None] == [
        ("passed", "rollout-controller"),
        ("promoted", "ops"),
        ("passed", "rollout-controller"),
    ]
    assert ends[0] is not None and ends[0].decision is not None and ends[0].decision.verdict == "proceed"
    assert [p.label for p in info_of(world, rollout_id).promotions] == ["wave 1"]
    waves = [e.details for e in world.audit(rollout_id) if e.action == "rollout.wave"]
    assert [(d["wave"], d["label"]) for d in waves] == [(0, "canary"), (1, "wave 1"), (2, "wave 2")]
    assert waves[2]["promoted_by"] == "ops" and waves[2]["reason"] == "night shift"


def test_a_rollout_that_passed_every_gate_says_so(world: World) -> None:
    world.add_devices(2)
    rollout_id = world.create(canary="1", waves=["100%"], gates={"min_requests": 50})
    world.tick()
    commit_and_serve(world, rollout_id, in_wave(world, rollout_id, 0))
    world.tick()
    commit_and_serve(world, rollout_id, in_wave(world, rollout_id, 1))
    world.tick()
    assert world.rollout(rollout_id).reason == "every wave committed and passed its gates"
    assert info_of(world, rollout_id).promotions == []


# --- 4. what the gates compared with -----------------------------------------------------------------


@pytest.mark.parametrize("served_before", [True, False])
def test_a_lone_canary_is_compared_with_its_own_past_or_nothing(world: World, served_before: bool) -> None:
    (device,) = world.add_devices(1)
    if served_before:
        world.metrics(device, "1.0.0")  # the canary's own traffic on 1.0.0, before its wave
    rollout_id = world.create(canary="1", waves=["100%"], gates={"min_requests": 50})
    world.tick()
    commit_and_serve(world, rollout_id, [device])
    world.tick()

    decision = world.rollout(rollout_id).decision
    assert decision is not None
    figures = decision["figures"]
    assert figures["control"] is None and figures["control_devices"] == 0
    assert figures["baseline_window"]["wave"] == 0
    assert figures["baseline_window"]["versions"] == ["1.0.0"]
    assert figures["baseline"]["requests"] == (100 if served_before else 0)
    against = {g["name"]: g.get("against") for g in decision["gates"]}
    if served_before:
        assert against["error_rate_delta"] == "baseline"
        assert against["p95_latency_ratio"] == "baseline"
    else:
        assert against["error_rate_delta"] == "zero"
        assert against["p95_latency_ratio"] is None
    assert against["output_drift_delta"] is None  # no reference statistics in this world


def test_control_devices_are_counted_before_they_are_compared(world: World) -> None:
    world.add_devices(3)
    rollout_id = world.create(canary="1", waves=["100%"], gates={"min_requests": 50})
    world.tick()
    world.tick()
    decision = world.rollout(rollout_id).decision
    assert decision is not None and decision["figures"]["control_devices"] == 2
    commit_and_serve(world, rollout_id, in_wave(world, rollout_id, 0))
    traffic(world, rollout_id)
    world.tick()
    decision = world.rollout(rollout_id).decision
    assert decision is not None
    assert decision["figures"]["control"]["reporting"] == 2
    assert {g["name"]: g.get("against") for g in decision["gates"]}["error_rate_delta"] == "control"


# --- 5. the running version ------------------------------------------------------------------------


class Device:
    """One device's statuses, through the ingest's writer as the server stores them."""

    def __init__(self, world: World, device_id: str) -> None:
        self.world = world
        self.device_id = device_id
        self.writer = BatchWriter(world.db, IngestMetrics(CollectorRegistry()))
        self.seq = 1000

    def status(self, loaded: list[str], *, slots: dict[str, str], active: str | None, state: str) -> None:
        self.seq += 1
        payload = StatusPayload(
            device_id=self.device_id,
            seq=self.seq,
            online=True,
            fleet="lab",
            models=[ModelState(name=MODEL, version=v, format="onnx", precision="fp32") for v in loaded],
            ota=SlotState(
                active=active,
                slots={
                    MODEL: {"active": active, **{s: {"version": v, "sha256": "0"} for s, v in slots.items()}}
                },
                state=state,
            ),
        )
        message = Message(topic("lab", self.device_id, Channel.STATUS), encode(payload), self.world.now)
        result = self.writer.write([message])
        assert result.stored["status"] == 1, result

    def running(self, rollout_id: str) -> str | None:
        shown = {d.device_id: d.running for d in detail_of(self.world, rollout_id).device_list}
        return shown[self.device_id]


def test_running_is_what_the_device_serves_while_it_updates_and_reverts(world: World) -> None:
    (device_id,) = world.add_devices(1)
    device = Device(world, device_id)
    device.status(["1.0.0"], slots={}, active=None, state="idle")
    rollout_id = world.create(canary="1", waves=["100%"])
    world.tick()
    assert device.running(rollout_id) == "1.0.0"

    # Staged: 2.0.0 is loaded beside 1.0.0, which still serves.
    device.status(["1.0.0", "2.0.0"], slots={"a": "2.0.0"}, active=None, state="staged")
    assert device.running(rollout_id) == "1.0.0"
    # Switched: 2.0.0 serves; 1.0.0 stays loaded through the watch window.
    device.status(["1.0.0", "2.0.0"], slots={"a": "2.0.0"}, active=None, state="switching")
    assert device.running(rollout_id) == "2.0.0"
    world.commit_all([device_id], "2.0.0", rollout_id)
    device.status(["2.0.0"], slots={"a": "2.0.0"}, active="a", state="committed")
    world.tick()
    assert device.running(rollout_id) == "2.0.0"

    act(world.db, rollout_id, "abort", OPERATOR, reason="customer complaint", now=world.now)
    # Going back: 1.0.0 is staged into the other slot, switched to, and watched, 2.0.0 still loaded.
    device.status(["1.0.0", "2.0.0"], slots={"a": "2.0.0", "b": "1.0.0"}, active="a", state="staged")
    assert device.running(rollout_id) == "2.0.0"
    device.status(["1.0.0", "2.0.0"], slots={"a": "2.0.0", "b": "1.0.0"}, active="a", state="switching")
    world.tick()
    assert device.running(rollout_id) == "1.0.0"  # it serves 1.0.0 again, in its watch window
    # ... but going back is only done once the device committed it: its watch window may fail.
    assert world.states(rollout_id)[device_id] == "reverting"
    device.status(["1.0.0"], slots={"a": "2.0.0", "b": "1.0.0"}, active="b", state="committed")
    world.tick()
    assert device.running(rollout_id) == "1.0.0"
    assert world.states(rollout_id)[device_id] == "reverted"


def test_running_after_the_agent_rolled_back_in_its_watch_window(world: World) -> None:
    (device_id,) = world.add_devices(1)
    device = Device(world, device_id)
    rollout_id = world.create(canary="1", waves=["100%"], on_failure="pause")
    world.tick()
    device.status(["1.0.0", "2.0.0"], slots={"a": "2.0.0"}, active=None, state="watching")
    assert device.running(rollout_id) == "2.0.0"
    # The watch window failed: back to 1.0.0; a retry may keep 2.0.0 loaded.
    device.status(["1.0.0", "2.0.0"], slots={"a": "2.0.0"}, active=None, state="rolled_back")
    assert device.running(rollout_id) == "1.0.0"
    device.status(["1.0.0"], slots={"a": "2.0.0"}, active=None, state="rolled_back")
    assert device.running(rollout_id) == "1.0.0"
