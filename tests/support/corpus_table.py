"""The corpus results as a Markdown table, from the reports a corpus run kept.

    EDGEFLEET_CORPUS_REPORTS=/tmp/reports make test-corpus
    PYTHONPATH=. .venv/bin/python -m tests.support.corpus_table /tmp/reports > table.md

One row per model and profile: what was packaged (format, precision, calibration, the layers kept
in float), the check that decided and its limit, the other task checks, the bundle's model size,
the host's p50 latency at batch 1 as the converter's benchmark measured it, and the seconds all
attempts took; or, for a failed profile, the first line of its error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.corpus_record import NOT_TASK_CHECKS

HEADER = (
    "| model | profile | outcome | deciding check | other task checks | size | host p50 | attempts' s |\n"
    "|---|---|---|---|---|---|---|---|"
)


def _outcome(attempt: dict[str, Any]) -> str:
    label = f"{attempt['format']} {attempt['precision']}"
    if attempt.get("calibration"):
        label += f" ({attempt['calibration']}"
        label += (
            f", {len(attempt.get('float_nodes') or [])} layers in float)" if attempt.get("mixed") else ")"
        )
    return label


def _check(check: dict[str, Any]) -> str:
    sign = "≥" if check.get("rule", "min") == "min" else "≤"
    output = f"[{check['output']}]" if check.get("output") else ""
    name = str(check["name"]).rpartition(":")[2]  # a hook's function name, not its module
    return f"{name}{output} {check['value']:.3f} {sign} {check['limit']}"


def _size(size: int | None) -> str:
    if size is None:
        return ""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def row(model: str, profile: dict[str, Any]) -> str:
    seconds = sum(a.get("seconds") or 0.0 for a in profile["attempts"])
    chosen = next((a for a in profile["attempts"] if a["decision"] in ("packaged", "degraded")), None)
    if chosen is None:
        message = str((profile.get("error") or {}).get("message", "")).splitlines()[0:1]
        reason = (message[0] if message else "failed").replace("|", "/")
        return f"| {model} | {profile['profile']} | **failed**: {reason[:160]} | | | | | {seconds:.1f} |"
    decided = chosen["decided_by"]
    others = [
        _check(c)
        for c in chosen["checks"]
        if c["name"] not in NOT_TASK_CHECKS
        and (c["name"], c.get("output")) != (decided["name"], decided.get("output"))
    ]
    latency = (chosen.get("benchmark") or {}).get("p50_ms")
    return (
        f"| {model} | {profile['profile']} | {_outcome(chosen)} | {_check(decided)} | {'; '.join(others)} "
        f"| {_size(chosen.get('size_bytes'))} | {f'{latency:.2f} ms' if latency else ''} | {seconds:.1f} |"
    )


def table(reports: Iterable[Path]) -> str:
    lines = [HEADER]
    for path in sorted(reports):
        report = json.loads(path.read_text())
        lines += [row(path.stem, profile) for profile in report["profiles"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m tests.support.corpus_table REPORTS_DIR", file=sys.stderr)
        return 2
    sys.stdout.write(table(Path(argv[0]).glob("*.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
