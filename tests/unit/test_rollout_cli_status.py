"""`edgefleet rollout status`, `ls` and `status --watch`: what they say after a promote, what the
gates compare against when there is no control, and how `--watch` behaves on a finished rollout
and when its output is not a terminal (issue 18, items 3, 4 and 6).

The CLI runs against a fake server (an ``httpx.MockTransport`` behind the real ``FleetClient``), so
the JSON goes through the same schemas as against a real server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgefleet.cli import _client, rollout
from fleet.rollouts.schemas import (
    DecisionInfo,
    GateInfo,
    Promotion,
    RolloutDetail,
    RolloutInfo,
    WaveEnd,
    WaveInfo,
)
from tests.unit.test_rollout_cli import T0, detail, rendered

WIDE = {"COLUMNS": "200"}  # the assertions read whole phrases; width is the console helper's business
ARGS = ["--server", "http://fleet.test", "--token", "t"]

WAITING = DecisionInfo(
    at=T0,
    wave=0,
    verdict="wait",
    reason="not enough data yet for error_rate_delta, p95_latency_ratio, output_drift_delta",
    gates=[
        GateInfo(name="failure_rate", passed=True, value=0.0, threshold=0.0, detail="0/1 devices failed"),
        GateInfo(
            name="error_rate_delta", passed=None, value=None, threshold=0.02, detail="1/1 reporting, 0/20"
        ),
        GateInfo(
            name="p95_latency_ratio", passed=None, value=None, threshold=1.5, detail="1/1 reporting, 0/20"
        ),
        GateInfo(name="output_drift_delta", passed=None, value=None, threshold=0.1, detail="1/1 reporting"),
    ],
    figures={
        "canary": {"devices": 1, "committed": 1, "reporting": 1, "requests": 0},
        "control": None,
        "control_devices": 0,
        "baseline": {"devices": 1, "reporting": 1, "requests": 0, "p95_ms": None, "output_drift": None},
        "baseline_window": {
            "wave": 0,
            "versions": ["1.0.0"],
            "since": T0.isoformat(),
            "until": T0.isoformat(),
        },
    },
)


def promoted_tour_rollout() -> RolloutDetail:
    """The README tour after `rollout promote $ID --reason "idle lab device"`: one device, one wave."""
    at = T0 + timedelta(seconds=30)
    end = WaveEnd(how="promoted", at=at, by="admin", reason="idle lab device", decision=WAITING)
    return detail(
        state="completed",
        settled=True,
        wave=0,
        waves=1,
        devices=1,
        states={"committed": 1},
        reason="completed: canary promoted by admin (idle lab device)",
        finished_at=at,
        wave_percents=[100.0],
        wave_list=[
            WaveInfo(
                index=0,
                label="canary",
                size=1,
                cumulative=1,
                states={"committed": 1},
                status="done",
                ended=end,
            )
        ],
        device_list=[],
        decision=WAITING,
        promotions=[Promotion(wave=0, label="canary", by="admin", reason="idle lab device", at=at)],
    )


# --- 3. a promoted wave was promoted, not passed ------------------------------------------------------


def test_status_after_a_promote_says_who_promoted_and_does_not_show_stale_gates_as_live() -> None:
    text = rendered(promoted_tour_rollout())
    assert "every wave committed and passed its gates" not in text
    assert "canary promoted by admin (idle lab device)" in text
    # The gates that stood when the operator promoted are labelled as such, not as live ones.
    assert "… waiting" not in text
    assert "gates of the canary when admin promoted it" in text
    assert "promoted by admin" in text.split("gates of the canary")[1]
    # The waves table says how each wave ended.
    waves = text.split("waves")[1].split("gates of the canary")[0]
    assert "promoted by admin" in waves and "idle lab device" in waves


def test_status_of_a_wave_that_passed_says_so() -> None:
    passed = WaveEnd(how="passed", at=T0, by="rollout-controller", reason="every gate passed", decision=None)
    value = detail(
        wave_list=[
            WaveInfo(
                index=0,
                label="canary",
                size=1,
                cumulative=1,
                states={"committed": 1},
                status="done",
                ended=passed,
            ),
            *detail().wave_list[1:],
        ]
    )
    waves = rendered(value).split("\ngates")[0]
    assert "passed its gates" in waves and "promoted" not in waves


def fake_server(routes: dict[str, Callable[[], Any]]) -> Callable[..., _client.FleetClient]:
    """``client(server, token)`` answering from ``routes`` (path -> JSON-able value)."""

    def handler(request: httpx.Request) -> httpx.Response:
        answer = routes.get(request.url.path)
        if answer is None:
            return httpx.Response(404, json={"error": "not_found", "message": f"no {request.url.path}"})
        return httpx.Response(200, json=answer())

    def make(server: str | None, token: str | None) -> _client.FleetClient:
        settings = _client.ClientSettings("http://fleet.test", "t", "--server", "--token")
        return _client.FleetClient(settings, transport=httpx.MockTransport(handler))

    return make


def info_of(value: RolloutDetail) -> dict[str, Any]:
    return RolloutInfo.model_validate(value.model_dump()).model_dump(mode="json")


def test_rollout_ls_marks_a_promoted_rollout(monkeypatch: pytest.MonkeyPatch) -> None:
    judged = detail(id="r-2", state="completed", settled=True, reason="every wave committed and passed")
    listing = [info_of(promoted_tour_rollout()), info_of(judged)]
    monkeypatch.setattr(rollout, "client", fake_server({"/api/v1/rollouts": lambda: listing}))
    result = CliRunner().invoke(rollout.app, ["ls", *ARGS], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│ r-" in line}
    assert "promoted by admin" in rows["r-1"]
    assert "promoted" not in rows["r-2"]
    as_json = CliRunner().invoke(rollout.app, ["ls", "--json", *ARGS])
    first = json.loads(as_json.stdout)[0]
    assert first["promotions"][0]["by"] == "admin" and first["promotions"][0]["reason"] == "idle lab device"


# --- 4. what the gates compare against ------------------------------------------------------------


def test_a_lone_canary_has_no_control_and_its_baseline_is_labelled_truthfully() -> None:
    text = rendered(detail(decision=WAITING, state="running", wave=0))
    assert "control: none (no device outside the canary runs the old version)" in text
    assert "baseline: 1/1 reporting" not in text
    assert "baseline: the canary's own 1.0.0 telemetry" in text
    assert "nothing to compare against" in text


def test_the_baseline_line_names_the_gates_that_compared_against_it() -> None:
    gates = [
        GateInfo(name="failure_rate", passed=True, value=0.0, threshold=0.0, detail="0/1"),
        GateInfo(
            name="error_rate_delta",
            passed=True,
            value=0.0,
            threshold=0.02,
            detail="…",
            against="baseline",
        ),
        GateInfo(
            name="p95_latency_ratio", passed=True, value=1.0, threshold=1.5, detail="…", against="baseline"
        ),
        GateInfo(name="output_drift_delta", passed=True, value=None, threshold=0.1, detail="…"),
    ]
    figures = {
        **WAITING.figures,
        "baseline": {"devices": 1, "reporting": 1, "requests": 400, "p95_ms": 3.0, "output_drift": None},
    }
    decision = WAITING.model_copy(update={"verdict": "proceed", "gates": gates, "figures": figures})
    text = rendered(detail(decision=decision, state="running", wave=0))
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("baseline:"))
    baseline = " ".join(lines[at : at + 2])  # the figures, then what compared against them
    assert "400 requests" in lines[at]
    assert "error_rate_delta" in baseline and "p95_latency_ratio" in baseline
    assert "output_drift_delta" not in baseline and "nothing to compare against" not in baseline


def test_control_devices_not_compared_yet_are_not_called_none() -> None:
    figures = {"canary": {"devices": 1}, "control": None, "control_devices": 3, "baseline": None}
    decision = WAITING.model_copy(update={"figures": figures})
    text = rendered(detail(decision=decision, state="running", wave=0))
    assert "control: none" not in text
    assert "control: 3 device(s) on the old version" in text


# --- 6. --watch ------------------------------------------------------------------------------------


def serve_details(monkeypatch: pytest.MonkeyPatch, frames: Sequence[RolloutDetail]) -> list[int]:
    """Each GET of the rollout answers the next frame (the last one forever); returns the GET count."""
    calls = [0]

    def next_frame() -> Any:
        frame = frames[min(calls[0], len(frames) - 1)]
        calls[0] += 1
        return frame.model_dump(mode="json")

    monkeypatch.setattr(rollout, "client", fake_server({"/api/v1/rollouts/r-1": next_frame}))
    monkeypatch.setattr(rollout.time, "sleep", lambda seconds: None)
    return calls


@pytest.mark.parametrize(("state", "code"), [("completed", 0), ("aborted", 1)])
def test_watch_on_a_finished_rollout_prints_once_and_says_there_is_nothing_to_watch(
    monkeypatch: pytest.MonkeyPatch, state: str, code: int
) -> None:
    finished = promoted_tour_rollout().model_copy(update={"state": state})
    calls = serve_details(monkeypatch, [finished])
    result = CliRunner().invoke(rollout.app, ["status", "r-1", "--watch", *ARGS], env=WIDE)
    assert result.exit_code == code, result.output
    assert calls[0] == 1
    assert result.output.count("r-1  digits 2.0.0") == 1  # the status, once
    assert f"rollout {state}; nothing to watch" in result.output


def frames() -> Iterator[RolloutDetail]:
    base = detail(state="running", settled=False, wave=0, waves=2, reason=None)
    waiting = base.model_copy(update={"states": {"assigned": 1, "pending": 3}, "decision": None})
    yield waiting
    yield waiting  # nothing changed: no line
    committed = base.model_copy(update={"states": {"committed": 1, "pending": 3}, "decision": WAITING})
    yield committed
    yield committed.model_copy(update={"decision": WAITING.model_copy(update={"reason": "other words"})})
    yield base.model_copy(
        update={
            "wave": 1,
            "states": {"committed": 1, "assigned": 3},
            "decision": WAITING.model_copy(update={"verdict": "proceed", "wave": 0}),
        }
    )
    yield promoted_tour_rollout()


def test_watch_when_piped_prints_a_line_per_change_then_the_final_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sequence = list(frames())
    calls = serve_details(monkeypatch, sequence)
    result = CliRunner().invoke(rollout.app, ["status", "r-1", "--watch", *ARGS], env=WIDE)
    assert result.exit_code == 0, result.output
    assert calls[0] == len(sequence)
    assert "\x1b[" not in result.output  # no Live frames, no cursor movement: it is a log
    stamped = [
        line for line in result.output.splitlines() if re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line)
    ]
    # One line per change of state, wave, device counts or verdict: 6 frames, 2 repeats.
    assert len(stamped) == 4, result.output
    assert "running" in stamped[0] and "canary" in stamped[0] and "1 updating" in stamped[0]
    assert "wait" in stamped[1] and "1/4 done" in stamped[1]
    assert "wave 1" in stamped[2] and "proceed" in stamped[2]
    assert "completed" in stamped[3]
    # ... then the whole final status, once, after the lines.
    final = result.output.split(stamped[3])[1]
    assert "gates of the canary when admin promoted it" in final
    assert "completed: canary promoted by admin (idle lab device)" in final
    assert result.output.count("r-1  digits 2.0.0") == 1


def test_an_operators_words_are_shown_as_written_not_as_markup() -> None:
    value = promoted_tour_rollout()
    end = value.wave_list[0].ended
    assert end is not None
    said = end.model_copy(update={"reason": "[bold]night[/bold] shift"})
    waves = [value.wave_list[0].model_copy(update={"ended": said})]
    text = rendered(value.model_copy(update={"wave_list": waves}))
    assert "promoted by admin: [bold]night[/bold] shift" in text
