"""Fill ``corpus_expectations.json`` from a conversion's ``report.json`` (by hand, after a run).

    PYTHONPATH=. .venv/bin/python -m tests.support.corpus_record MODEL path/to/report.json

Each profile of the report replaces that model's entry for the profile: what was packaged, the
check that decided and its value, every task-metric check, the size and the seconds the attempts
took, and one line per attempt. A failed profile keeps the ``reason`` and ``error_contains``
already written for it (the explanation is a person's), or gets placeholders to fill in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.support.corpus import EXPECTATIONS

NOT_TASK_CHECKS = {"size_mb", "latency_ms", "accuracy_drop"}


def _attempt_line(attempt: dict[str, Any]) -> str:
    label = f"{attempt['format']} {attempt['precision']}"
    if attempt.get("calibration"):
        label += f"/{attempt['calibration']}" + ("+mixed" if attempt.get("mixed") else "")
    reasons = "; ".join(attempt.get("reasons") or [])
    return f"{label}: {attempt['decision']}" + (f" ({reasons[:200]})" if reasons else "")


def record(model: str, report_path: Path) -> None:
    table = json.loads(EXPECTATIONS.read_text()) if EXPECTATIONS.exists() else {"models": {}}
    entries = table["models"].setdefault(model, {})
    report = json.loads(report_path.read_text())
    for profile in report["profiles"]:
        attempts = profile["attempts"]
        old = entries.get(profile["profile"], {})
        entry: dict[str, Any] = {"status": profile["status"]}
        if profile["status"] == "failed":
            entry["reason"] = old.get("reason", "TODO: why")
            entry["error_contains"] = old.get(
                "error_contains", (profile.get("error") or {}).get("message", "")
            )
        else:
            chosen = next(a for a in attempts if a["decision"] in ("packaged", "degraded"))
            decided = chosen["decided_by"]
            entry.update(
                format=chosen["format"],
                precision=chosen["precision"],
                calibration=chosen.get("calibration"),
                metric=decided["name"],
                value=round(decided["value"], 4),
                limit=decided["limit"],
                checks={
                    f"{c['name']}[{c['output']}]": round(c["value"], 4)
                    for c in chosen["checks"]
                    if c["name"] not in NOT_TASK_CHECKS
                },
                size_bytes=chosen["size_bytes"],
            )
        entry["seconds"] = round(sum(a.get("seconds", 0.0) for a in attempts), 1)
        entry["attempts"] = [_attempt_line(a) for a in attempts]
        entries[profile["profile"]] = entry
    EXPECTATIONS.write_text(json.dumps(table, indent=2, sort_keys=False) + "\n")


if __name__ == "__main__":
    record(sys.argv[1], Path(sys.argv[2]))
