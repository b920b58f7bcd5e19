"""Local inference over the Open Inference Protocol v2: repository, batching, statistics, gRPC server.

Layers, inside out:

* ``codec``, ``validation``, ``statistics``: pure functions and counters;
* ``batcher`` and ``model``: running requests on one loaded version (dynamic batching, leases);
* ``installer`` and ``repository``: verified bundles on disk, versions, load/unload, routing;
* ``engine``: the protocol's semantics with no transport (the in-process API uses it directly);
* ``servicer`` and ``server``: the gRPC shell (imported lazily, so the engine alone needs no grpcio).

    engine = InferenceEngine.create(data_dir=Path("data"), trusted_keys=keys)
    engine.install(Path("digits-cnn-1.0.0.efb"))
    server = AgentServer(engine, ServerConfig(grpc_address="127.0.0.1:8001", uds_path=Path("agent.sock")))
    listening = server.start()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_agent.serving.batcher import DirectExecutor, DynamicBatcher, Execution
from edge_agent.serving.codec import DATATYPE_TO_DTYPE, DTYPE_TO_DATATYPE, datatype_of, decode_raw, encode_raw
from edge_agent.serving.diagnostics import HEAVY_PACKAGES, MODULES_DUMP_ENV, heavy_modules
from edge_agent.serving.engine import (
    EXTENSIONS,
    SERVER_NAME,
    InferenceEngine,
    InferenceObserver,
    InferRequest,
    InferResponse,
    InputTensor,
    ModelMetadata,
    OutputTensor,
    TensorMetadata,
)
from edge_agent.serving.errors import (
    AddressInUse,
    InferenceError,
    InvalidRequest,
    LoadFailed,
    ModelNotFound,
    ServerUnavailable,
    ServingError,
)
from edge_agent.serving.installer import BundleInstaller, InstalledBundle
from edge_agent.serving.model import BatchingConfig, ServedModel
from edge_agent.serving.repository import IndexEntry, ModelRepository, ModelState
from edge_agent.serving.statistics import BatchStats, Duration, InferStats, ModelStats, Timings
from edge_agent.serving.validation import TensorContract

if TYPE_CHECKING:
    from edge_agent.serving.server import AgentServer, Listening, ServerConfig
    from edge_agent.serving.servicer import InferenceServicer

_LAZY = {
    "AgentServer": "edge_agent.serving.server",
    "Listening": "edge_agent.serving.server",
    "ServerConfig": "edge_agent.serving.server",
    "InferenceServicer": "edge_agent.serving.servicer",
}

__all__ = [
    "DATATYPE_TO_DTYPE",
    "DTYPE_TO_DATATYPE",
    "EXTENSIONS",
    "HEAVY_PACKAGES",
    "MODULES_DUMP_ENV",
    "SERVER_NAME",
    "AddressInUse",
    "AgentServer",
    "BatchStats",
    "BatchingConfig",
    "BundleInstaller",
    "DirectExecutor",
    "Duration",
    "DynamicBatcher",
    "Execution",
    "IndexEntry",
    "InferRequest",
    "InferResponse",
    "InferStats",
    "InferenceEngine",
    "InferenceError",
    "InferenceObserver",
    "InferenceServicer",
    "InputTensor",
    "InstalledBundle",
    "InvalidRequest",
    "Listening",
    "LoadFailed",
    "ModelMetadata",
    "ModelNotFound",
    "ModelRepository",
    "ModelState",
    "ModelStats",
    "OutputTensor",
    "ServedModel",
    "ServerConfig",
    "ServerUnavailable",
    "ServingError",
    "TensorContract",
    "TensorMetadata",
    "Timings",
    "datatype_of",
    "decode_raw",
    "encode_raw",
    "heavy_modules",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_agent.serving' has no attribute {name!r}")
