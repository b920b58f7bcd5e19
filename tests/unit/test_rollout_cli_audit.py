"""`edgefleet audit ls` on a rollout's entries: who promoted, and why, readable in the table; every
figure still in --json (issue 18, item 3)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from edgefleet.cli import _client, tokens
from tests.unit.test_rollout_cli import T0
from tests.unit.test_rollout_cli_status import WAITING

ARGS = ["--server", "http://fleet.test", "--token", "t"]
APP = typer.Typer()
APP.add_typer(tokens.audit_app, name="audit")


def entry(id: int, action: str, actor: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": id,
        "at": (T0 + timedelta(seconds=id)).isoformat(),
        "actor": actor,
        "actor_role": "admin" if actor.startswith("token:") else None,
        "action": action,
        "target": "r-1",
        "outcome": "ok",
        "details": details,
    }


DECISION = WAITING.model_dump(mode="json")
ENTRIES = [
    entry(
        3,
        "rollout.complete",
        "token:admin",
        {
            "wave": 0,
            "promoted_by": "admin",
            "reason": "completed: canary promoted by admin (idle lab device)",
        },
    ),
    entry(
        2,
        "rollout.promote",
        "token:admin",
        {"wave": 0, "label": "canary", "reason": "idle lab device", "state": "running", "decision": DECISION},
    ),
]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ENTRIES)

    def make(server: str | None, token: str | None) -> _client.FleetClient:
        settings = _client.ClientSettings("http://fleet.test", "t", "--server", "--token")
        return _client.FleetClient(settings, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(tokens, "client", make)
    return seen


def test_a_promote_shows_who_and_why_and_not_a_wall_of_json(served: list[httpx.Request]) -> None:
    result = CliRunner().invoke(APP, ["audit", "ls", "--target", "r-1", *ARGS], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert served[0].url.params["target"] == "r-1"
    promote = next(line for line in result.output.splitlines() if "rollout.promote" in line)
    assert "token:admin" in promote
    assert "reason=idle lab device" in promote
    # The decision the operator overrode, in a few words, not its JSON.
    assert "decision=wait: not enough data yet" in result.output
    assert '"figures"' not in result.output and '"gates"' not in result.output
    complete = next(line for line in result.output.splitlines() if "rollout.complete" in line)
    assert "reason=completed: canary promoted by admin (idle lab device)" in complete


def test_json_keeps_every_detail(served: list[httpx.Request]) -> None:
    result = CliRunner().invoke(APP, ["audit", "ls", "--json", *ARGS])
    assert result.exit_code == 0, result.output
    promote = json.loads(result.stdout)[1]
    assert promote["details"]["decision"]["figures"]["control_devices"] == 0
