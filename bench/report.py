"""Writing benchmark results: one JSON file and one Markdown table per benchmark."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(os.environ.get("EDGEFLEET_BENCH_DIR", Path(__file__).parent / "results"))


def host_facts() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(
    name: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], extra: dict[str, Any]
) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    payload = {"benchmark": name, "host": host_facts(), "columns": list(columns), "rows": rows, **extra}
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(f"## {title}\n\n{markdown_table(columns, rows)}")
    return json_path, md_path
