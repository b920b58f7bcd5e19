"""Bundle packing, verification and extraction throughput, against plain sha256 of the same bytes.

Verification has to hash every byte once, so sha256 over the model file is its floor; the ratio
says what the tar handling, signature check and safety checks cost on top.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.report import write_results
from models.bundle import (
    Manifest,
    RuntimeSpec,
    TensorSpec,
    extract_bundle,
    file_entry,
    generate_keypair,
    load_private_key,
    load_public_key,
    pack_bundle,
    verify_bundle,
)

SIZES_MB = (4, 32)
REPEATS = 5


def _best_of(action: Callable[[], object], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(model: Path) -> Manifest:
    spec = TensorSpec(name="x", dtype="float32", shape=[-1, 4])
    return Manifest(
        name="bench",
        version="1.0.0",
        profile="generic-x86",
        format="onnx",
        precision="fp32",
        runtime=RuntimeSpec(name="onnxruntime"),
        model_file=model.name,
        inputs=[spec],
        outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 3])],
        files={model.name: file_entry(model)},
    )


def _measure(workdir: Path, size_mb: int) -> list[object]:
    model = workdir / f"model-{size_mb}.onnx"
    model.write_bytes(np.random.default_rng(size_mb).bytes(size_mb << 20))
    key_path, pub_path = generate_keypair(workdir / f"keys-{size_mb}")
    key, trusted = load_private_key(key_path), [load_public_key(pub_path)]
    manifest = _manifest(model)
    bundle = workdir / f"bench-{size_mb}.efb"
    counter = iter(range(1_000_000))

    floor = _best_of(lambda: _sha256(model))
    pack = _best_of(lambda: pack_bundle(bundle, manifest, {model.name: model}, key))
    verify = _best_of(lambda: verify_bundle(bundle, trusted))
    extract = _best_of(lambda: extract_bundle(bundle, workdir / f"x{size_mb}-{next(counter)}", trusted))
    mb = float(size_mb)
    return [
        size_mb,
        round(mb / floor, 1),
        round(mb / pack, 1),
        round(mb / verify, 1),
        round(mb / extract, 1),
        round(verify / floor, 2),
    ]


def run() -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        rows = [_measure(Path(tmp), size) for size in SIZES_MB]
    columns = [
        "model MB",
        "sha256 MB/s (floor)",
        "pack MB/s",
        "verify MB/s",
        "extract MB/s",
        "verify time / sha256 time",
    ]
    _, md_path = write_results(
        "bundle",
        "Bundle pack / verify / extract throughput (best of 5)",
        columns,
        rows,
        {"repeats": REPEATS},
    )
    return [md_path]
