"""The conversion report: every attempt per profile, with its figures and the decision taken.

One row per profile/format/precision attempt (size, latency, accuracy, agreement, the metric that
decided it with its value and threshold, decision), as
``report.json`` for machines, ``report.md`` for people reading a pull request, and a Rich table
for the terminal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from converter.benchmark import BenchmarkResult, HostInfo
from converter.metrics import Check, ValidationMetrics, deciding_check
from converter.planning import MIXED_LABEL, CalibrationMethod
from hw_profiles.schema import ModelFormat, Precision, RuntimeName

REPORT_JSON = "report.json"
REPORT_MD = "report.md"

# packaged: passed and bundled. degraded: bundled although it missed (allow_degraded).
# rejected: built, but missed the tolerance. failed: could not be built or run.
Decision = Literal["packaged", "degraded", "rejected", "failed"]
Status = Literal["packaged", "degraded", "failed"]


class AttemptRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: ModelFormat
    precision: Precision
    calibration: CalibrationMethod | None = None
    mixed: bool = Field(default=False, description="int8/mixed: some nodes kept in float.")
    decision: Decision
    reasons: list[str] = Field(default_factory=list)
    metrics: ValidationMetrics | None = None
    checks: list[Check] = Field(default_factory=list)
    decided_by: Check | None = Field(
        default=None, description="The check that decided: the first missed, else the task metric."
    )
    size_bytes: int | None = None
    sha256: dict[str, str] = Field(default_factory=dict, description="Each model file's hash.")
    provider: str | None = None
    runtime_notes: list[str] = Field(default_factory=list)
    float_nodes: list[str] = Field(
        default_factory=list, description="int8/mixed: the quantizable nodes kept in float."
    )
    benchmark: BenchmarkResult | None = None
    seconds: float = 0.0
    error: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _deciding(self) -> AttemptRecord:
        if self.decided_by is None and self.checks:
            self.decided_by = deciding_check(self.checks)
        return self

    @property
    def label(self) -> str:
        if self.mixed:
            return f"{self.precision.value}/{MIXED_LABEL}"
        return (
            f"{self.precision.value}/{self.calibration.value}" if self.calibration else self.precision.value
        )


class BundleRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str
    size_bytes: int
    key_id: str
    verified: bool


class ProfileResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str
    status: Status
    format: ModelFormat | None = None
    runtime: RuntimeName | None = None
    plan_notes: list[str] = Field(default_factory=list)
    attempts: list[AttemptRecord] = Field(default_factory=list)
    bundle: BundleRecord | None = None
    error: dict[str, Any] | None = None

    @property
    def chosen(self) -> AttemptRecord | None:
        return next((a for a in self.attempts if a.decision in ("packaged", "degraded")), None)


class ConversionReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    source: str
    out_dir: str = Field(default="", description="Where the bundles and reports were written.")
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    host: HostInfo
    calibration_samples: int
    evaluation_samples: int
    reference_accuracy: float | None = None
    profiles: list[ProfileResult] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every profile produced a bundle (a degraded one counts: it was asked for)."""
        return all(p.status != "failed" for p in self.profiles)

    def profile(self, name: str) -> ProfileResult:
        for result in self.profiles:
            if result.profile == name:
                return result
        raise KeyError(f"no profile {name!r} in the report; it has {[p.profile for p in self.profiles]}")

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per attempt: the table's content, for every renderer."""
        rows = []
        for result in self.profiles:
            if not result.attempts:
                rows.append(
                    {
                        "profile": result.profile,
                        "format": result.format.value if result.format else "-",
                        "precision": "-",
                        "size": "-",
                        "p50_ms": "-",
                        "accuracy": "-",
                        "agreement": "-",
                        "cosine": "-",
                        "metric": "-",
                        "decision": "failed",
                        "why": (result.error or {}).get("message", ""),
                    }
                )
            for attempt in result.attempts:
                metrics, bench = attempt.metrics, attempt.benchmark
                rows.append(
                    {
                        "profile": result.profile,
                        "format": attempt.format.value,
                        "precision": attempt.label
                        + (f" ({len(attempt.float_nodes)} float)" if attempt.float_nodes else ""),
                        "size": _size(attempt.size_bytes),
                        "p50_ms": f"{bench.p50_ms:.3f}" if bench else "-",
                        "accuracy": _percent(metrics.accuracy if metrics else None),
                        "agreement": _percent(metrics.top1_agreement if metrics else None),
                        "cosine": f"{metrics.cosine:.5f}" if metrics else "-",
                        "metric": _deciding(attempt.decided_by),
                        "decision": attempt.decision,
                        "why": "; ".join(attempt.reasons),
                    }
                )
        return rows

    def to_markdown(self) -> str:
        head = [
            f"# Conversion report: {self.name} {self.version}",
            "",
            f"- source: `{self.source}`",
            f"- created: {self.created.isoformat(timespec='seconds')}",
            f"- calibration samples: {self.calibration_samples}; "
            f"evaluation samples: {self.evaluation_samples}",
            f"- fp32 reference accuracy: {_percent(self.reference_accuracy)}",
            f"- host (latency figures are host figures, not device figures): {self.host.cpu}, "
            f"{self.host.cores} cores, features {', '.join(self.host.features) or 'none'}",
            "",
            "| " + " | ".join(_COLUMNS).replace("p50_ms", "p50 ms") + " |",
            "|" + "---|" * len(_COLUMNS),
        ]
        body = [
            "| " + " | ".join(str(row[k]).replace("|", "\\|") for k in _COLUMNS) + " |" for row in self.rows()
        ]
        bundles = ["", "## Bundles", ""] + [
            f"- {p.profile}: `{p.bundle.path}` (sha256 {p.bundle.sha256[:16]}…, signed by {p.bundle.key_id}"
            f"{', verified' if p.bundle.verified else ''})"
            for p in self.profiles
            if p.bundle
        ]
        notes = [
            f"- {p.profile}: {note}"
            for p in self.profiles
            for note in p.plan_notes + _runtime_notes(p) + _float_notes(p)
        ]
        return "\n".join(head + body + bundles + (["", "## Notes", "", *notes] if notes else [])) + "\n"

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out_dir / REPORT_JSON, out_dir / REPORT_MD
        json_path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path

    def rich_table(self) -> Any:
        from rich.markup import escape
        from rich.table import Table

        rows = self.rows()
        # The "why" column only when some attempt has a reason: it is the widest one.
        columns = _COLUMNS if any(row["why"] for row in rows) else _COLUMNS[:-1]
        table = Table(title=f"{self.name} {self.version}: conversions (latency measured on this host)")
        for column in columns:
            numeric = column in ("size", "p50_ms", "accuracy", "agreement", "cosine")
            table.add_column(_HEADERS[column], justify="right" if numeric else "left", overflow="fold")
        for row in rows:
            cells = [escape(str(row[c])) for c in columns]
            cells[columns.index("decision")] = f"[{_STYLES[row['decision']]}]{row['decision']}[/]"
            table.add_row(*cells)
        return table


_COLUMNS = (
    "profile",
    "format",
    "precision",
    "size",
    "p50_ms",
    "accuracy",
    "agreement",
    "cosine",
    "metric",
    "decision",
    "why",
)
_HEADERS = {
    "profile": "Profile",
    "format": "Format",
    "precision": "Precision",
    "size": "Size",
    "p50_ms": "p50 ms",
    "accuracy": "Accuracy",
    "agreement": "Top-1 agree",
    "cosine": "Cosine",
    "metric": "Decided by",
    "decision": "Decision",
    "why": "Why",
}
_STYLES = {"packaged": "green", "degraded": "yellow", "rejected": "red", "failed": "bold red"}


def _deciding(check: Check | None) -> str:
    """``iou[maps] 0.9531 >= 0.9 ok``: the check that decided, its value, threshold and outcome."""
    if check is None:
        return "-"
    op = ">=" if check.rule == "min" else "<="
    where = f"[{check.output}]" if check.output else ""
    verdict = "ok" if check.passed else "MISSED"
    return f"{check.name}{where} {check.value:.4g} {op} {check.limit:.4g} {verdict}"


def _runtime_notes(result: ProfileResult) -> list[str]:
    chosen = result.chosen
    return [f"runtime: {note}" for note in chosen.runtime_notes] if chosen else []


def _float_notes(result: ProfileResult) -> list[str]:
    """Which nodes each mixed-precision attempt kept in float (the table only counts them)."""
    return [
        f"{a.label} ({a.decision}) kept {len(a.float_nodes)} nodes in float: "
        + ", ".join(f"`{n}`" for n in a.float_nodes)
        for a in result.attempts
        if a.float_nodes
    ]


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    if size < 1_000_000:
        return f"{size / 1e3:.1f} kB"
    return f"{size / 1e6:.2f} MB"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"
