"""The bundle manifest: the one contract between the converter, the fleet server and the agent.

``manifest.json`` describes everything a device needs to run a model without guessing: the
format and runtime, the typed I/O signature with quantization parameters (so a client can always
send float), the files with their hashes, and the figures the converter measured. It is signed as
canonical JSON (``canonical_bytes``), so the same manifest always signs to the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from hw_profiles.schema import ModelFormat, Precision, RuntimeName
from models.versioning import parse_version

SCHEMA_VERSION: Final = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
REFERENCE_STATS_NAME = "reference_stats.json"
GOLDEN_NAME = "golden.npz"
RESERVED_NAMES = frozenset({MANIFEST_NAME, SIGNATURE_NAME})

# Member names are deliberately narrow: plain relative paths whose segments use letters, digits
# and '._+-'. That rules out traversal ('..'), absolute and drive paths, backslashes, control
# characters and Unicode look-alikes on every platform the agent runs on, before any I/O.
MAX_MEMBER_NAME_LENGTH = 255
MAX_MEMBER_DEPTH = 8
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")

TensorDType = Literal["float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"]
Layout = Literal["NCHW", "NHWC", "NC", "NLC", "ANY"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantParams(_Strict):
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``."""

    scale: float = Field(gt=0)
    zero_point: int
    dtype: Literal["int8", "uint8", "int16"]


class TensorSpec(_Strict):
    name: str = Field(min_length=1)
    dtype: TensorDType = Field(
        description="The dtype clients send or receive (the source model's); the runtime may hold an int64 tensor as int32."
    )
    shape: list[int] = Field(description="-1 marks a dynamic dimension.")
    layout: Layout = "ANY"
    quantization: QuantParams | None = Field(
        default=None, description="Set when the model's tensor is integer but the client speaks float."
    )
    batch_axis: int | None = Field(
        default=None,
        description="The axis that counts samples; null for a tensor without one (a scalar, a fixed "
        "shape served as is). Absent: 0 for rank 1 and more, none for a scalar.",
    )
    state_for: str | None = Field(
        default=None,
        description="Outputs only: the input this output feeds on the next call (recurrent state).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_batch_axis(cls, data: Any) -> Any:
        # An absent batch_axis means what every manifest before it meant: axis 0, if any.
        if isinstance(data, dict) and "batch_axis" not in data:
            shape = data.get("shape")
            return {**data, "batch_axis": default_batch_axis(shape) if isinstance(shape, list) else None}
        return data

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in shape):
            raise ValueError(f"shape {shape}: each dimension is positive, or -1 for dynamic")
        return shape

    @model_validator(mode="after")
    def _axis_in_shape(self) -> TensorSpec:
        if self.batch_axis is not None and not 0 <= self.batch_axis < len(self.shape):
            raise ValueError(f"batch_axis {self.batch_axis} is not an axis of shape {self.shape}")
        return self

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out where it says what its absence says, so existing manifests sign to the same bytes.
        data: dict[str, Any] = handler(self)
        if data.get("batch_axis") == default_batch_axis(self.shape):
            data.pop("batch_axis", None)
        if data.get("state_for", 0) is None:
            data.pop("state_for")
        return data

    @property
    def client_dtype(self) -> str:
        """What a client sends or receives by default: float32 for quantized tensors."""
        return "float32" if self.quantization is not None else self.dtype

    @property
    def has_dynamic_batch(self) -> bool:
        return self.batch_axis is not None and self.shape[self.batch_axis] == -1

    @property
    def batch_size(self) -> int | None:
        """The fixed batch (-1 when dynamic), or None for a tensor without a batch axis."""
        return None if self.batch_axis is None else self.shape[self.batch_axis]


def default_batch_axis(shape: list[int]) -> int | None:
    """What a tensor spec without ``batch_axis`` means: axis 0, or none for a scalar."""
    return 0 if shape else None


FileRole = Literal["model", "weights", "reference_stats", "golden", "extra"]


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    role: FileRole = "model"


class RuntimeSpec(_Strict):
    name: RuntimeName
    options: dict[str, Any] = Field(default_factory=dict)


class Preprocessing(_Strict):
    """What the client must do to raw data before it becomes the model's input."""

    scale: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    description: str = ""


class GoldenSpec(_Strict):
    file: str = GOLDEN_NAME
    atol: float = Field(ge=0)
    rtol: float = Field(ge=0)
    min_top1_agreement: float = Field(default=1.0, ge=0, le=1)


class Manifest(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=128)
    version: str = Field(description="Semantic version, e.g. 1.4.0.")
    profile: str
    format: ModelFormat
    precision: Precision
    runtime: RuntimeSpec
    model_file: str = Field(description="The entry point among ``files`` that the runtime loads.")
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    files: dict[str, FileEntry] = Field(min_length=1)
    golden: GoldenSpec | None = None
    validation: dict[str, Any] = Field(default_factory=dict)
    benchmark: dict[str, Any] = Field(default_factory=dict)
    reference_stats: str | None = Field(default=None, description="File name of the frozen drift bins.")
    min_agent_version: str = "0.1.0"
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form metadata.")

    @field_validator("version", "min_agent_version")
    @classmethod
    def _semver(cls, value: str) -> str:
        parse_version(value)
        return value

    @field_validator("files")
    @classmethod
    def _no_reserved(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        clash = sorted(RESERVED_NAMES & files.keys())
        if clash:
            raise ValueError(f"files may not list {clash}: those names are reserved for the bundle itself")
        for name in files:
            problem = member_name_problem(name)
            if problem is not None:
                raise ValueError(f"file name {name!r} {problem}")
        conflict = member_names_conflict(files)
        if conflict is not None:
            raise ValueError(conflict)
        return files

    @model_validator(mode="after")
    def _references_resolve(self) -> Manifest:
        if self.model_file not in self.files:
            raise ValueError(f"model_file {self.model_file!r} is not listed in files")
        for optional in (self.reference_stats, self.golden.file if self.golden else None):
            if optional is not None and optional not in self.files:
                raise ValueError(f"{optional!r} is referenced but not listed in files")
        names = [t.name for t in self.inputs] + [t.name for t in self.outputs]
        if len(names) != len(set(names)):
            raise ValueError(f"tensor names must be unique across inputs and outputs: {names}")
        return self

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed: sorted keys, no whitespace, UTF-8."""
        return canonical_json(self.model_dump(mode="json"))

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name)


def member_name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe bundle member name, or None when it is."""
    if not name:
        return "is empty"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    segments = name.split("/")
    if ".." in segments:
        return "climbs out of the bundle ('..')"
    if any(segment in ("", ".") for segment in segments):
        return "is not a normalised relative path (empty or '.' segment)"
    if len(name) > MAX_MEMBER_NAME_LENGTH or len(segments) > MAX_MEMBER_DEPTH:
        return f"is longer than {MAX_MEMBER_NAME_LENGTH} characters or deeper than {MAX_MEMBER_DEPTH} levels"
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        return "uses characters other than letters, digits, '._+-' and '/'"
    return None


def member_names_conflict(names: Iterable[str]) -> str | None:
    """Why a set of safe names cannot be extracted side by side, or None when they can.

    Two names that differ only in case overwrite each other on case-insensitive file systems, and
    a name that is also a directory of another ('a' and 'a/b') cannot both exist.
    """
    folded: dict[str, str] = {}
    for name in names:
        previous = folded.setdefault(name.casefold(), name)
        if previous != name:
            return f"file names {previous!r} and {name!r} differ only in case"
    for name in folded:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory in folded:
                return f"{folded[directory]!r} is both a file and a directory of {folded[name]!r}"
    return None


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _by_name(specs: list[TensorSpec], name: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"no tensor named {name!r}; known: {[s.name for s in specs]}")
