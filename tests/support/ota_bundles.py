"""Signed bundles for the OTA tests: several versions of one model, good and bad on purpose.

Two families:

- **Small and fast** (no torch, built in the test process):
  ``tiny_release`` packs the tiny linear model (``tests.support.bundles``) under any version,
  optionally with golden outputs that do not match the model (``broken_golden``); ``gather_release``
  packs ``y = table[indices]`` with a table of 1000 entries (healthy) or 10 (faulty: a request
  with an index of 10 or more fails inside ONNX Runtime, while the golden inputs stay in range).
- **Digits** (the zoo's digits CNN, exported to ONNX by PyTorch in a child process, once per test
  session): ``1.0.0`` and ``2.0.0`` (good), ``3.0.0`` (broken: its golden outputs belong to another
  model, so the device's golden check fails), ``4.0.0`` (slow: the same answers behind a stack
  of wide convolutions, many times the latency) and ``0.9.0`` (older, for anti-rollback).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.bundle import (
    GOLDEN_NAME,
    FileEntry,
    FileRole,
    GoldenSpec,
    Manifest,
    RuntimeSpec,
    TensorSpec,
    build_manifest_files,
    inspect_bundle,
    pack_bundle,
    sha256_file,
    verify_bundle,
)
from tests.support import bundles as tiny
from tests.support.bundles import fixed_private_key, npz_bytes
from tests.support.digits_bundles import INPUT_NAME, OUTPUT_NAME, write_public_key

GATHER_NAME = "gather"
HEALTHY_TABLE = 1000
FAULTY_TABLE = 10


@dataclass(frozen=True)
class Release:
    """One bundle as the fleet would announce it."""

    path: Path
    name: str
    version: str
    sha256: str
    size: int

    @classmethod
    def of(cls, path: Path, manifest: Manifest) -> Release:
        digest, size = sha256_file(path)
        return cls(path=path, name=manifest.name, version=manifest.version, sha256=digest, size=size)


def _release(
    out_dir: Path,
    file_name: str,
    contents: Mapping[str, tuple[bytes, FileRole]],
    manifest: Callable[[dict[str, FileEntry]], Manifest],
    key: Ed25519PrivateKey | None,
) -> Release:
    """Write ``contents`` beside the bundle, describe them in ``manifest(files)``, pack and sign."""
    source_dir = out_dir / f"src-{file_name}"
    source_dir.mkdir(parents=True, exist_ok=True)
    roles: dict[str, tuple[Path, FileRole]] = {}
    for name, (data, role) in contents.items():
        (source_dir / name).write_bytes(data)
        roles[name] = (source_dir / name, role)
    described = manifest(build_manifest_files(roles))
    sources = {name: path for name, (path, _) in roles.items()}
    path = pack_bundle(out_dir / file_name, described, sources, key or fixed_private_key())
    return Release.of(path, described)


# --- the tiny linear model -------------------------------------------------------------------------


def tiny_release(
    out_dir: Path,
    version: str,
    *,
    broken_golden: bool = False,
    key: Ed25519PrivateKey | None = None,
    **manifest: Any,
) -> Release:
    """``tiny-linear`` at ``version``; ``broken_golden``: golden outputs the model does not produce;
    ``manifest``: other manifest fields to set."""
    golden = tiny.golden_arrays()
    if broken_golden:
        # Another model's answers: shifted and with the classes rotated, so values and top-1 differ.
        golden[tiny.OUTPUT_NAME] = np.roll(golden[tiny.OUTPUT_NAME], 1, axis=1) + np.float32(3.0)
    contents: dict[str, tuple[bytes, FileRole]] = {
        tiny.MODEL_NAME: (tiny.tiny_onnx_model(), "model"),
        GOLDEN_NAME: (npz_bytes(golden), "golden"),
    }
    file_name = f"tiny-linear-{version}{'-broken' if broken_golden else ''}.efb"
    return _release(
        out_dir,
        file_name,
        contents,
        lambda files: tiny.tiny_manifest(files, version=version, **manifest),
        key,
    )


# --- the gather model: healthy, or failing for some requests ---------------------------------------


def gather_model(table_size: int) -> bytes:
    """``values = table[indices]`` with ``table[i] = 1.5 * i``; indices of ``table_size`` or more fail."""
    import onnx
    from onnx import TensorProto, helper

    table = helper.make_tensor(
        "table", TensorProto.FLOAT, [table_size], [float(i) * 1.5 for i in range(table_size)]
    )
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "indices"], ["values"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch"])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def gather_release(
    out_dir: Path, version: str, *, faulty: bool, key: Ed25519PrivateKey | None = None
) -> Release:
    """``gather`` at ``version``; its golden inputs (indices 0-9) pass on both tables."""
    indices = np.arange(FAULTY_TABLE, dtype=np.int64)
    golden: dict[str, np.ndarray] = {"indices": indices, "values": (indices * 1.5).astype(np.float32)}
    contents: dict[str, tuple[bytes, FileRole]] = {
        "model.onnx": (gather_model(FAULTY_TABLE if faulty else HEALTHY_TABLE), "model"),
        GOLDEN_NAME: (npz_bytes(golden), "golden"),
    }

    def manifest(files: dict[str, FileEntry]) -> Manifest:
        return Manifest(
            name=GATHER_NAME,
            version=version,
            profile="generic-x86",
            format="onnx",
            precision="fp32",
            runtime=RuntimeSpec(name="onnxruntime", options={"threads": 1}),
            model_file="model.onnx",
            inputs=[TensorSpec(name="indices", dtype="int64", shape=[-1], layout="ANY")],
            outputs=[TensorSpec(name="values", dtype="float32", shape=[-1], layout="ANY")],
            files=files,
            golden=GoldenSpec(file=GOLDEN_NAME, atol=1e-6, rtol=1e-6, min_top1_agreement=1.0),
            labels={"origin": "tests.support.ota_bundles"},
        )

    return _release(out_dir, f"gather-{version}.efb", contents, manifest, key)


# --- digits: good, broken, slow, older -----------------------------------------------------------

DIGITS_VERSIONS = {"older": "0.9.0", "v1": "1.0.0", "v2": "2.0.0", "broken": "3.0.0", "slow": "4.0.0"}
DIGITS_NAME = "digits-cnn-onnx"
_DESCRIPTION = "ota-bundles.json"


@dataclass(frozen=True)
class DigitsReleases:
    releases: dict[str, Release]
    public_key_path: Path
    golden_inputs: np.ndarray
    golden_outputs: np.ndarray

    def __getitem__(self, kind: str) -> Release:
        return self.releases[kind]


def _slow_module(inner: Any) -> Any:
    """``inner`` with an expensive, almost-silent branch: the same classes, many times the latency."""
    import torch

    class SlowDigits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            torch.manual_seed(4)
            # The 8x8 digit blown up to 96x96, then 32-channel convolutions: ~1.7 GFLOP a sample.
            layers: list[torch.nn.Module] = [
                torch.nn.Upsample(scale_factor=12, mode="nearest"),
                torch.nn.Conv2d(1, 32, 3, padding=1),
                torch.nn.ReLU(),
            ]
            for _ in range(10):
                layers += [torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU()]
            self.heavy = torch.nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Scaled to 1e-6 of the logits' size: it changes no class, but it must be computed.
            return self.inner(x) + 1e-6 * torch.tanh(self.heavy(x).mean(dim=(1, 2, 3))).unsqueeze(1)

    return SlowDigits().eval()


def build_digits_releases(out_dir: Path) -> DigitsReleases:
    """Build every digits release (imports torch: run it in a child process, see ``digits_releases``)."""
    import torch

    from models.zoo import get_reference
    from tests.support.digits_bundles import GOLDEN_SAMPLES, build_model_bundles, rebuild_with_version

    reference = get_reference("digits-cnn")
    model = reference.load()
    inputs = np.ascontiguousarray(reference.datasets().eval_inputs[:GOLDEN_SAMPLES], dtype=np.float32)
    key = fixed_private_key()
    base = build_model_bundles(
        model, inputs, out_dir / "v1", base_name="digits-cnn", formats=("onnx",), key=key
    )
    releases = {"v1": base.path("onnx")}
    for kind in ("older", "v2"):
        releases[kind] = rebuild_with_version(base, "onnx", DIGITS_VERSIONS[kind], out_dir / kind)

    # Broken: v1's model with the golden outputs of another model (class scores rotated).
    v1_manifest = verify_bundle(base.path("onnx"), [key.public_key()]).manifest
    golden = {INPUT_NAME: inputs, OUTPUT_NAME: np.roll(base.golden_outputs, 3, axis=1)}
    broken_contents: dict[str, tuple[bytes, FileRole]] = {
        "model.onnx": ((out_dir / "v1" / "exports" / "model.onnx").read_bytes(), "model"),
        GOLDEN_NAME: (npz_bytes(golden), "golden"),
    }
    releases["broken"] = _release(
        out_dir / "broken",
        f"{DIGITS_NAME}-{DIGITS_VERSIONS['broken']}.efb",
        broken_contents,
        lambda files: v1_manifest.model_copy(update={"version": DIGITS_VERSIONS["broken"], "files": files}),
        key,
    ).path

    with torch.no_grad():
        slow = _slow_module(model)
        slow_set = build_model_bundles(
            slow,
            inputs,
            out_dir / "slow",
            base_name="digits-cnn",
            version=DIGITS_VERSIONS["slow"],
            formats=("onnx",),
            key=key,
        )
    releases["slow"] = slow_set.path("onnx")
    public = write_public_key(key, out_dir / "trusted.pub.pem")
    (out_dir / GOLDEN_NAME).write_bytes(npz_bytes({INPUT_NAME: inputs, OUTPUT_NAME: base.golden_outputs}))
    (out_dir / _DESCRIPTION).write_text(
        json.dumps(
            {"releases": {k: str(v) for k, v in releases.items()}, "public_key_path": str(public)}, indent=1
        )
    )
    return load_digits_releases(out_dir)


def load_digits_releases(out_dir: Path) -> DigitsReleases:
    data = json.loads((out_dir / _DESCRIPTION).read_text())
    releases = {}
    for kind, path in data["releases"].items():
        releases[kind] = Release.of(Path(path), inspect_bundle(Path(path)))
    with np.load(out_dir / GOLDEN_NAME) as golden:
        inputs, outputs = golden[INPUT_NAME], golden[OUTPUT_NAME]
    return DigitsReleases(releases, Path(data["public_key_path"]), inputs, outputs)


_SHARED: dict[str, DigitsReleases] = {}


def digits_releases(tmp_path_factory: Any) -> DigitsReleases:
    """Every digits release, built once per test session in a child process (torch stays out)."""
    if "digits" not in _SHARED:
        out_dir = tmp_path_factory.mktemp("ota-digits")
        command = [sys.executable, "-m", "tests.support.ota_bundles", str(out_dir)]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"building the OTA digits bundles failed:\n{result.stderr[-4000:]}")
        _SHARED["digits"] = load_digits_releases(out_dir)
    return _SHARED["digits"]


def _main(argv: Sequence[str]) -> int:
    build_digits_releases(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
