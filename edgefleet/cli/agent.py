"""``edgefleet agent``: run the edge agent on this machine.

``serve`` is local inference with no fleet at all: it verifies each bundle with the trusted keys,
extracts it under the data directory, loads it, and answers the Open Inference Protocol v2 over
gRPC on a TCP address and/or a Unix socket until SIGTERM or SIGINT, then drains: calls in flight
finish, and every model closes after its last request.

The serving stack (grpcio, numpy, the runtimes) is imported inside the command, so
``edgefleet --help`` stays fast.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from edge_agent.ready import ready_message
from edgefleet.cli import agent_run
from edgefleet.cli._console import CLIError, cli_errors, fail

if TYPE_CHECKING:
    from hw_profiles import HardwareProfile

app = typer.Typer(
    help="Run the edge agent: local inference over the Open Inference Protocol v2 (gRPC).",
    no_args_is_help=True,
)

log = logging.getLogger("edgefleet.agent")


@app.callback()
def _agent() -> None:
    """Run the edge agent: local inference over the Open Inference Protocol v2 (gRPC)."""


@app.command()
def serve(
    bundle: list[Path] = typer.Option(
        ..., "--bundle", help="A signed bundle (.efb) to serve; repeat for several models or versions."
    ),
    trusted_key: list[Path] = typer.Option(
        ...,
        "--trusted-key",
        help="Public key (.pub.pem) whose signatures to trust, or a directory of them; repeatable.",
    ),
    grpc_address: str = typer.Option(
        "127.0.0.1:8001",
        "--grpc",
        help="TCP HOST:PORT to listen on (port 0 picks a free one); 'none' listens on --uds only.",
    ),
    uds: Path | None = typer.Option(None, "--uds", help="Unix socket path to listen on as well."),
    profile: str | None = typer.Option(
        None, "--profile", help="Hardware profile for the runtime options (threads, providers, devices)."
    ),
    max_message_mb: int = typer.Option(64, "--max-message-mb", min=1, help="Largest request or response."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Dynamic batch size limit (1: no batching)."),
    batch_delay_ms: float = typer.Option(
        2.0, "--batch-delay-ms", min=0.0, help="How long a request may wait for others to batch with."
    ),
    batch_workers: int = typer.Option(
        1, "--batch-workers", min=1, help="Batches that may run at once (ONNX Runtime models only)."
    ),
    data_dir: Path = typer.Option(
        Path("edgefleet-data/agent"), "--data-dir", help="Where verified bundles are extracted."
    ),
    workers: int = typer.Option(32, "--workers", min=1, help="gRPC worker threads (concurrent calls)."),
    grace_s: float = typer.Option(30.0, "--grace-s", min=0.0, help="How long a shutdown waits for calls."),
) -> None:
    """Serve bundles locally over gRPC (TCP and/or Unix socket) until SIGTERM or SIGINT."""
    _configure_logging()
    with cli_errors():
        tcp = None if grpc_address.lower() == "none" else _check_address(grpc_address)
        if tcp is None and uds is None:
            raise CLIError("nothing to listen on", hint="give --grpc HOST:PORT, --uds PATH, or both")
        _serve(
            bundles=bundle,
            trusted_keys=trusted_key,
            tcp=tcp,
            uds=uds,
            profile_name=profile,
            max_message_bytes=max_message_mb * 1024 * 1024,
            max_batch=max_batch,
            batch_delay_ms=batch_delay_ms,
            batch_workers=batch_workers,
            data_dir=data_dir,
            workers=workers,
            grace_s=grace_s,
        )


def _serve(
    *,
    bundles: list[Path],
    trusted_keys: list[Path],
    tcp: str | None,
    uds: Path | None,
    profile_name: str | None,
    max_message_bytes: int,
    max_batch: int,
    batch_delay_ms: float,
    batch_workers: int,
    data_dir: Path,
    workers: int,
    grace_s: float,
) -> None:
    from edge_agent.serving import (
        AgentServer,
        BatchingConfig,
        InferenceEngine,
        ServerConfig,
        ServingError,
        heavy_modules,
    )
    from edge_agent.serving.diagnostics import dump_modules_if_asked
    from models.bundle import BundleError, load_trusted_keys

    try:
        keys = load_trusted_keys(trusted_keys)
    except BundleError as exc:
        raise CLIError(exc.message, hint=exc.hint, exit_code=exc.exit_code) from exc
    hardware = _load_profile(profile_name)
    engine = InferenceEngine.create(
        data_dir=data_dir,
        trusted_keys=keys,
        profile=hardware,
        batching=BatchingConfig(
            max_batch=max_batch, max_delay_s=batch_delay_ms / 1000, workers=batch_workers
        ),
        drain_timeout_s=grace_s,
    )
    server = AgentServer(
        engine,
        ServerConfig(
            grpc_address=tcp,
            uds_path=uds,
            max_message_bytes=max_message_bytes,
            workers=workers,
            grace_s=grace_s,
        ),
    )
    try:
        for path in bundles:
            try:
                engine.install(path)
            except BundleError as exc:
                raise CLIError(
                    f"bundle {path} refused: {exc.message}", hint=exc.hint, exit_code=exc.exit_code
                ) from exc
            except ServingError as exc:
                raise CLIError(f"bundle {path}: {exc.message}", hint=exc.hint) from exc
        try:
            listening = server.start()
        except ServingError as exc:
            raise CLIError(exc.message, hint=exc.hint) from exc
    except BaseException:
        engine.close()
        raise

    stop = _stop_on_signals()
    models = ",".join(f"{m.name}:{m.version}" for m in engine.loaded_models())
    log.info(
        "%s",
        ready_message(
            listening.tcp,
            listening.uds,
            models=models,
            max_message_mb=max_message_bytes // (1024 * 1024),
            max_batch=max_batch,
        ),
    )
    heavy = heavy_modules(sys.modules)
    if heavy:
        log.warning("training frameworks are loaded in the agent (%s): it will use more memory", heavy[:5])
    dump_modules_if_asked("ready")
    stop.wait()
    log.info("stopping: draining calls in flight (up to %.0f s)", grace_s)
    server.stop()
    dump_modules_if_asked("stopped")
    log.info("stopped")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _load_profile(name: str | None) -> HardwareProfile | None:
    if name is None:
        return None
    from hw_profiles import ProfileError, load_profile

    try:
        return load_profile(name)
    except ProfileError as exc:
        raise CLIError(str(exc), hint=exc.hint or "see `edgefleet profiles list`") from exc


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        fail(
            f"--grpc {address!r} is not HOST:PORT", hint="e.g. --grpc 127.0.0.1:8001 (port 0: any free port)"
        )
    return address


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )


app.command(name="run")(agent_run.run)


if __name__ == "__main__":  # python -m edgefleet.cli.agent serve ...: the same command, unregistered
    app()
