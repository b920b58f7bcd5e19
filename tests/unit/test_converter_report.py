"""The report: one row per attempt, the same content in JSON, Markdown and the Rich table."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from converter.benchmark import BenchmarkResult, HostInfo
from converter.metrics import ValidationMetrics
from converter.planning import CalibrationMethod
from converter.report import AttemptRecord, BundleRecord, ConversionReport, ProfileResult
from hw_profiles.schema import ModelFormat, Precision, RuntimeName

HOST = HostInfo(machine="x86_64", cpu="Test CPU", cores=2, features=["avx2"])


def metrics(agreement: float) -> ValidationMetrics:
    return ValidationMetrics(
        samples=100,
        top1_agreement=agreement,
        accuracy=0.97,
        reference_accuracy=0.98,
        accuracy_drop=1.0,
        cosine=0.995,
        min_cosine=0.9,
        max_abs_error=0.2,
        mean_abs_error=0.01,
    )


def report() -> ConversionReport:
    bench = BenchmarkResult(
        host=HOST,
        runtime="litert",
        provider="xnnpack",
        threads=4,
        batch=1,
        warmup=1,
        iterations=10,
        p50_ms=0.25,
        p95_ms=0.5,
        mean_ms=0.3,
        throughput_per_s=3333.0,
        size_bytes=36_000,
        peak_rss_delta_mb=1.5,
    )
    pi = ProfileResult(
        profile="raspberry-pi-5",
        status="packaged",
        format=ModelFormat.TFLITE,
        runtime=RuntimeName.LITERT,
        plan_notes=["batch fixed to 1"],
        attempts=[
            AttemptRecord(
                format=ModelFormat.TFLITE,
                precision=Precision.INT8,
                calibration=CalibrationMethod.HISTOGRAM,
                decision="rejected",
                reasons=["top1_agreement 0.9 (needs >= 0.98): MISSED"],
                metrics=metrics(0.9),
                size_bytes=36_000,
            ),
            AttemptRecord(
                format=ModelFormat.TFLITE,
                precision=Precision.FP16,
                decision="packaged",
                metrics=metrics(0.999),
                size_bytes=60_000,
                benchmark=bench,
            ),
        ],
        bundle=BundleRecord(
            path="out/m-1.0.0-raspberry-pi-5.efb", sha256="ab" * 32, size_bytes=9, key_id="k1", verified=True
        ),
    )
    jetson = ProfileResult(
        profile="jetson-orin-nano",
        status="failed",
        error={"message": "no runtime for tflite", "step": "plan"},
    )
    return ConversionReport(
        name="m",
        version="1.0.0",
        source="pkg.mod:model",
        out_dir="out",
        host=HOST,
        calibration_samples=200,
        evaluation_samples=100,
        reference_accuracy=0.98,
        profiles=[pi, jetson],
    )


def test_rows_cover_every_attempt_and_failed_profiles() -> None:
    rows = report().rows()
    assert [(r["profile"], r["precision"], r["decision"]) for r in rows] == [
        ("raspberry-pi-5", "int8/histogram", "rejected"),
        ("raspberry-pi-5", "fp16", "packaged"),
        ("jetson-orin-nano", "-", "failed"),
    ]
    assert rows[1]["p50_ms"] == "0.250" and rows[0]["p50_ms"] == "-"
    assert rows[0]["agreement"] == "90.00%"
    assert rows[2]["why"] == "no runtime for tflite"


def test_the_report_knows_whether_every_profile_got_a_bundle() -> None:
    full = report()
    assert not full.ok
    assert full.profile("raspberry-pi-5").chosen is not None
    assert full.profile("raspberry-pi-5").chosen.label == "fp16"  # type: ignore[union-attr]


def test_written_reports_round_trip_and_read_well(tmp_path: Path) -> None:
    json_path, md_path = report().write(tmp_path)
    loaded = ConversionReport.model_validate(json.loads(json_path.read_text()))
    assert loaded == report().model_copy(update={"created": loaded.created})
    markdown = md_path.read_text()
    assert "| raspberry-pi-5 | tflite | int8/histogram |" in markdown
    assert "host figures" in markdown
    assert "out/m-1.0.0-raspberry-pi-5.efb" in markdown
    assert "batch fixed to 1" in markdown


def test_the_rich_table_has_a_row_per_attempt() -> None:
    console = Console(width=200, record=True)
    console.print(report().rich_table())
    text = console.export_text()
    assert text.count("raspberry-pi-5") == 2
    assert "rejected" in text and "packaged" in text and "failed" in text


def test_every_rendering_names_the_check_that_decided_each_attempt(tmp_path: Path) -> None:
    from converter.metrics import Check

    iou = Check(name="iou", value=0.953, limit=0.9, passed=True, rule="min", output="maps", metric="iou:0.5")
    size = Check(name="size_mb", value=0.1, limit=5.0, passed=True, rule="max")
    missed = iou.model_copy(update={"value": 0.81, "passed": False})
    full = report()
    attempts = full.profile("raspberry-pi-5").attempts
    attempts[0] = AttemptRecord.model_validate({**attempts[0].model_dump(), "checks": [missed, size]})
    attempts[1] = AttemptRecord.model_validate({**attempts[1].model_dump(), "checks": [size, iou]})
    assert attempts[1].decided_by == iou  # the task metric, not the first check, when all pass
    rows = full.rows()
    assert rows[0]["metric"] == "iou[maps] 0.81 >= 0.9 MISSED"  # the first missed check decides
    assert rows[1]["metric"] == "iou[maps] 0.953 >= 0.9 ok"
    assert rows[2]["metric"] == "-"
    json_path, md_path = full.write(tmp_path)
    loaded = ConversionReport.model_validate(json.loads(json_path.read_text()))
    assert loaded.profile("raspberry-pi-5").attempts[1].decided_by == iou
    assert "| iou[maps] 0.953 >= 0.9 ok | packaged |" in md_path.read_text()
    console = Console(width=250, record=True)
    console.print(full.rich_table())
    text = console.export_text()
    assert "Decided by" in text and "iou[maps] 0.953" in text and "iou[maps] 0.81" in text
