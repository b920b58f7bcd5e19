"""Agent configuration: flag > environment > file > default, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edge_agent.config import (
    CONFIG_KEYS,
    AgentConfig,
    ConfigError,
    env_name,
    flag_name,
    load_agent_config,
)
from edgefleet.cli import agent_run

REQUIRED = {"mqtt": "mqtt://127.0.0.1:1883", "device_id": "pi-1", "trusted_key": [Path("release.pub.pem")]}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_fill_what_nobody_set() -> None:
    config = load_agent_config(flags=REQUIRED)
    assert config.fleet == "default"
    assert config.metrics_interval_s == 10.0 and config.drift_window == 1000
    assert int(config.spool_max_bytes) == 64 * 1024 * 1024
    assert config.capture is False and config.capture_directory == config.data_dir / "capture"


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    config_file = _write(
        tmp_path / "agent.yaml",
        "mqtt: mqtt://file:1883\ndevice_id: from-file\ntrusted_key: [keys/release.pub.pem]\n"
        "metrics_interval_s: 30\ndrift_window: 50\nfleet: file-fleet\nspool_max_bytes: 2MiB\n",
    )
    env = {
        env_name("metrics_interval_s"): "20",
        env_name("drift_window"): "60",
        env_name("device_id"): "from-env",
    }
    config = load_agent_config(
        config_file=config_file, env=env, flags={"metrics_interval_s": 5.0, "device_id": None, "bundle": []}
    )
    assert config.metrics_interval_s == 5.0  # flag
    assert config.drift_window == 60  # environment over file
    assert config.device_id == "from-env"  # a flag left out (None) hides nothing
    assert config.fleet == "file-fleet"  # file over default
    assert int(config.spool_max_bytes) == 2 * 1024 * 1024
    assert config.trusted_key == [tmp_path / "keys" / "release.pub.pem"]  # relative to the file


def test_lists_come_comma_separated_from_the_environment() -> None:
    env = {env_name("bundle"): "a.efb, b.efb", env_name("capture"): "true"}
    config = load_agent_config(env=env, flags=REQUIRED)
    assert config.bundle == [Path("a.efb"), Path("b.efb")] and config.capture is True


def test_unrelated_variables_with_the_prefix_are_left_alone() -> None:
    config = load_agent_config(env={"EDGEFLEET_AGENT_MODULES_DUMP": "/tmp/x"}, flags=REQUIRED)
    assert config.device_id == "pi-1"


@pytest.mark.parametrize(
    ("flags", "key", "fragments"),
    [
        ({"metrics_interval_s": 0}, "metrics_interval_s", ["--metrics-interval-s", "greater than 0"]),
        ({"mqtt": "http://broker"}, "mqtt", ["--mqtt", "mqtt://HOST:PORT"]),
        ({"device_id": "a/b"}, "device_id", ["--device-id", "topic segment"]),
        ({"grpc": "localhost"}, "grpc", ["--grpc", "HOST:PORT"]),
        ({"spool_max_bytes": "lots"}, "spool_max_bytes", ["--spool-max-bytes"]),
        ({"spool_max_bytes": "1KiB"}, "spool_max_bytes", ["at least 16KiB"]),
        ({"reconnect_min_s": 10.0, "reconnect_max_s": 5.0}, "reconnect_max_s", ["reconnect_min_s"]),
        ({"mqtt_password": "secret"}, "mqtt_username", ["without a user name"]),
        ({"mqtt_ca": Path("/no/such/ca.pem")}, "mqtt_ca", ["does not exist"]),
        ({"log_level": "chatty"}, "log_level", ["--log-level"]),
    ],
)
def test_bad_values_name_their_key_and_source(
    flags: dict[str, object], key: str, fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent_config(flags={**REQUIRED, **flags})
    assert caught.value.key == key
    assert repr(key) in caught.value.message
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=env_name("drift_window")) as caught:
        load_agent_config(env={env_name("drift_window"): "many"}, flags=REQUIRED)
    assert caught.value.key == "drift_window"


def test_a_bad_file_value_names_the_file_and_key(tmp_path: Path) -> None:
    config_file = _write(tmp_path / "agent.yaml", "drift_window_s: -3\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml, key drift_window_s"):
        load_agent_config(config_file=config_file, flags=REQUIRED)


def test_unknown_file_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    config_file = _write(tmp_path / "agent.yaml", "metrics-intervall-s: 5\n")
    with pytest.raises(ConfigError) as caught:
        load_agent_config(config_file=config_file, flags=REQUIRED)
    assert "unknown key 'metrics-intervall-s'" in caught.value.message
    assert caught.value.hint is not None and "metrics_interval_s" in caught.value.hint


@pytest.mark.parametrize("text", ["- a\n- b\n", "key: [unclosed\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"agent\.yaml"):
        load_agent_config(config_file=_write(tmp_path / "agent.yaml", text), flags=REQUIRED)


def test_a_missing_required_key_says_every_way_to_give_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent_config(flags={"mqtt": "mqtt://h:1", "trusted_key": [Path("k.pem")]})
    assert caught.value.key == "device_id"
    assert caught.value.hint is not None
    for way in ("--device-id", "EDGEFLEET_AGENT_DEVICE_ID", "device_id:"):
        assert way in caught.value.hint


def test_passwords_are_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent_config(flags={**REQUIRED, "mqtt_password": "hunter2", "mqtt_password_file": tmp_path})
    assert "hunter2" not in str(caught.value)


def test_password_comes_from_its_file(tmp_path: Path) -> None:
    secret = _write(tmp_path / "password", "s3cret\n")
    config = load_agent_config(flags={**REQUIRED, "mqtt_username": "pi-1", "mqtt_password_file": secret})
    assert config.password() == "s3cret"


def test_every_config_key_is_a_flag_of_agent_run() -> None:
    app = typer.Typer()
    app.command()(agent_run.run)
    command = typer.main.get_command(app)
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {flag_name(key) for key in CONFIG_KEYS} <= options
    assert "--config" in options
    assert set(CONFIG_KEYS) == set(AgentConfig.model_fields)


def test_agent_run_reports_a_bad_config_and_exits_2(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(agent_run.run)
    result = CliRunner().invoke(
        app,
        [
            "--mqtt",
            "mqtt://127.0.0.1:1",
            "--device-id",
            "pi",
            "--trusted-key",
            "k.pem",
            "--drift-window",
            "0",
        ],
        env={},
    )
    assert result.exit_code == 2
    assert "drift_window" in result.output and "--drift-window" in result.output
