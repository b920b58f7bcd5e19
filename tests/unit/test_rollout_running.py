"""Which version a device runs, from its status: the agent's own word first."""

from __future__ import annotations

from typing import Any

from fleet.rollouts.running import running_version


def _status(*models: dict[str, Any], state: str = "watching") -> dict[str, Any]:
    slots = {"digits": {"active": "a", "a": {"version": "1.0.0"}, "b": {"version": "1.1.0"}}}
    return {"models": list(models), "ota": {"state": state, "slots": slots}}


def test_a_flagged_default_is_taken_at_its_word() -> None:
    # The slots say 1.1.0 is being installed and watched, but the agent went back to 1.0.0.
    status = _status(
        {"name": "digits", "version": "1.0.0", "default": True},
        {"name": "digits", "version": "1.1.0", "default": False},
    )
    running = running_version(status, "digits", "1.1.0")
    assert (running.version, running.alone, running.settled) == ("1.0.0", False, None)


def test_without_flags_the_updater_state_decides() -> None:
    status = _status({"name": "digits", "version": "1.0.0"}, {"name": "digits", "version": "1.1.0"})
    assert running_version(status, "digits", None).version == "1.1.0"
    assert running_version(
        {**status, "ota": {**status["ota"], "state": "staged"}}, "digits", None
    ).version == ("1.0.0")


def test_one_version_loaded_runs_alone() -> None:
    status = _status({"name": "digits", "version": "1.1.0", "default": True}, state="idle")
    assert running_version(status, "digits", None).settled == "1.1.0"
