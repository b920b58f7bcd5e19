"""A built model on disk: its entry file, the files that travel with it, and their roles."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from converter.planning import Attempt
from models.bundle.manifest import FileRole


@dataclass(frozen=True)
class Artifact:
    """One model in one format and precision, as files in ``directory``.

    ``files`` maps each file name (relative to ``directory``, and the name it gets in the bundle)
    to its role: ``model`` for the entry point, ``weights`` for sidecars such as OpenVINO's .bin or
    ONNX external data, which must travel together with it. ``notes`` say what the build changed
    on its way or found in the result (an opset upgrade, a per-tensor fallback, the ops an int8
    model left in float); the report carries them with the attempt. ``float_nodes``: the nodes a
    mixed-precision int8 model keeps in float.
    """

    attempt: Attempt
    directory: Path
    model_file: str
    files: dict[str, FileRole] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    float_nodes: list[str] = field(default_factory=list)  # int8/mixed: the nodes kept in float

    def __post_init__(self) -> None:
        if self.model_file not in self.files:
            self.files[self.model_file] = "model"

    @property
    def model_path(self) -> Path:
        return self.directory / self.model_file

    def paths(self) -> dict[str, Path]:
        return {name: self.directory / name for name in sorted(self.files)}

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths().values())

    def sha256(self) -> dict[str, str]:
        """Each file's sha256: what the determinism check compares."""
        return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in self.paths().items()}
