"""`edgefleet rollout`: options checked before anything is sent, and the status rendering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgefleet.cli import rollout
from fleet.rollouts.schemas import DecisionInfo, GateInfo, RolloutDetail, RolloutDeviceInfo, WaveInfo

NOWHERE = ["--server", "http://127.0.0.1:9", "--token", "t"]  # nothing listens on port 9
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["digits-cnn"], "is not MODEL:VERSION"),
        (["m:1.0.0", "--canary", "0"], "canary '0'"),
        (["m:1.0.0", "--waves", "50%,10%"], "waves must increase"),
        (["m:1.0.0", "--bake", "soon"], "--bake 'soon' is not a duration"),
        (["m:1.0.0", "--gate", "latency=2"], "unknown or not NAME=VALUE"),
        (["m:1.0.0", "--on-failure", "retry"], "pause or abort"),
        (["m:1.0.0", "--target", "profile"], "is not KEY=VALUE"),
    ],
)
def test_bad_options_exit_2_before_calling_the_server(args: list[str], message: str) -> None:
    result = CliRunner().invoke(rollout.app, ["create", *args, *NOWHERE])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_unreachable_server_is_a_clear_error() -> None:
    result = CliRunner().invoke(rollout.app, ["ls", *NOWHERE])
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output and "hint:" in result.output


def test_the_groups_commands() -> None:
    result = CliRunner().invoke(rollout.app, ["--help"])
    assert result.exit_code == 0
    for command in ("create", "ls", "status", "pause", "resume", "abort", "promote"):
        assert command in result.output


def detail(**changes: object) -> RolloutDetail:
    base = RolloutDetail(
        id="r-1",
        model="digits",
        version="2.0.0",
        target="profile=p1",
        state="paused",
        settled=False,
        wave=1,
        waves=3,
        devices=4,
        states={"committed": 2, "failed": 1, "pending": 1},
        reason="p95_latency_ratio: canary p95 30 ms / control 10 ms = 3.00x (limit 1.50x)",
        created_at=T0,
        created_by="ops",
        updated_at=T0,
        finished_at=None,
        canary="1",
        wave_percents=[50.0, 100.0],
        bake_s=30,
        device_timeout_s=120,
        gates={"on_failure": "pause"},
        allow_rollback=False,
        wave_started_at=T0,
        window_started_at=T0,
        wave_committed_at=None,
        wave_list=[
            WaveInfo(index=0, label="canary", size=1, cumulative=1, states={"committed": 1}, status="done"),
            WaveInfo(
                index=1,
                label="wave 1",
                size=2,
                cumulative=3,
                states={"committed": 1, "failed": 1},
                status="current",
            ),
            WaveInfo(index=2, label="wave 2", size=1, cumulative=4, states={"pending": 1}, status="pending"),
        ],
        device_list=[
            RolloutDeviceInfo(
                device_id=f"cam-{i}",
                wave=wave,
                state=state,
                reason="golden check failed" if state == "failed" else None,
                online=i != 3,
                running="1.0.0",
                previous_version="1.0.0",
                assigned_at=T0,
                state_at=T0,
            )
            for i, (wave, state) in enumerate(
                [(0, "committed"), (1, "committed"), (1, "failed"), (2, "pending")]
            )
        ],
        decision=DecisionInfo(
            at=T0,
            wave=1,
            verdict="pause",
            reason="p95_latency_ratio: 3.00x",
            gates=[
                GateInfo(name="failure_rate", passed=True, value=0.0, threshold=0.5, detail="0/3 failed"),
                GateInfo(name="p95_latency_ratio", passed=False, value=3.0, threshold=1.5, detail="3.00x"),
                GateInfo(
                    name="output_drift_delta", passed=None, value=None, threshold=0.1, detail="2/1 reporting"
                ),
            ],
            figures={
                "canary": {"committed": 2, "devices": 3, "requests": 400, "p95_ms": 30.0},
                "control": None,
            },
        ),
    )
    return base.model_copy(update=changes)


def rendered(value: RolloutDetail, **options: bool) -> str:
    console = Console(width=160, record=True)
    console.print(rollout.render_detail(value, **options))
    return console.export_text()


def test_status_shows_waves_gates_and_the_devices_worth_a_look() -> None:
    text = rendered(detail())
    assert "r-1  digits 2.0.0  paused  wave 1 (2 of 3)" in text
    assert "✗ fail" in text and "✓ pass" in text and "… waiting" in text
    assert "pause: p95_latency_ratio: 3.00x" in text
    assert "canary: 2/3 committed" in text
    assert "cam-2" in text and "golden check failed" in text  # a failed device
    assert "cam-3" in text  # an offline one
    assert "cam-0" not in text  # committed and online: not shown unless asked
    assert "cam-0" in rendered(detail(), all_devices=True)


def test_status_of_a_rollout_without_decision_yet() -> None:
    text = rendered(detail(decision=None, state="running", wave=-1, reason=None))
    assert "- of 3" in text and "gates" not in text


def test_the_group_stays_light() -> None:
    """The CLI parses rollout options with the server's parsers without loading the server."""
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\nfrom typer.testing import CliRunner\nfrom edgefleet.cli import rollout\n"
        "assert CliRunner().invoke(rollout.app, ['create', 'm:1.0.0', '--canary', '0']).exit_code == 2\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "fleet" in loaded
    assert loaded.isdisjoint({"sqlalchemy", "fastapi", "alembic", "paho", "numpy", "torch", "tensorflow"})
