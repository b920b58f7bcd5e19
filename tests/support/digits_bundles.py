"""Real, signed bundles of the zoo's models in ONNX, TFLite and OpenVINO form, for the agent's tests.

Built straight from the ``models`` API (the converter is not needed): load the reference model,
export it (ONNX with a dynamic batch through ``torch.onnx.export(dynamo=True)``, OpenVINO IR from
that ONNX file, TFLite through ``litert_torch.convert``), compute golden outputs with PyTorch, and
pack with ``models.bundle.pack_bundle``. Building all three digits bundles takes tens of seconds
(most of it importing TensorFlow for litert-torch), so it runs in a child process
(``build_in_subprocess``: the test process never loads torch, TensorFlow or JAX) and once per test
session (``shared_bundles``, which each test module's fixture calls).

Also here: ``build_faulty_bundle``, a tiny ONNX model that fails *at run time* for some inputs (a
Gather with an out-of-range index), which is how the tests reach the INTERNAL error path honestly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.bundle import (
    GOLDEN_NAME,
    FileRole,
    GoldenSpec,
    Manifest,
    RuntimeSpec,
    TensorSpec,
    build_manifest_files,
    extract_bundle,
    pack_bundle,
)
from tests.support.bundles import fixed_private_key, npz_bytes

PROFILE = "generic-x86"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
GOLDEN_SAMPLES = 16
# fp32 exports of the same weights: the runtimes differ from PyTorch only in summation order.
FP32_ATOL = 1e-4
FP32_RTOL = 1e-3
FORMATS = ("onnx", "tflite", "openvino")
_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "openvino": "openvino"}

FAULTY_NAME = "faulty-gather"
FAULTY_TABLE_SIZE = 10


@dataclass(frozen=True)
class BundleSet:
    """Bundles of one model by format, the key that signed them, and the golden inputs."""

    bundles: dict[str, Path]
    names: dict[str, str]
    private_key: Ed25519PrivateKey
    public_key_path: Path
    golden_inputs: np.ndarray
    golden_outputs: np.ndarray

    def path(self, fmt: str) -> Path:
        return self.bundles[fmt]

    def name(self, fmt: str) -> str:
        return self.names[fmt]


def write_public_key(private_key: Ed25519PrivateKey, path: Path) -> Path:
    """The PEM public key a verifier trusts (what ``--trusted-key`` takes)."""
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    return path


def export_onnx(model: Any, sample: np.ndarray, path: Path) -> Path:
    """fp32 ONNX with a dynamic batch, one file (no ``.onnx.data`` sidecar)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    torch.onnx.export(
        model,
        (torch.from_numpy(sample),),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    return path


def export_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """OpenVINO IR from the ONNX file, weights kept in fp32 (``save_model`` compresses to fp16 by default)."""
    import openvino

    openvino.save_model(openvino.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def export_tflite(model: Any, sample: np.ndarray, path: Path) -> Path:
    """TFLite through litert-torch, its signature named ``input`` → ``logits`` (static batch of 1)."""
    import litert_torch
    import torch

    class NamedIO(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
            return {OUTPUT_NAME: self.inner(input)}

    litert_torch.config.show_progress = False
    converted = litert_torch.convert(
        NamedIO().eval(), sample_kwargs={INPUT_NAME: torch.from_numpy(sample[:1])}
    )
    converted.export(str(path))
    return path


def _manifest(
    *,
    name: str,
    version: str,
    fmt: str,
    model_file: str,
    sample_shape: Sequence[int],
    classes: int,
    files: dict[str, tuple[Path, FileRole]],
) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        profile=PROFILE,
        format=fmt,
        precision="fp32",
        runtime=RuntimeSpec(name=_RUNTIME[fmt], options={"threads": 1}),
        model_file=model_file,
        inputs=[TensorSpec(name=INPUT_NAME, dtype="float32", shape=[-1, *sample_shape], layout="NCHW")],
        outputs=[TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=[-1, classes], layout="NC")],
        files=build_manifest_files(files),
        golden=GoldenSpec(file=GOLDEN_NAME, atol=FP32_ATOL, rtol=FP32_RTOL),
        labels={"origin": "tests.support.digits_bundles"},
    )


def build_model_bundles(
    model: Any,
    golden_inputs: np.ndarray,
    out_dir: Path,
    *,
    base_name: str,
    version: str = "1.0.0",
    formats: Sequence[str] = FORMATS,
    key: Ed25519PrivateKey | None = None,
) -> BundleSet:
    """Export ``model`` (a torch module in eval mode) to each format and pack one bundle per format.

    Each bundle's model is named ``{base_name}-{format}``, so all of them can be served side by side.
    """
    import torch

    key = key if key is not None else fixed_private_key()
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        golden_outputs = model(torch.from_numpy(golden_inputs)).numpy()
    golden_path = out_dir / GOLDEN_NAME
    golden_path.write_bytes(npz_bytes({INPUT_NAME: golden_inputs, OUTPUT_NAME: golden_outputs}))

    work = out_dir / "exports"
    work.mkdir(exist_ok=True)
    onnx_path = export_onnx(model, golden_inputs, work / "model.onnx")
    exports: dict[str, Callable[[], dict[str, tuple[Path, FileRole]]]] = {
        "onnx": lambda: {"model.onnx": (onnx_path, "model")},
        "openvino": lambda: _openvino_files(onnx_path, work),
        "tflite": lambda: {
            "model.tflite": (export_tflite(model, golden_inputs, work / "model.tflite"), "model")
        },
    }
    bundles: dict[str, Path] = {}
    names: dict[str, str] = {}
    for fmt in formats:
        files = exports[fmt]()
        model_file = next(name for name, (_, role) in files.items() if role == "model")
        files[GOLDEN_NAME] = (golden_path, "golden")
        name = f"{base_name}-{fmt}"
        manifest = _manifest(
            name=name,
            version=version,
            fmt=fmt,
            model_file=model_file,
            sample_shape=golden_inputs.shape[1:],
            classes=int(golden_outputs.shape[1]),
            files=files,
        )
        sources = {member: path for member, (path, _) in files.items()}
        bundles[fmt] = pack_bundle(out_dir / f"{name}-{version}.efb", manifest, sources, key)
        names[fmt] = name
    return BundleSet(
        bundles=bundles,
        names=names,
        private_key=key,
        public_key_path=write_public_key(key, out_dir / "trusted.pub"),
        golden_inputs=golden_inputs,
        golden_outputs=golden_outputs,
    )


def _openvino_files(onnx_path: Path, work: Path) -> dict[str, tuple[Path, FileRole]]:
    xml = export_openvino(onnx_path, work / "model.xml")
    return {"model.xml": (xml, "model"), "model.bin": (xml.with_suffix(".bin"), "weights")}


def build_digits_bundles(out_dir: Path, *, formats: Sequence[str] = FORMATS) -> BundleSet:
    """``digits-cnn-onnx``, ``-tflite`` and ``-openvino`` 1.0.0, signed by the fixed test key."""
    from models.zoo import get_reference

    reference = get_reference("digits-cnn")
    golden_inputs = np.ascontiguousarray(reference.datasets().eval_inputs[:GOLDEN_SAMPLES], dtype=np.float32)
    return build_model_bundles(
        reference.load(), golden_inputs, out_dir, base_name="digits-cnn", formats=formats
    )


def rebuild_with_version(bundles: BundleSet, fmt: str, version: str, out_dir: Path) -> Path:
    """The same model as ``bundles``' ``fmt`` bundle, packed again as ``version`` (same key)."""
    extract_dir = out_dir / f"extract-{fmt}-{version}"
    verified = extract_bundle(bundles.path(fmt), extract_dir, [bundles.private_key.public_key()])
    manifest = verified.manifest.model_copy(update={"version": version})
    sources = {name: extract_dir / name for name in manifest.files}
    return pack_bundle(out_dir / f"{manifest.name}-{version}.efb", manifest, sources, bundles.private_key)


# --- a model that fails at run time --------------------------------------------------------------


def faulty_onnx_model() -> bytes:
    """``y = Gather(table, indices)``: indices (int64 [N]) outside [-10, 10) fail inside ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper

    table = helper.make_tensor(
        "table", TensorProto.FLOAT, [FAULTY_TABLE_SIZE], [float(i) * 1.5 for i in range(FAULTY_TABLE_SIZE)]
    )
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "indices"], ["values"], axis=0)],
        "faulty_gather",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch"])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def faulty_forward(indices: np.ndarray) -> np.ndarray:
    """What the faulty model returns for in-range indices."""
    return (indices.astype(np.float32) * np.float32(1.5)).astype(np.float32)


def build_faulty_bundle(out_dir: Path, *, key: Ed25519PrivateKey | None = None) -> Path:
    """A signed bundle of ``faulty_onnx_model`` (``faulty-gather`` 1.0.0)."""
    key = key if key is not None else fixed_private_key()
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "faulty.onnx"
    model_path.write_bytes(faulty_onnx_model())
    files: dict[str, tuple[Path, FileRole]] = {"model.onnx": (model_path, "model")}
    manifest = Manifest(
        name=FAULTY_NAME,
        version="1.0.0",
        profile=PROFILE,
        format="onnx",
        precision="fp32",
        runtime=RuntimeSpec(name="onnxruntime", options={"threads": 1}),
        model_file="model.onnx",
        inputs=[TensorSpec(name="indices", dtype="int64", shape=[-1], layout="ANY")],
        outputs=[TensorSpec(name="values", dtype="float32", shape=[-1], layout="ANY")],
        files=build_manifest_files(files),
        labels={"origin": "tests.support.digits_bundles"},
    )
    return pack_bundle(out_dir / f"{FAULTY_NAME}-1.0.0.efb", manifest, {"model.onnx": model_path}, key)


# --- building in a child process, once per test session --------------------------------------------

_DESCRIPTION = "bundles.json"
_SHARED: dict[tuple[str, tuple[str, ...]], BundleSet] = {}


def build_in_subprocess(
    out_dir: Path, *, model: str = "digits-cnn", formats: Sequence[str] = FORMATS
) -> BundleSet:
    """Run the build in a child Python, so torch, TensorFlow and JAX never load into the caller.

    The test process then talks to agents and runtimes without a few hundred MB of frameworks and
    their thread pools; the child's output is read back from ``bundles.json``.
    """
    import subprocess
    import sys

    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.support.digits_bundles", str(out_dir), model, ",".join(formats)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"building {model} bundles failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return load_description(out_dir)


def load_description(out_dir: Path) -> BundleSet:
    import json

    data = json.loads((out_dir / _DESCRIPTION).read_text())
    golden = np.load(out_dir / GOLDEN_NAME)
    return BundleSet(
        bundles={fmt: Path(path) for fmt, path in data["bundles"].items()},
        names=dict(data["names"]),
        private_key=fixed_private_key(),
        public_key_path=Path(data["public_key_path"]),
        golden_inputs=golden[INPUT_NAME],
        golden_outputs=golden[OUTPUT_NAME],
    )


def shared_bundles(
    tmp_path_factory: Any, *, model: str = "digits-cnn", formats: Sequence[str] = FORMATS
) -> BundleSet:
    """One build per test session, shared by every module that asks (pytest's ``tmp_path_factory``)."""
    key = (model, tuple(formats))
    if key not in _SHARED:
        _SHARED[key] = build_in_subprocess(
            tmp_path_factory.mktemp(f"{model}-bundles"), model=model, formats=formats
        )
    return _SHARED[key]


def _main(argv: Sequence[str]) -> int:
    import json

    out_dir, model, formats = Path(argv[0]), argv[1], argv[2].split(",")
    if model == "digits-cnn":
        built = build_digits_bundles(out_dir, formats=formats)
    else:
        from models.zoo import get_reference

        reference = get_reference(model)
        inputs = np.ascontiguousarray(reference.datasets().eval_inputs[:GOLDEN_SAMPLES], dtype=np.float32)
        built = build_model_bundles(reference.load(), inputs, out_dir, base_name=model, formats=formats)
    description = {
        "bundles": {fmt: str(path) for fmt, path in built.bundles.items()},
        "names": built.names,
        "public_key_path": str(built.public_key_path),
    }
    (out_dir / _DESCRIPTION).write_text(json.dumps(description, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
