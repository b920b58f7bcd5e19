"""The operator's REST client: where the server is, which token to send, and errors that say what to do.

The server URL and token come from, in order: ``--server``/``--token``; the environment
(``EDGEFLEET_SERVER``, ``EDGEFLEET_TOKEN``); the config file (``~/.config/edgefleet/cli.yaml``, or
``EDGEFLEET_CLI_CONFIG``), which holds ``server:``, and ``token:`` or ``token_file:``; and at last
``http://127.0.0.1:8080`` with the admin token a local ``edgefleet server run`` wrote to
``./edgefleet-data/admin.token``. Responses are parsed into the server's own schemas
(``fleet.api.schemas``), so the client and the server cannot disagree on a field.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import typer
from pydantic import BaseModel, TypeAdapter, ValidationError

from edgefleet.cli._console import CLIError

if TYPE_CHECKING:  # httpx is imported when a command talks to the server, not at CLI start
    import httpx

SERVER_ENV: Final = "EDGEFLEET_SERVER"
TOKEN_ENV: Final = "EDGEFLEET_TOKEN"
CONFIG_ENV: Final = "EDGEFLEET_CLI_CONFIG"
DEFAULT_SERVER: Final = "http://127.0.0.1:8080"
LOCAL_ADMIN_TOKEN: Final = Path("edgefleet-data") / "admin.token"
UPLOAD_CHUNK: Final = 1024 * 1024

T = TypeVar("T")

SERVER_OPTION = typer.Option(
    None,
    "--server",
    help=f"Fleet server URL (env {SERVER_ENV}; default {DEFAULT_SERVER}).",
    show_default=False,
)
TOKEN_OPTION = typer.Option(
    None,
    "--token",
    help=f"API token (env {TOKEN_ENV}, or token/token_file in ~/.config/edgefleet/cli.yaml).",
    show_default=False,
)


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = (
        Path(env["XDG_CONFIG_HOME"]).expanduser() if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    )
    return base / "edgefleet" / "cli.yaml"


@dataclass(frozen=True)
class ClientSettings:
    """Where requests go and with which token; ``*_source`` say where each came from (for errors)."""

    server: str
    token: str | None
    server_source: str
    token_source: str


def resolve_settings(
    server: str | None = None,
    token: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    cwd: Path | None = None,
) -> ClientSettings:
    env = os.environ if env is None else env
    path = config_path or default_config_path(env)
    file_settings = _read_config(path)
    server_value, server_source = _first(
        (server, "--server"),
        (env.get(SERVER_ENV), SERVER_ENV),
        (file_settings.get("server"), str(path)),
        (DEFAULT_SERVER, "the default"),
    )
    token_value, token_source = _first(
        (token, "--token"),
        (env.get(TOKEN_ENV), TOKEN_ENV),
        (file_settings.get("token"), str(path)),
    )
    if token_value is None and file_settings.get("token_file"):
        token_file = Path(str(file_settings["token_file"])).expanduser()
        token_value, token_source = _read_token_file(token_file), str(token_file)
    if token_value is None and server_source == "the default":
        local = (cwd or Path.cwd()) / LOCAL_ADMIN_TOKEN
        if local.is_file():
            token_value, token_source = _read_token_file(local), str(local)
    return ClientSettings(
        server=str(server_value).rstrip("/"),
        token=token_value,
        server_source=server_source,
        token_source=token_source if token_value else "nowhere",
    )


def _first(*candidates: tuple[Any, str]) -> tuple[Any, str]:
    for value, source in candidates:
        if value:
            return value, source
    return None, "nowhere"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CLIError(f"cannot read the CLI config {path}: {exc}", hint="fix or remove the file") from exc
    if not isinstance(data, dict):
        raise CLIError(f"{path} must be a mapping with server:, token: or token_file:")
    unknown = sorted(set(data) - {"server", "token", "token_file"})
    if unknown:
        raise CLIError(f"{path} has unknown keys {unknown}", hint="the keys are server, token and token_file")
    return data


def _read_token_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CLIError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc


class ServerError(CLIError):
    """The server answered with an error: its HTTP status and machine code ride along."""

    def __init__(
        self, message: str, *, hint: str | None, exit_code: int, status_code: int, code: str
    ) -> None:
        super().__init__(message, hint=hint, exit_code=exit_code)
        self.status_code = status_code
        self.code = code


class FleetClient:
    """A thin, typed wrapper over httpx that turns every failure into a CLIError with a hint."""

    def __init__(self, settings: ClientSettings, *, timeout: float = 30.0, transport: Any = None) -> None:
        import httpx

        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._http = httpx.Client(
            base_url=settings.server,
            headers=headers,
            timeout=httpx.Timeout(timeout, read=max(timeout, 300.0)),
            transport=transport,
        )

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise CLIError(
                f"cannot reach {self.settings.server}: {_reason(exc)}",
                hint="is `edgefleet server run` running? point at it with --server URL or "
                f"{SERVER_ENV} (now from {self.settings.server_source})",
            ) from exc
        except httpx.TimeoutException as exc:
            raise CLIError(
                f"{self.settings.server} did not answer in time ({type(exc).__name__})",
                hint="the server may be overloaded or the network slow; try again",
            ) from exc
        except httpx.HTTPError as exc:
            raise CLIError(f"talking to {self.settings.server} failed: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def get(self, path: str, model: type[T], **kwargs: Any) -> T:
        return parse(model, self.request("GET", path, **kwargs).json())

    def send(self, method: str, path: str, model: type[T], **kwargs: Any) -> T:
        return parse(model, self.request(method, path, **kwargs).json())

    def upload(self, path: str, file: Path, model: type[T]) -> T:
        """POST a file as a raw, streamed body (it is never held in memory whole)."""
        try:
            size = file.stat().st_size
            handle: IO[bytes] = file.open("rb")
        except OSError as exc:
            raise CLIError(f"cannot read {file}: {exc.strerror or exc}") from exc
        with handle:
            response = self.request(
                "POST",
                path,
                content=_chunks(handle),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            return parse(model, response.json())

    def _error(self, response: httpx.Response) -> ServerError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        message = str(body.get("message") or response.reason_phrase or f"HTTP {response.status_code}")
        hint = body.get("hint")
        code = str(body.get("error") or "")
        if response.status_code == 401:
            hint = (
                f"the server refused the token (from {self.settings.token_source}): set --token or "
                f"{TOKEN_ENV}; the first admin token is in the server's <data-dir>/admin.token"
            )
        return ServerError(
            f"{message} (HTTP {response.status_code})",
            hint=hint,
            exit_code=_exit_code(body, response.status_code),
            status_code=response.status_code,
            code=code,
        )


def parse(model: type[T], data: Any) -> T:
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        raise CLIError(
            f"the server's answer does not match this CLI's schema: {exc.errors()[0]['msg']}",
            hint="the server and the CLI may be different edgefleet versions",
        ) from exc


def client(server: str | None, token: str | None) -> FleetClient:
    return FleetClient(resolve_settings(server, token))


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(UPLOAD_CHUNK):
        yield chunk


def _exit_code(body: dict[str, Any], status_code: int) -> int:
    """A refused bundle exits with the verifier's own exit code, as `edgefleet bundle verify` does."""
    details = body.get("details")
    exit_code = details.get("exit_code") if status_code == 422 and isinstance(details, dict) else None
    return exit_code if isinstance(exit_code, int) and exit_code >= 10 else 1


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text or type(exc).__name__
