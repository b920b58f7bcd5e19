"""``edgefleet profiles list|show|validate`` through the root CLI app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgefleet.cli import _console, app
from hw_profiles import BUILTIN_PROFILES_DIR, PROFILES_DIR_ENV, list_profiles, load_profile

REQUIRED = [
    "raspberry-pi-4",
    "raspberry-pi-5",
    "jetson-orin-nano",
    "jetson-nano",
    "intel-x86-openvino",
    "coral-edgetpu",
    "generic-arm64",
    "generic-x86",
]

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_consoles_and_builtin_profiles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Rich wraps at 80 columns when not on a terminal; wide consoles keep names and paths whole.
    monkeypatch.setattr(_console.console, "_width", 300)
    monkeypatch.setattr(_console.err_console, "_width", 300)
    monkeypatch.delenv(PROFILES_DIR_ENV, raising=False)
    yield


def invoke(*args: str, profiles_dir: Path | None = None) -> Any:
    env = {PROFILES_DIR_ENV: str(profiles_dir)} if profiles_dir else None
    return runner.invoke(app, ["profiles", *args], env=env)


def write_profile(directory: Path, name: str, **changes: Any) -> Path:
    data = yaml.safe_load((BUILTIN_PROFILES_DIR / "raspberry-pi-5.yaml").read_text())
    data["name"] = name
    data.update(changes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_clean_failure(result: Any) -> None:
    """Exit 1 with a message, not a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "error:" in result.stderr


def test_list_shows_every_profile_with_its_defaults() -> None:
    result = invoke("list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for profile in list_profiles():
        row = rows[profile.name]
        assert profile.architecture.value in row
        assert f"{profile.default_format.value} {profile.default_precision.value}" in row
    for name in REQUIRED:
        assert name in rows


def test_list_json_is_the_list_of_dumped_profiles() -> None:
    result = invoke("list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed == [profile.model_dump(mode="json") for profile in list_profiles()]
    assert [p["name"] for p in listed] == sorted(p["name"] for p in listed)


def test_show_details_a_profile() -> None:
    result = invoke("show", "jetson-orin-nano")
    assert result.exit_code == 0, result.output
    orin = load_profile("jetson-orin-nano")
    assert orin.description in result.stdout
    assert "TensorrtExecutionProvider → CUDAExecutionProvider → CPUExecutionProvider" in result.stdout
    assert orin.accelerators[0].name in result.stdout
    assert "fp16 (default)" in result.stdout
    assert "jetson-orin-nano.yaml" in result.stdout


def test_show_json_is_the_dumped_profile() -> None:
    result = invoke("show", "coral-edgetpu", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown == load_profile("coral-edgetpu").model_dump(mode="json")
    assert shown["quantization"]["full_integer_io"] is True


def test_show_accepts_a_file_path(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "bench-board", description="the board on my desk")
    result = invoke("show", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["description"] == "the board on my desk"


def test_show_an_unknown_name_exits_1_with_the_known_names() -> None:
    result = invoke("show", "rasberry-pi-5")
    assert_clean_failure(result)
    assert "unknown hardware profile 'rasberry-pi-5'" in result.stderr
    assert "did you mean 'raspberry-pi-5'?" in result.stderr
    for name in REQUIRED:
        assert name in result.stderr
    assert result.stdout == ""


def test_a_profile_from_the_profiles_dir_is_listed_and_shown(tmp_path: Path) -> None:
    write_profile(tmp_path, "my-board", description="a custom board")
    listed = json.loads(invoke("list", "--json", profiles_dir=tmp_path).stdout)
    assert "my-board" in [p["name"] for p in listed]
    assert len(listed) == len(list_profiles()) + 1
    result = invoke("show", "my-board", profiles_dir=tmp_path)
    assert result.exit_code == 0, result.output
    assert "a custom board" in result.stdout


def test_a_broken_profile_makes_list_and_show_exit_1_with_file_and_field(tmp_path: Path) -> None:
    write_profile(tmp_path, "broken-board", threads=64)
    for args in (("list",), ("list", "--json"), ("show", "broken-board")):
        result = invoke(*args, profiles_dir=tmp_path)
        assert_clean_failure(result)
        assert "broken-board.yaml: threads: threads (64) exceeds cpu.cores (4)" in result.stderr
        assert result.stdout == ""


def test_a_yaml_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    tmp_path.joinpath("bad-yaml.yaml").write_text("name: bad-yaml\ncpu: model: x\n")
    result = invoke("list", profiles_dir=tmp_path)
    assert_clean_failure(result)
    assert "bad-yaml.yaml: line 2, column" in result.stderr


def test_a_profiles_dir_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    result = invoke("list", profiles_dir=tmp_path / "nope")
    assert_clean_failure(result)
    assert PROFILES_DIR_ENV in result.stderr


def test_validate_reports_good_and_broken_files(tmp_path: Path) -> None:
    good = write_profile(tmp_path, "good-board")
    broken = write_profile(tmp_path, "broken-board", formats=["tflite", "openvino"])

    assert invoke("validate", str(good)).exit_code == 0

    result = invoke("validate", str(tmp_path))
    assert_clean_failure(result)
    assert "broken-board.yaml: formats: formats ['openvino'] have no runtime" in result.stderr
    assert "good-board" in result.stdout
    assert "1 of 2 profile files valid" in result.stderr

    as_json = invoke("validate", "--json", str(good), str(broken))
    assert as_json.exit_code == 1
    results = {Path(r["path"]).name: r for r in json.loads(as_json.stdout)}
    assert results["good-board.yaml"]["ok"] is True
    assert results["broken-board.yaml"]["ok"] is False
    assert results["broken-board.yaml"]["problems"][0]["field"] == "formats"


def test_validate_without_arguments_checks_the_search_path() -> None:
    result = invoke("validate", "--json")
    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout)
    assert sorted(r["name"] for r in checked) == [p.name for p in list_profiles()]
    assert all(r["ok"] for r in checked)


def test_validate_an_empty_directory_says_nothing_was_found(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path))
    assert_clean_failure(result)
    assert "no profile files found" in result.stderr
