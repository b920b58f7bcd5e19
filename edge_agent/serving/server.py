"""The agent's gRPC server: the servicer on a TCP address and a Unix socket, started and drained.

grpcio's default 4 MB message limit is raised to ``max_message_bytes`` (64 MB by default) both
ways; a larger request is refused by grpcio itself with RESOURCE_EXHAUSTED before it reaches the
engine. ``SO_REUSEPORT`` is turned off, so a second agent on a taken port fails loudly instead of
silently sharing the port.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from edge_agent.proto import inference_pb2_grpc as pb_grpc
from edge_agent.serving.engine import InferenceEngine
from edge_agent.serving.errors import AddressInUse
from edge_agent.serving.servicer import InferenceServicer

log = logging.getLogger("edgefleet.agent")

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_WORKERS = 32


@dataclass(frozen=True)
class ServerConfig:
    """Where and how to listen: ``grpc_address`` None means the Unix socket only; port 0 picks a port."""

    grpc_address: str | None = "127.0.0.1:8001"
    uds_path: Path | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    workers: int = DEFAULT_WORKERS
    grace_s: float = 30.0

    def __post_init__(self) -> None:
        if self.grpc_address is None and self.uds_path is None:
            raise ValueError("the server needs a TCP address or a Unix socket path to listen on")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be at least 1024, got {self.max_message_bytes}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class Listening:
    """Where the server actually listens (the TCP port resolved when 0 was asked for)."""

    tcp: str | None
    uds: Path | None


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


class AgentServer:
    """Serves an ``InferenceEngine`` over gRPC until ``stop``."""

    def __init__(self, engine: InferenceEngine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self._server: grpc.Server | None = None
        self._uds: Path | None = None

    def start(self) -> Listening:
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="grpc-worker"),
            options=server_options(self.config.max_message_bytes),
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.engine), server)
        tcp = None
        if self.config.grpc_address is not None:
            port = _bind(server, self.config.grpc_address, "--grpc")
            host = self.config.grpc_address.rsplit(":", 1)[0]
            tcp = f"{host}:{port}"
        uds = None
        if self.config.uds_path is not None:
            uds = Path(self.config.uds_path).absolute()
            _clear_stale_socket(uds)
            uds.parent.mkdir(parents=True, exist_ok=True)
            _bind(server, f"unix://{uds}", "--uds")
            self._uds = uds
        server.start()
        self._server = server
        return Listening(tcp=tcp, uds=uds)

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, give the running ones ``grace_s`` to finish, then close every model."""
        grace = self.config.grace_s if grace_s is None else grace_s
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        self.engine.close()
        if self._uds is not None:
            with contextlib.suppress(FileNotFoundError):
                self._uds.unlink()
            self._uds = None


def _bind(server: grpc.Server, address: str, option: str) -> int:
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise AddressInUse(
            f"cannot listen on {address}: {exc}",
            hint=f"another process holds it, or it is not an address of this machine: pass another {option}",
        ) from exc
    if port == 0:  # older grpcio reports a failed bind this way
        raise AddressInUse(f"cannot listen on {address}", hint=f"pass another {option}")
    return port


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by an agent that died; refuse a live socket or any other file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AddressInUse(
            f"{path} exists and is not a socket", hint="pass another --uds path, or remove the file"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        log.info("removed a stale socket at %s", path)
        return
    finally:
        probe.close()
    raise AddressInUse(f"another server is listening on {path}", hint="stop it, or pass another --uds path")
