"""Rollout rows to REST responses: what ``rollout ls`` and ``rollout status`` show."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from fleet.rollouts.controller import FleetView
from fleet.rollouts.models import DesiredStateRecord, Rollout, RolloutDevice
from fleet.rollouts.planner import wave_label
from fleet.rollouts.schemas import (
    DecisionInfo,
    DesiredStateInfo,
    GateInfo,
    Promotion,
    RolloutDetail,
    RolloutDeviceInfo,
    RolloutInfo,
    WaveEnd,
    WaveInfo,
)
from fleet.rollouts.transitions import PROMOTED


def rollout_info(rollout: Rollout, states: Mapping[str, int]) -> RolloutInfo:
    return RolloutInfo(**_common(rollout, states))


def _common(rollout: Rollout, states: Mapping[str, int]) -> dict[str, Any]:
    return {
        "id": rollout.id,
        "model": rollout.model,
        "version": rollout.version,
        "target": rollout.target,
        "state": rollout.state,
        "settled": rollout.settled,
        "wave": rollout.wave,
        "waves": len(rollout.sizes),
        "devices": sum(states.values()),
        "states": dict(sorted(states.items())),
        "reason": rollout.reason,
        "promotions": promotions(rollout),
        "created_at": rollout.created_at,
        "created_by": rollout.created_by,
        "updated_at": rollout.updated_at,
        "finished_at": rollout.finished_at,
    }


def rollout_detail(rollout: Rollout, tracks: Sequence[RolloutDevice], view: FleetView) -> RolloutDetail:
    states = Counter(t.state for t in tracks)
    return RolloutDetail(
        **_common(rollout, states),
        canary=rollout.canary,
        wave_percents=rollout.percents,
        bake_s=rollout.bake_s,
        device_timeout_s=rollout.device_timeout_s,
        gates=dict(rollout.gates or {}),
        allow_rollback=rollout.allow_rollback,
        wave_started_at=rollout.wave_started_at,
        window_started_at=rollout.window_started_at,
        wave_committed_at=rollout.wave_committed_at,
        wave_list=wave_list(rollout, tracks),
        device_list=[
            RolloutDeviceInfo(
                device_id=t.device_id,
                wave=t.wave,
                state=t.state,
                reason=t.reason,
                online=view.online.get(t.device_id, False),
                running=view.running.get(t.device_id),
                previous_version=t.previous_version,
                assigned_at=t.assigned_at,
                state_at=t.state_at,
            )
            for t in tracks
        ],
        decision=decision_info(rollout.decision),
    )


def promotions(rollout: Rollout) -> list[Promotion]:
    """The waves an operator promoted past their gates."""
    return [
        Promotion(wave=wave, label=wave_label(wave), by=end.by, reason=end.reason, at=end.at)
        for wave, end in wave_ends(rollout).items()
        if end.how == PROMOTED
    ]


def wave_ends(rollout: Rollout) -> dict[int, WaveEnd]:
    """How each finished wave ended, by wave index (``transitions.end_wave``)."""
    return {
        int(data["wave"]): WaveEnd(
            how=data["how"],
            at=datetime.fromisoformat(str(data["at"])),
            by=str(data.get("by") or data.get("actor") or "?"),
            reason=data.get("reason"),
            decision=decision_info(data.get("decision")),
        )
        for data in rollout.ends
    }


def wave_list(rollout: Rollout, tracks: Sequence[RolloutDevice]) -> list[WaveInfo]:
    ends = wave_ends(rollout)
    waves = []
    previous = 0
    for index, cumulative in enumerate(rollout.sizes):
        members = [t for t in tracks if t.wave == index]
        status: Literal["pending", "current", "done"] = (
            "pending" if index > rollout.wave else "current" if index == rollout.wave else "done"
        )
        if index == rollout.wave and rollout.state in ("completed", "aborted"):
            status = "done"
        waves.append(
            WaveInfo(
                index=index,
                label=wave_label(index),
                size=cumulative - previous,
                cumulative=cumulative,
                states=dict(sorted(Counter(t.state for t in members).items())),
                status=status,
                ended=ends.get(index),
            )
        )
        previous = cumulative
    return waves


def decision_info(data: Mapping[str, Any] | None) -> DecisionInfo | None:
    if not data:
        return None
    return DecisionInfo(
        at=datetime.fromisoformat(str(data["at"])),
        wave=int(data.get("wave", -1)),
        verdict=data["verdict"],
        reason=str(data.get("reason", "")),
        gates=[GateInfo.model_validate(g) for g in data.get("gates", [])],
        figures=dict(data.get("figures") or {}),
    )


def desired_info(record: DesiredStateRecord) -> DesiredStateInfo:
    return DesiredStateInfo.model_validate(record)
