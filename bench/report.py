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


Table = tuple[str, Sequence[str], Sequence[Sequence[Any]]]  # title, columns, rows


def write_results(
    name: str,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    extra: dict[str, Any],
    *,
    more_tables: Sequence[Table] = (),
) -> tuple[Path, Path]:
    """``bench/results/NAME.json`` and ``NAME.md``: the main table, then any ``more_tables``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    payload = {"benchmark": name, "host": host_facts(), "columns": list(columns), "rows": rows, **extra}
    if more_tables:
        payload["more_tables"] = [
            {"title": t, "columns": list(c), "rows": list(r)} for t, c, r in more_tables
        ]
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    sections = [(title, columns, rows), *more_tables]
    md_path.write_text("\n".join(f"## {t}\n\n{markdown_table(c, r)}" for t, c, r in sections))
    return json_path, md_path
