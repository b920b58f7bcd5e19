"""The inference engine: the Open Inference Protocol's semantics, with no transport.

The gRPC servicer translates protobuf messages to and from the types here; the in-process API
(``edge_agent.api``) calls the engine directly. Both therefore check requests, route them, count
statistics and fail in exactly the same way, raising ``ServingError`` subclasses whose ``status``
is the gRPC code a network client receives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.runtimes import RuntimeSession, open_bundle_session
from edge_agent.runtimes.feeds import feed_batches
from edge_agent.serving.codec import datatype_of, decode_raw, decode_typed
from edge_agent.serving.errors import (
    InferenceError,
    InvalidRequest,
    LoadFailed,
    ServerUnavailable,
    ServingError,
)
from edge_agent.serving.installer import BundleInstaller, InstalledBundle
from edge_agent.serving.model import BatchingConfig, ServedModel
from edge_agent.serving.repository import IndexEntry, ModelRepository, SessionOpener
from edge_agent.serving.statistics import ModelStats, Timings
from edge_agent.serving.validation import DeclaredTensor, check_inputs, check_outputs
from edgefleet import __version__
from hw_profiles.schema import HardwareProfile
from models.bundle import BundleError

log = logging.getLogger("edgefleet.agent")

SERVER_NAME = "edgefleet-agent"
EXTENSIONS = ("model_repository", "statistics", "parameters")


@dataclass(frozen=True)
class InputTensor:
    """One input as a request carries it: raw bytes, typed values, or (in process) an array."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None = None
    typed: Mapping[str, Sequence[Any]] | None = None
    array: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_array(cls, name: str, value: Any) -> InputTensor:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        try:
            datatype = datatype_of(array.dtype)
        except InvalidRequest:
            raise InvalidRequest(
                f"input {name!r}: numpy dtype {array.dtype} has no protocol datatype",
                hint="send a numeric or boolean array",
            ) from None
        return cls(name=name, datatype=datatype, shape=tuple(array.shape), array=array)

    def declared(self) -> DeclaredTensor:
        return DeclaredTensor(self.name, self.datatype, self.shape)

    def decode(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        if self.raw is not None:
            return decode_raw(self.name, self.datatype, self.shape, self.raw)
        return decode_typed(self.name, self.datatype, self.shape, self.typed or {})


@dataclass(frozen=True)
class InferRequest:
    model_name: str
    inputs: Sequence[InputTensor]
    model_version: str = ""
    id: str = ""
    outputs: Sequence[str] = ()
    raw: bool = False
    """Send and receive a quantized model's integers instead of float32."""


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]

    def as_dict(self) -> dict[str, np.ndarray]:
        return {output.name: output.array for output in self.outputs}


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


def profile_opener(profile: HardwareProfile | None) -> SessionOpener:
    """Open installed bundles with the device's hardware profile (or the manifest's options alone)."""

    def open_installed(installed: InstalledBundle) -> RuntimeSession:
        return open_bundle_session(installed.directory, installed.manifest, profile)

    return open_installed


class InferenceObserver(Protocol):
    """Told about each finished request; ``status`` is "OK" or the gRPC status name of the error."""

    def on_inference(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
        status: str,
        latency_s: float,
        queue_s: float,
        batch_size: int,
    ) -> None:
        """``inputs``: the decoded feeds (empty if the request failed before decoding); ``outputs``
        None on failure; ``latency_s`` the time in the agent, ``queue_s`` the part spent waiting
        for a batch; ``batch_size`` the samples of the execution the request ran in (0 on failure)."""


def _output(name: str, array: np.ndarray) -> OutputTensor:
    return OutputTensor(name, datatype_of(array.dtype), tuple(array.shape), array)


class InferenceEngine:
    """Models by name and version, and the protocol's calls over them."""

    def __init__(self, repository: ModelRepository, installer: BundleInstaller | None = None) -> None:
        self.repository = repository
        self.installer = installer
        self._closing = threading.Event()
        self._observers: list[InferenceObserver] = []

    @classmethod
    def create(
        cls,
        *,
        data_dir: Path,
        trusted_keys: Sequence[Ed25519PublicKey],
        profile: HardwareProfile | None = None,
        batching: BatchingConfig = BatchingConfig(),
        drain_timeout_s: float = 30.0,
        opener: Callable[[InstalledBundle], RuntimeSession] | None = None,
    ) -> InferenceEngine:
        repository = ModelRepository(
            opener or profile_opener(profile), batching, drain_timeout_s=drain_timeout_s
        )
        return cls(repository, BundleInstaller(data_dir, trusted_keys))

    # --- bundles and the repository -------------------------------------------------------------

    def install(self, bundle: Path, *, load: bool = True) -> InstalledBundle:
        """Verify, extract, register and (by default) load ``bundle``.

        A refused bundle raises the verifier's ``BundleError``; a model that cannot open, ``LoadFailed``.
        """
        if self.installer is None:
            raise LoadFailed(
                "this engine has no bundle installer", hint="create it with InferenceEngine.create"
            )
        installed = self.installer.install(bundle)
        self.repository.add(installed)
        if load:
            self.repository.load(installed.name, installed.version)
        return installed

    def load_model(self, name: str, *, version: str | None = None, bundle: Path | None = None) -> list[str]:
        """Load a known model (one version or all), or verify and add ``bundle`` first and load that."""
        if bundle is not None:
            try:
                installed = self.install(bundle, load=False)
            except BundleError as exc:
                raise LoadFailed(f"bundle {bundle} was refused: {exc.message}", hint=exc.hint) from exc
            if installed.name != name:
                raise InvalidRequest(
                    f"bundle {bundle} holds model {installed.name!r}, not {name!r}",
                    hint=f"load it as {installed.name!r}",
                )
            if version and version != installed.version:
                raise InvalidRequest(
                    f"bundle {bundle} holds version {installed.version}, not {version}",
                    hint="leave the version out when passing a bundle",
                )
            version = installed.version
        return self.repository.load(name, version)

    def unload_model(self, name: str, *, version: str | None = None) -> list[str]:
        return self.repository.unload(name, version)

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        return self.repository.index(ready_only=ready_only)

    # --- health and metadata --------------------------------------------------------------------

    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        return not self._closing.is_set()

    def server_metadata(self) -> tuple[str, str, tuple[str, ...]]:
        return SERVER_NAME, __version__, EXTENSIONS

    def model_ready(self, name: str, version: str = "") -> bool:
        return not self._closing.is_set() and self.repository.is_ready(name, version)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        with self.repository.lease(name, version) as model:
            return ModelMetadata(
                name=model.name,
                versions=[version] if version else self.repository.ready_versions(name),
                platform=model.platform,
                inputs=[TensorMetadata(t.name, t.datatype, t.shape) for t in model.inputs()],
                outputs=[TensorMetadata(t.name, t.datatype, t.shape) for t in model.outputs()],
            )

    def statistics(self, name: str = "", version: str = "") -> list[ModelStats]:
        return [model.stats.snapshot() for model in self.repository.loaded(name, version)]

    def loaded_models(self) -> list[ServedModel]:
        return self.repository.loaded()

    # --- inference ------------------------------------------------------------------------------

    def add_observer(self, observer: InferenceObserver) -> None:
        """Tell ``observer`` about every request that reaches a loaded model (telemetry, drift windows)."""
        self._observers.append(observer)

    def infer(self, request: InferRequest) -> InferResponse:
        """Check, decode and run one request on the version it names (or the latest)."""
        if self._closing.is_set():
            raise ServerUnavailable("the agent is shutting down", hint="retry against the restarted agent")
        with self.repository.lease(request.model_name, request.model_version) as model:
            started = time.perf_counter_ns()
            feeds: dict[str, np.ndarray] = {}
            try:
                check_inputs(model.inputs(raw=request.raw), [tensor.declared() for tensor in request.inputs])
                wanted = check_outputs(model.outputs(raw=request.raw), request.outputs)
                feeds = {tensor.name: tensor.decode() for tensor in request.inputs}
                decoded = time.perf_counter_ns()
                execution = model.execute(feeds, raw=request.raw)
            except ServingError as exc:
                self._failed(model, started, feeds, exc.status)
                raise
            except Exception as exc:
                self._failed(model, started, feeds, "INTERNAL")
                raise InferenceError(
                    f"unexpected error running {model.name} {model.version}: {type(exc).__name__}: {exc}",
                    hint="the model is still loaded; report this with the agent's log",
                ) from exc
            outputs = [_output(name, execution.outputs[name]) for name in wanted]
            timings = Timings(
                queue_ns=execution.timings.queue_ns,
                input_ns=execution.timings.input_ns + (decoded - started),
                infer_ns=execution.timings.infer_ns,
                output_ns=execution.timings.output_ns,
            )
            samples = _request_samples(model, feeds)
            total_ns = time.perf_counter_ns() - started
            model.record(ok=True, total_ns=total_ns, timings=timings, samples=samples)
            response = InferResponse(model.name, model.version, request.id, outputs)
            self._notify(
                model, feeds, response.as_dict(), "OK", total_ns, timings.queue_ns, execution.batch_size
            )
            return response

    def _failed(self, model: ServedModel, started: int, feeds: Mapping[str, np.ndarray], status: str) -> None:
        total_ns = time.perf_counter_ns() - started
        model.record(ok=False, total_ns=total_ns)
        self._notify(model, feeds, None, status, total_ns, 0, 0)

    def _notify(
        self,
        model: ServedModel,
        feeds: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
        status: str,
        total_ns: int,
        queue_ns: int,
        batch_size: int,
    ) -> None:
        for observer in self._observers:
            try:
                observer.on_inference(
                    model.name,
                    model.version,
                    feeds,
                    outputs,
                    status,
                    total_ns / 1e9,
                    queue_ns / 1e9,
                    batch_size,
                )
            except Exception:  # an observer must never fail a request
                log.exception("inference observer %r failed", observer)

    # --- shutting down --------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new requests, let the ones in flight finish, and close every model."""
        self._closing.set()
        self.repository.close()


def _request_samples(model: ServedModel, feeds: Mapping[str, np.ndarray]) -> int:
    """Samples in a request, each input counted along its own batch axis; 1 when none has one."""
    return max(feed_batches(model.installed.manifest.inputs, feeds).values(), default=1)
