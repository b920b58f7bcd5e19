"""What the agent process has imported: it must never load a training framework.

With ``EDGEFLEET_AGENT_MODULES_DUMP=FILE`` set, ``edgefleet agent serve`` writes the names in its
``sys.modules`` to FILE (JSON) when it is ready and again when it shuts down, so a test can check
the real process after it has served every runtime. ``heavy_modules`` names the offenders.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

MODULES_DUMP_ENV = "EDGEFLEET_AGENT_MODULES_DUMP"
# Training and conversion frameworks: each costs hundreds of MB and seconds of start-up on a device.
HEAVY_PACKAGES = frozenset({"torch", "tensorflow", "keras", "jax", "nncf", "onnx"})


def heavy_modules(names: Iterable[str]) -> list[str]:
    """The module names that belong to a heavy package (``onnxruntime`` is not ``onnx``)."""
    return sorted(name for name in names if name.split(".", 1)[0] in HEAVY_PACKAGES)


def dump_modules(path: Path, stage: str) -> None:
    """Write ``{"pid", "stage", "modules"}`` to ``path`` (atomically: written beside it, then renamed)."""
    data = {"pid": os.getpid(), "stage": stage, "modules": sorted(sys.modules)}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def dump_modules_if_asked(stage: str) -> None:
    target = os.environ.get(MODULES_DUMP_ENV)
    if target:
        dump_modules(Path(target), stage)
