"""The operator CLI's client: where the server and token come from, and errors that say what to do."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from edgefleet.cli._client import (
    CONFIG_ENV,
    DEFAULT_SERVER,
    SERVER_ENV,
    TOKEN_ENV,
    ClientSettings,
    FleetClient,
    ServerError,
    default_config_path,
    resolve_settings,
)
from edgefleet.cli._console import CLIError
from fleet.api.schemas import DeviceInfo


def test_flags_beat_environment_beat_config_file(tmp_path: Path) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text("server: http://from-file:1\ntoken: file-token\n")
    env = {SERVER_ENV: "http://from-env:2", TOKEN_ENV: "env-token"}
    assert resolve_settings("http://flag:3/", "flag-token", env=env, config_path=config) == ClientSettings(
        "http://flag:3", "flag-token", "--server", "--token"
    )
    from_env = resolve_settings(env=env, config_path=config)
    assert (from_env.server, from_env.token, from_env.token_source) == (
        "http://from-env:2",
        "env-token",
        TOKEN_ENV,
    )
    from_file = resolve_settings(env={}, config_path=config)
    assert (from_file.server, from_file.token, from_file.server_source) == (
        "http://from-file:1",
        "file-token",
        str(config),
    )


def test_token_file_and_the_local_admin_token(tmp_path: Path) -> None:
    token_file = tmp_path / "ops.token"
    token_file.write_text("from-token-file\n")
    config = tmp_path / "cli.yaml"
    config.write_text(f"token_file: {token_file}\n")
    assert resolve_settings(env={}, config_path=config).token == "from-token-file"

    workdir = tmp_path / "here"
    (workdir / "edgefleet-data").mkdir(parents=True)
    (workdir / "edgefleet-data" / "admin.token").write_text("local-admin\n")
    local = resolve_settings(env={}, config_path=tmp_path / "none.yaml", cwd=workdir)
    assert (local.server, local.token) == (DEFAULT_SERVER, "local-admin")
    # ... but never sent to a server named elsewhere.
    remote = resolve_settings("http://remote:8080", env={}, config_path=tmp_path / "none.yaml", cwd=workdir)
    assert remote.token is None and remote.token_source == "nowhere"


def test_config_path_from_environment(tmp_path: Path) -> None:
    assert default_config_path({CONFIG_ENV: str(tmp_path / "c.yaml")}) == tmp_path / "c.yaml"
    assert default_config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "edgefleet" / "cli.yaml"


@pytest.mark.parametrize("text", ["- a list\n", "server: [unclosed\n", "srever: http://typo\n"])
def test_a_broken_config_file_is_reported(tmp_path: Path, text: str) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text(text)
    with pytest.raises(CLIError, match=str(config)):
        resolve_settings(env={}, config_path=config)


def _client(handler: object, token: str | None = "t") -> FleetClient:
    settings = ClientSettings("http://fleet.test", token, "--server", "--token" if token else "nowhere")
    return FleetClient(settings, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def _error(status: int, body: Mapping[str, object]) -> object:
    return lambda request: httpx.Response(status, json=body)


def test_sends_the_token_and_parses_into_the_servers_schema() -> None:
    seen: list[httpx.Request] = []
    device = {
        "id": "cam", "fleet": "default", "profile": None, "agent_version": None, "models": {}, "online": True,
        "last_seen": None, "tags": {"site": "lab"}, "enrollment": "provisioned", "has_credentials": True,
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
        "added_by_a_newer_server": 1,
    }  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[device])

    with _client(handler, token="secret") as api:
        devices = api.get("/api/v1/devices", list[DeviceInfo])
    assert devices[0].tags == {"site": "lab"} and devices[0].online is True
    assert seen[0].headers["authorization"] == "Bearer secret"


def test_401_says_where_the_token_came_from() -> None:
    with (
        _client(
            _error(401, {"error": "unauthorized", "message": "the API token is unknown or revoked"})
        ) as api,
        pytest.raises(ServerError) as refused,
    ):
        api.request("GET", "/api/v1/devices")
    assert refused.value.status_code == 401
    assert "unknown or revoked (HTTP 401)" in refused.value.message
    assert (
        refused.value.hint is not None and "--token" in refused.value.hint and TOKEN_ENV in refused.value.hint
    )


def test_server_hint_and_code_pass_through() -> None:
    body = {"error": "forbidden", "message": "token 'v' has the viewer role", "hint": "ask an admin"}
    with _client(_error(403, body)) as api, pytest.raises(ServerError) as refused:
        api.request("POST", "/api/v1/models")
    assert (refused.value.code, refused.value.hint, refused.value.exit_code) == (
        "forbidden",
        "ask an admin",
        1,
    )


def test_a_refused_bundle_exits_with_the_verifiers_code(tmp_path: Path) -> None:
    body = {"error": "hash_mismatch", "message": "'model.onnx' has sha256 …", "details": {"exit_code": 15}}
    bundle = tmp_path / "b.efb"
    bundle.write_bytes(b"x" * 10)
    received: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request.read())
        return httpx.Response(422, json=body)

    with _client(handler) as api, pytest.raises(ServerError) as refused:
        api.upload("/api/v1/models", bundle, dict)
    assert refused.value.exit_code == 15
    assert received == [b"x" * 10]


def test_unreachable_server_says_to_start_it_or_point_at_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with _client(handler) as api, pytest.raises(CLIError) as refused:
        api.request("GET", "/healthz")
    assert refused.value.message == "cannot reach http://fleet.test: connection refused"
    assert refused.value.hint is not None
    assert "edgefleet server run" in refused.value.hint and "--server" in refused.value.hint


def test_an_answer_that_does_not_fit_the_schema_is_an_error() -> None:
    with (
        _client(lambda request: httpx.Response(200, json=[{"id": 1}])) as api,
        pytest.raises(CLIError) as refused,
    ):
        api.get("/api/v1/devices", list[DeviceInfo])
    assert "does not match this CLI's schema" in refused.value.message


def test_non_json_errors_still_read_well() -> None:
    gateway = _client(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    with gateway as api, pytest.raises(ServerError) as refused:
        api.request("GET", "/api/v1/devices")
    assert refused.value.message == "Bad Gateway (HTTP 502)"
    assert refused.value.code == ""
