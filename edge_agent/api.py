"""In-process inference for applications on the device: the agent's semantics, no network.

``LocalInference`` verifies and loads bundles exactly as ``edgefleet agent serve`` does and
answers through the same engine: the same input checks, dynamic batching across threads,
versions, statistics, and the same errors (``ModelNotFound``, ``InvalidRequest``,
``InferenceError``: each ``ServingError`` carries the gRPC ``status`` a network client would get).

    from edge_agent.api import LocalInference

    with LocalInference([Path("digits-cnn-1.0.0.efb")], trusted_keys=[Path("release.pub.pem")]) as local:
        logits = local.infer("digits-cnn", {"input": batch})["logits"]

Inputs are numpy arrays in the datatype the model's metadata gives (float32 for quantized
models, unless ``raw=True``); a float64 array is refused as a network request declaring FP64
would be.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.serving import (
    BatchingConfig,
    IndexEntry,
    InferenceEngine,
    InferRequest,
    InferResponse,
    InputTensor,
    InstalledBundle,
    ModelMetadata,
    ModelStats,
)
from hw_profiles import HardwareProfile, load_profile
from models.bundle import load_trusted_keys

__all__ = ["LocalInference"]


class LocalInference:
    """Serve bundles inside this process. Close it (or use ``with``) to drain and release the models."""

    def __init__(
        self,
        bundles: Sequence[Path] = (),
        *,
        trusted_keys: Sequence[Path | Ed25519PublicKey],
        profile: str | HardwareProfile | None = None,
        data_dir: Path | None = None,
        max_batch: int = 8,
        batch_delay_ms: float = 2.0,
        batch_workers: int = 1,
    ) -> None:
        """Verify and load each of ``bundles``; ``data_dir`` ``None`` extracts into a temporary directory.

        Raises the verifier's ``BundleError`` for a refused bundle and ``LoadFailed`` for a model its
        runtime cannot open; nothing stays loaded after either.
        """
        keys = [key for key in trusted_keys if isinstance(key, Ed25519PublicKey)]
        keys += load_trusted_keys(
            [Path(key) for key in trusted_keys if not isinstance(key, Ed25519PublicKey)]
        )
        hardware = load_profile(profile) if isinstance(profile, str) else profile
        self._temporary = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="edgefleet-local-")) if data_dir is None else Path(data_dir)
        )
        self.engine = InferenceEngine.create(
            data_dir=self.data_dir,
            trusted_keys=keys,
            profile=hardware,
            batching=BatchingConfig(
                max_batch=max_batch, max_delay_s=batch_delay_ms / 1000, workers=batch_workers
            ),
        )
        try:
            self.installed: list[InstalledBundle] = [self.engine.install(Path(bundle)) for bundle in bundles]
        except BaseException:
            self.close()
            raise

    # --- inference ------------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str = "",
        outputs: Sequence[str] = (),
        raw: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run one request; returns the outputs by name (all of them unless ``outputs`` names some)."""
        return self.infer_response(model, inputs, version=version, outputs=outputs, raw=raw).as_dict()

    def infer_response(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str = "",
        outputs: Sequence[str] = (),
        raw: bool = False,
        request_id: str = "",
    ) -> InferResponse:
        """Like ``infer``, with the version that answered and each output's datatype and shape."""
        request = InferRequest(
            model_name=model,
            model_version=version,
            id=request_id,
            inputs=[InputTensor.from_array(name, value) for name, value in inputs.items()],
            outputs=list(outputs),
            raw=raw,
        )
        return self.engine.infer(request)

    # --- models ---------------------------------------------------------------------------------

    def ready(self, model: str, version: str = "") -> bool:
        return self.engine.model_ready(model, version)

    def metadata(self, model: str, version: str = "") -> ModelMetadata:
        return self.engine.model_metadata(model, version)

    def statistics(self, model: str = "", version: str = "") -> list[ModelStats]:
        return self.engine.statistics(model, version)

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        return self.engine.index(ready_only=ready_only)

    def load(self, model: str, *, version: str | None = None, bundle: Path | None = None) -> list[str]:
        """Load a known model's version(s), or verify ``bundle`` and load it (a new version, say)."""
        return self.engine.load_model(model, version=version, bundle=bundle)

    def unload(self, model: str, *, version: str | None = None) -> list[str]:
        """Unload after the requests in flight on it finish."""
        return self.engine.unload_model(model, version=version)

    # --- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        self.engine.close()
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
