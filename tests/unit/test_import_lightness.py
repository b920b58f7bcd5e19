"""The agent must stay light on a Raspberry Pi, and the CLI must start fast."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "nncf", "onnx", "keras", "litert_torch")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_import_edge_agent_leaves_heavy_frameworks_out() -> None:
    loaded = _loaded_after("import edge_agent")
    assert "edge_agent" in loaded
    assert _heavy(loaded) == []


def test_bundle_and_profiles_stay_light_for_the_agent() -> None:
    loaded = _loaded_after("import models.bundle, models.versioning, hw_profiles")
    assert {"models.bundle", "hw_profiles"} <= loaded
    assert _heavy(loaded) == []


def test_cli_help_imports_no_framework() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom edgefleet.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\nassert result.exit_code == 0, result.output\n"
        "groups = ('profiles', 'keys', 'bundle', 'agent', 'server', 'devices', 'models', 'drift', 'rollout', 'tokens', 'audit')\n"
        "for group in groups:\n"
        "    assert CliRunner().invoke(app, [group, '--help']).exit_code == 0\n"
    )
    loaded = _loaded_after(code)
    assert "edgefleet.cli" in loaded
    assert _heavy(loaded) == []


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgefleet", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("edgefleet ")
