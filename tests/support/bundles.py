"""Small, valid, signed bundles for tests, built without torch or onnx.

The model is real: ``tiny_onnx_model()`` hand-encodes the protobuf of a two-node ONNX graph
(``y = x @ W + b``, x: float32 [batch, 4], y: float32 [batch, 3], opset 13), so onnxruntime can
run it and the golden outputs in ``golden.npz`` are exact. Everything is deterministic: the same
arguments give byte-identical bundles.

``read_members`` / ``write_members`` rebuild a bundle's tar with ``tarfile`` directly, so tests can
craft tampered and malicious variants that ``pack_bundle`` would never write.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.bundle import (
    GOLDEN_NAME,
    MANIFEST_NAME,
    REFERENCE_STATS_NAME,
    SIGNATURE_NAME,
    BadSignature,
    BundleError,
    ExtraFile,
    FileRole,
    GoldenSpec,
    HashMismatch,
    LinkMember,
    MalformedBundle,
    MalformedManifest,
    Manifest,
    MissingFile,
    MissingSignature,
    OversizedMember,
    RuntimeSpec,
    TensorSpec,
    UnsafePath,
    UnsupportedMember,
    UntrustedKey,
    build_manifest_files,
    canonical_json,
    key_id,
    pack_bundle,
    sign_manifest_bytes,
)

MODEL_NAME = "model.onnx"
INPUT_NAME = "x"
OUTPUT_NAME = "y"
IN_FEATURES = 4
OUT_FEATURES = 3
FIXED_CREATED = datetime(2024, 1, 1, tzinfo=UTC)


def tiny_weights() -> tuple[np.ndarray, np.ndarray]:
    """The model's W (4x3) and b (3), fixed so that golden outputs are reproducible."""
    weight = (
        np.arange(IN_FEATURES * OUT_FEATURES, dtype=np.float32).reshape(IN_FEATURES, OUT_FEATURES) - 5.5
    ) / 4
    bias = np.array([0.25, -0.5, 1.0], dtype=np.float32)
    return weight, bias


def tiny_forward(x: np.ndarray) -> np.ndarray:
    """What the tiny model computes, in numpy."""
    weight, bias = tiny_weights()
    return (x.astype(np.float32) @ weight + bias).astype(np.float32)


# --- a minimal protobuf writer: just what ModelProto needs -------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are written as ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field_number: int, value: int) -> bytes:
    return _varint(field_number << 3) + _varint(value)


def _bytes(field_number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(field_number << 3 | 2) + _varint(len(data)) + data


_FLOAT = 1  # onnx.TensorProto.FLOAT


def _tensor_type(dims: Sequence[int | str]) -> bytes:
    shape = b"".join(
        _bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d))  # Dimension: dim_param | dim_value
        for d in dims
    )
    return _bytes(1, _int(1, _FLOAT) + _bytes(2, shape))  # TypeProto.tensor_type{elem_type, shape}


def _value_info(name: str, dims: Sequence[int | str]) -> bytes:
    return _bytes(1, name) + _bytes(2, _tensor_type(dims))


def _initializer(name: str, array: np.ndarray) -> bytes:
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, _FLOAT) + _bytes(8, name) + _bytes(9, array.astype("<f4").tobytes())


def _node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str) -> bytes:
    return (
        b"".join(_bytes(1, i) for i in inputs)
        + b"".join(_bytes(2, o) for o in outputs)
        + _bytes(3, name)
        + _bytes(4, op_type)
    )


def tiny_onnx_model(ir_version: int = 8, opset: int = 13) -> bytes:
    """Serialized ONNX ModelProto for ``y = MatMul(x, W) + b`` with a dynamic batch."""
    weight, bias = tiny_weights()
    graph = (
        _bytes(1, _node("MatMul", [INPUT_NAME, "W"], ["xw"], "matmul"))
        + _bytes(1, _node("Add", ["xw", "b"], [OUTPUT_NAME], "add"))
        + _bytes(2, "tiny_linear")
        + _bytes(5, _initializer("W", weight))
        + _bytes(5, _initializer("b", bias))
        + _bytes(11, _value_info(INPUT_NAME, ["batch", IN_FEATURES]))
        + _bytes(12, _value_info(OUTPUT_NAME, ["batch", OUT_FEATURES]))
    )
    opset_import = _bytes(1, "") + _int(2, opset)
    return _int(1, ir_version) + _bytes(2, "edgefleet-tests") + _bytes(7, graph) + _bytes(8, opset_import)


# --- golden data -------------------------------------------------------------------------------


def golden_arrays(samples: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs and expected outputs, keyed by the manifest's tensor names."""
    x = np.random.default_rng(seed).standard_normal((samples, IN_FEATURES)).astype(np.float32)
    return {INPUT_NAME: x, OUTPUT_NAME: tiny_forward(x)}


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` that ``np.load`` reads, with fixed zip timestamps (np.savez stamps 'now')."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), entry.getvalue()
            )
    return buffer.getvalue()


# --- keys and bundles --------------------------------------------------------------------------


def fixed_private_key(seed: int = 0) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key (for byte-identical bundles); never use this outside tests."""
    return Ed25519PrivateKey.from_private_bytes(struct.pack(">Q", seed).rjust(32, b"\x07"))


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    manifest: Manifest
    private_key: Ed25519PrivateKey
    sources: dict[str, Path] = field(repr=False)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


def tiny_manifest(files: Mapping[str, Any], **overrides: Any) -> Manifest:
    """A manifest for the tiny model; ``overrides`` replace top-level fields."""
    fields: dict[str, Any] = {
        "name": "tiny-linear",
        "version": "1.0.0",
        "profile": "test-x86_64",
        "format": "onnx",
        "precision": "fp32",
        "runtime": RuntimeSpec(name="onnxruntime", options={"intra_op_num_threads": 1}),
        "model_file": MODEL_NAME,
        "inputs": [TensorSpec(name=INPUT_NAME, dtype="float32", shape=[-1, IN_FEATURES], layout="NC")],
        "outputs": [TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=[-1, OUT_FEATURES], layout="NC")],
        "files": dict(files),
        "golden": GoldenSpec(file=GOLDEN_NAME, atol=1e-5, rtol=1e-4) if GOLDEN_NAME in files else None,
        "validation": {"top1_agreement": 1.0, "max_abs_error": 0.0, "samples": 4},
        "benchmark": {"p50_ms": 0.01, "p95_ms": 0.02, "runtime": "onnxruntime", "threads": 1},
        "created": FIXED_CREATED,
        "labels": {"origin": "tests.support.bundles"},
    }
    if REFERENCE_STATS_NAME in files:
        fields["reference_stats"] = REFERENCE_STATS_NAME
    fields.update(overrides)
    return Manifest(**fields)


def build_test_bundle(
    out_dir: Path,
    *,
    private_key: Ed25519PrivateKey | None = None,
    file_name: str = "tiny-linear.efb",
    model_bytes: bytes | None = None,
    golden: bool = True,
    reference_stats: bytes | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    **manifest_overrides: Any,
) -> BuiltBundle:
    """Write the tiny model's sources into ``out_dir/src`` and pack a signed bundle beside them."""
    out_dir = Path(out_dir)
    source_dir = out_dir / "src"
    source_dir.mkdir(parents=True, exist_ok=True)
    contents: dict[str, tuple[bytes, FileRole]] = {
        MODEL_NAME: (model_bytes if model_bytes is not None else tiny_onnx_model(), "model")
    }
    if golden:
        contents[GOLDEN_NAME] = (npz_bytes(golden_arrays()), "golden")
    if reference_stats is not None:
        contents[REFERENCE_STATS_NAME] = (reference_stats, "reference_stats")
    for name, data in (extra_files or {}).items():
        contents[name] = (data, "extra")

    sources: dict[str, Path] = {}
    roles: dict[str, tuple[Path, FileRole]] = {}
    for name, (data, role) in contents.items():
        path = source_dir.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sources[name] = path
        roles[name] = (path, role)

    key = private_key if private_key is not None else fixed_private_key()
    manifest = tiny_manifest(build_manifest_files(roles), **manifest_overrides)
    path = pack_bundle(out_dir / file_name, manifest, sources, key)
    return BuiltBundle(path=path, manifest=manifest, private_key=key, sources=sources)


# --- raw tar surgery for tamper tests ----------------------------------------------------------


@dataclass
class RawMember:
    """One tar member as a test wants to write it: any name, any type, any bytes."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    size: int | None = None  # the header's size; defaults to len(data)


def read_members(path: Path) -> list[RawMember]:
    """Every member of a (trusted, test-made) bundle, in order."""
    members: list[RawMember] = []
    with tarfile.open(path, "r:") as tar:
        for info in tar.getmembers():
            handle = tar.extractfile(info) if info.isreg() else None
            data = handle.read() if handle is not None else b""
            members.append(RawMember(info.name, data, info.type, info.linkname))
    return members


def write_members(path: Path, members: Iterable[RawMember], *, end_marker: bool = True) -> Path:
    """Write ``members`` as an uncompressed tar exactly as given: no safety checks, and a header
    ``size`` may lie about the data that follows (for oversize and truncation tests)."""
    blocks = bytearray()
    for member in members:
        info = tarfile.TarInfo(member.name)
        info.type = member.type
        info.linkname = member.linkname
        info.mode = 0o644
        info.size = len(member.data) if member.size is None else member.size
        blocks += info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        blocks += member.data
        blocks += bytes(-len(member.data) % tarfile.BLOCKSIZE)
    if end_marker:
        blocks += bytes(2 * tarfile.BLOCKSIZE)
    Path(path).write_bytes(bytes(blocks))
    return Path(path)


def member_offset(path: Path, name: str) -> tuple[int, int]:
    """(offset of the member's data in the file, its size): where to flip bytes."""
    with tarfile.open(path, "r:") as tar:
        info = tar.getmember(name)
        return info.offset_data, info.size


# --- one tampered variant per failure, shared by the library and CLI tests ---------------------


@dataclass(frozen=True)
class TamperCase:
    """A way to spoil a good bundle, the error it must raise, and what the message must name."""

    id: str
    error: type[BundleError]
    make: Callable[[BuiltBundle, Path], str]  # writes the variant to the path; returns the token


def _edit_members(bundle: BuiltBundle, out: Path, edit: Callable[[list[RawMember]], list[RawMember]]) -> None:
    write_members(out, edit(read_members(bundle.path)))


def _replace(members: list[RawMember], name: str, data: bytes) -> list[RawMember]:
    return [RawMember(m.name, data, m.type, m.linkname) if m.name == name else m for m in members]


def _data(members: list[RawMember], name: str) -> bytes:
    return next(m.data for m in members if m.name == name)


def _resign(members: list[RawMember], manifest_bytes: bytes, key: Ed25519PrivateKey) -> list[RawMember]:
    members = _replace(members, MANIFEST_NAME, manifest_bytes)
    return _replace(members, SIGNATURE_NAME, sign_manifest_bytes(manifest_bytes, key))


def flip_byte(bundle_path: Path, out: Path, member: str, index: int, mask: int = 0xFF) -> Path:
    """Copy the bundle with byte ``index`` of ``member``'s data XOR-ed with ``mask``."""
    data = bytearray(bundle_path.read_bytes())
    offset, size = member_offset(bundle_path, member)
    data[offset + index % size] ^= mask
    out.write_bytes(bytes(data))
    return out


def _model_byte(bundle: BuiltBundle, out: Path) -> str:
    flip_byte(bundle.path, out, MODEL_NAME, bundle.manifest.files[MODEL_NAME].size // 2)
    return MODEL_NAME


def _manifest_field(bundle: BuiltBundle, out: Path) -> str:
    def edit(members: list[RawMember]) -> list[RawMember]:
        obj = json.loads(_data(members, MANIFEST_NAME))
        obj["version"] = "9.9.9"  # a "newer" model under the old signature
        return _replace(members, MANIFEST_NAME, canonical_json(obj))

    _edit_members(bundle, out, edit)
    return "altered"


def _signature_bit(bundle: BuiltBundle, out: Path) -> str:
    def edit(members: list[RawMember]) -> list[RawMember]:
        envelope = json.loads(_data(members, SIGNATURE_NAME))
        raw = bytearray(base64.b64decode(envelope["signature"]))
        raw[0] ^= 0x01
        envelope["signature"] = base64.b64encode(bytes(raw)).decode()
        return _replace(members, SIGNATURE_NAME, canonical_json(envelope))

    _edit_members(bundle, out, edit)
    return bundle.key_id


def _wrong_key(bundle: BuiltBundle, out: Path) -> str:
    other = fixed_private_key(seed=99)
    _edit_members(bundle, out, lambda m: _resign(m, _data(m, MANIFEST_NAME), other))
    return key_id(other.public_key())


def _bad_json(bundle: BuiltBundle, out: Path) -> str:
    _edit_members(bundle, out, lambda m: _resign(m, b'{"name": "tiny-linear",', bundle.private_key))
    return "not valid JSON"


def _schema_error(bundle: BuiltBundle, out: Path) -> str:
    def edit(members: list[RawMember]) -> list[RawMember]:
        obj = json.loads(_data(members, MANIFEST_NAME))
        obj["inputs"][0]["dtype"] = "complex128"
        return _resign(members, canonical_json(obj), bundle.private_key)

    _edit_members(bundle, out, edit)
    return "inputs.0.dtype"


def _drop(name: str) -> Callable[[BuiltBundle, Path], str]:
    def make(bundle: BuiltBundle, out: Path) -> str:
        _edit_members(bundle, out, lambda members: [m for m in members if m.name != name])
        return name

    return make


def _append(member: RawMember, token: str) -> Callable[[BuiltBundle, Path], str]:
    def make(bundle: BuiltBundle, out: Path) -> str:
        _edit_members(bundle, out, lambda members: [*members, member])
        return token

    return make


def _truncated(bundle: BuiltBundle, out: Path) -> str:
    offset, size = member_offset(bundle.path, MODEL_NAME)
    out.write_bytes(bundle.path.read_bytes()[: offset + size // 2])
    return "truncated"


def _not_a_tar(bundle: BuiltBundle, out: Path) -> str:
    out.write_bytes(b"this is a text file, not a model bundle\n" * 40)
    return "not a tar"


def _compressed(bundle: BuiltBundle, out: Path) -> str:
    out.write_bytes(gzip.compress(bundle.path.read_bytes(), mtime=0))
    return "compressed"


def _manifest_not_first(bundle: BuiltBundle, out: Path) -> str:
    _edit_members(bundle, out, lambda members: [*members[2:], *members[:2]])
    return MANIFEST_NAME


def _duplicate(bundle: BuiltBundle, out: Path) -> str:
    _edit_members(bundle, out, lambda m: [*m, RawMember(MODEL_NAME, b"a second, unsigned model")])
    return "twice"


_SYMLINK = RawMember("link", type=tarfile.SYMTYPE, linkname="/etc")
_HARDLINK = RawMember("hard", type=tarfile.LNKTYPE, linkname=MODEL_NAME)
_HUGE = RawMember("huge.bin", b"", size=3 * 1024**3)  # the header claims 3 GiB; the data is absent
_DIRECTORY = RawMember("weights", type=tarfile.DIRTYPE)
_FIFO = RawMember("pipe", type=tarfile.FIFOTYPE)

TAMPER_CASES: tuple[TamperCase, ...] = (
    TamperCase("model-byte", HashMismatch, _model_byte),
    TamperCase("manifest-field", BadSignature, _manifest_field),
    TamperCase("signature-bit", BadSignature, _signature_bit),
    TamperCase("wrong-key", UntrustedKey, _wrong_key),
    TamperCase("missing-signature", MissingSignature, _drop(SIGNATURE_NAME)),
    TamperCase("missing-file", MissingFile, _drop(GOLDEN_NAME)),
    TamperCase("extra-file", ExtraFile, _append(RawMember("notes.txt", b"unsigned"), "notes.txt")),
    TamperCase("traversal", UnsafePath, _append(RawMember("../x", b"escape"), "../x")),
    TamperCase("absolute", UnsafePath, _append(RawMember("/abs/x", b"escape"), "/abs/x")),
    TamperCase("duplicate", UnsafePath, _duplicate),
    TamperCase("symlink", LinkMember, _append(_SYMLINK, "symbolic link")),
    TamperCase("hardlink", LinkMember, _append(_HARDLINK, "hard link")),
    TamperCase("oversized", OversizedMember, _append(_HUGE, "huge.bin")),
    TamperCase("directory", UnsupportedMember, _append(_DIRECTORY, "directory")),
    TamperCase("fifo", UnsupportedMember, _append(_FIFO, "FIFO")),
    TamperCase("bad-json", MalformedManifest, _bad_json),
    TamperCase("schema-error", MalformedManifest, _schema_error),
    TamperCase("truncated", MalformedBundle, _truncated),
    TamperCase("not-a-tar", MalformedBundle, _not_a_tar),
    TamperCase("compressed", MalformedBundle, _compressed),
    TamperCase("manifest-not-first", MalformedBundle, _manifest_not_first),
)
