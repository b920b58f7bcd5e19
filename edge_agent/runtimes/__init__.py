"""Runtime backends behind one interface: ONNX Runtime, LiteRT and OpenVINO.

``open_session`` opens a model file in the runtime for its format; ``open_bundle_session`` opens
a bundle's model with the device's hardware profile and checks it against the manifest. Each
runtime package is imported only when a session for it opens.

    with open_session(Path("model.onnx"), ModelFormat.ONNX, threads=2) as session:
        outputs = session.infer({"input": batch})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_agent.runtimes.base import RuntimeSession, dequantize, quantize
from edge_agent.runtimes.errors import (
    InferenceFailed,
    InvalidInput,
    ModelLoadFailed,
    RuntimeBackendError,
    RuntimeConfigError,
    RuntimeUnavailable,
    SignatureMismatch,
)
from edge_agent.runtimes.options import (
    RUNTIME_FOR_FORMAT,
    ExtraValue,
    RuntimeOptions,
    options_from_profile,
    resolve_runtime_options,
)
from edge_agent.runtimes.session import BaseSession
from edge_agent.runtimes.signature import Signature
from hw_profiles.schema import HardwareProfile, ModelFormat
from models.bundle.manifest import Manifest

__all__ = [
    "RUNTIME_FOR_FORMAT",
    "BaseSession",
    "InferenceFailed",
    "InvalidInput",
    "ModelLoadFailed",
    "RuntimeBackendError",
    "RuntimeConfigError",
    "RuntimeOptions",
    "RuntimeSession",
    "RuntimeUnavailable",
    "Signature",
    "SignatureMismatch",
    "dequantize",
    "open_bundle_session",
    "open_session",
    "options_from_profile",
    "quantize",
    "resolve_runtime_options",
]


def open_session(
    model_path: Path,
    fmt: ModelFormat,
    *,
    threads: int | None = None,
    providers: Sequence[str] = (),
    devices: Sequence[str] = (),
    delegates: Sequence[str] = (),
    options: Mapping[str, ExtraValue] | None = None,
    signature: Signature | None = None,
) -> RuntimeSession:
    """Open ``model_path`` in the runtime for ``fmt``.

    ``threads``: intra-op threads (``None``: the runtime's default; for LiteRT, every core).
    ``providers`` (ONNX Runtime), ``devices`` (OpenVINO), ``delegates`` (LiteRT): in order of
    preference; the ones that are absent are dropped, with a note in ``session.fallbacks``.
    ``options``: runtime-specific extras (see ``edge_agent.runtimes.options``).
    ``signature``: the ``(inputs, outputs)`` a manifest promises; the model must agree
    (``SignatureMismatch`` otherwise), and it supplies the layouts and, where the model file
    cannot carry them, the quantization parameters.
    """
    fmt = ModelFormat(fmt)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelLoadFailed(
            f"model file {model_path} does not exist",
            hint="check the path, or extract the bundle again",
        )
    if threads is not None and threads < 1:
        raise RuntimeConfigError(f"threads must be at least 1, got {threads}", hint="omit it for the default")
    extra = dict(options or {})
    if fmt is ModelFormat.ONNX:
        from edge_agent.runtimes.onnxruntime_backend import OnnxRuntimeSession

        return OnnxRuntimeSession(
            model_path, threads=threads, providers=providers, extra=extra, signature=signature
        )
    if fmt is ModelFormat.TFLITE:
        from edge_agent.runtimes.litert_backend import LiteRTSession

        return LiteRTSession(
            model_path, threads=threads, delegates=delegates, extra=extra, signature=signature
        )
    from edge_agent.runtimes.openvino_backend import OpenVINOSession

    return OpenVINOSession(model_path, threads=threads, devices=devices, extra=extra, signature=signature)


def open_bundle_session(
    directory: Path, manifest: Manifest, profile: HardwareProfile | None = None
) -> RuntimeSession:
    """Open an extracted bundle's model with the profile's runtime options (or the manifest's).

    The model's real signature must match ``manifest.inputs``/``manifest.outputs``
    (``SignatureMismatch`` lists every difference).
    """
    directory = Path(directory)
    model_path = (directory / manifest.model_file).resolve()
    if not model_path.is_relative_to(directory.resolve()):
        raise ModelLoadFailed(
            f"manifest model_file {manifest.model_file!r} points outside the bundle directory",
            hint="refuse this bundle: verify it with `edgefleet bundle verify`",
        )
    options = resolve_runtime_options(manifest, profile)
    return open_session(
        model_path,
        manifest.format,
        threads=options.threads,
        providers=options.providers,
        devices=options.devices,
        delegates=options.delegates,
        options=options.extra,
        signature=(manifest.inputs, manifest.outputs),
    )
