"""The workflow's fallback chain, driven by scripted passes: no model is built, only decisions are made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from converter.context import ConversionContext, TargetState
from converter.errors import ConversionError
from converter.metrics import ValidationMetrics, judge
from converter.passes import Pass
from converter.planning import SourceKind, plan_target
from converter.progress import RecordingProgress
from converter.report import BundleRecord
from converter.sources import SourceModel
from converter.workflow import Workflow
from hw_profiles import load_profile
from hw_profiles.schema import HardwareProfile, Tolerance
from models.bundle.manifest import TensorSpec


class Script(BaseModel):
    """What each attempt does, keyed by ``format label``: an agreement, or ``error:<step>``."""

    model_config = ConfigDict(frozen=True)

    outcomes: dict[str, float | str]
    default: float = 1.0


class ScriptedPlan(Pass[Script]):
    """Stands in for load + plan: a conv PyTorch source and the real planner."""

    step = "plan"
    profiles: list[HardwareProfile]

    def run(self, ctx: ConversionContext) -> None:
        ctx.source = SourceModel(
            kind=SourceKind.TORCH,
            name="m",
            description="scripted",
            inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 4])],
            outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, 3])],
            has_conv=True,
        )
        facts = ctx.source.facts()
        ctx.targets = [TargetState(profile=p, plan=plan_target(p, facts)) for p in self.profiles]


class ScriptedBuild(Pass[Script]):
    """Export + quantize + validate in one: fails or measures as the script says."""

    step = "validate"

    def run(self, ctx: ConversionContext) -> None:
        target = ctx.require_target()
        state = target.current
        key = f"{state.attempt.format.value} {state.attempt.label}"
        outcome = self.config.outcomes.get(key, self.config.default)
        if isinstance(outcome, str):
            step = outcome.removeprefix("error:")
            raise ConversionError(
                f"{key} broke", step=step, hint="scripted", format=state.attempt.format.value
            )
        state.metrics = ValidationMetrics(
            samples=100,
            top1_agreement=outcome,
            accuracy=None,
            reference_accuracy=None,
            accuracy_drop=None,
            cosine=0.999,
            min_cosine=0.99,
            max_abs_error=0.1,
            mean_abs_error=0.01,
        )
        state.outputs = {}
        state.verdict = judge(state.metrics, Tolerance(min_top1_agreement=0.98, min_cosine=0.99))


class RecordPackage(Pass[Script]):
    """Stands in for benchmark + package: remembers what it was asked to package."""

    step = "package"
    packaged: list[str]

    def run(self, ctx: ConversionContext) -> None:
        target = ctx.require_target()
        assert target.chosen is not None
        self.packaged.append(f"{target.profile.name} {target.chosen.attempt.label}")
        target.bundle = BundleRecord(path="x.efb", sha256="0" * 64, size_bytes=1, key_id="k", verified=True)


def run_workflow(
    tmp_path: Path, profiles: list[str], outcomes: dict[str, float | str], *, allow_degraded: bool = False
) -> tuple[Workflow, list[Any], RecordPackage, RecordingProgress]:
    script = Script(outcomes=outcomes)
    plan = ScriptedPlan(script)
    plan.profiles = [load_profile(name) for name in profiles]
    package = RecordPackage(script)
    package.packaged = []
    workflow = Workflow(
        prepare=[plan], build=[ScriptedBuild(script)], finish=[package], allow_degraded=allow_degraded
    )
    progress = RecordingProgress()
    ctx = ConversionContext(out_dir=tmp_path, work_dir=tmp_path / "work", progress=progress)
    return workflow, workflow.run(ctx), package, progress


def decisions(result: Any) -> list[tuple[str, str]]:
    return [(a.label, a.decision) for a in result.attempts]


def test_the_first_passing_attempt_is_packaged_and_the_chain_stops(tmp_path: Path) -> None:
    workflow, results, package, _ = run_workflow(tmp_path, ["raspberry-pi-5"], {})
    assert decisions(results[0]) == [("int8/minmax", "packaged")]
    assert results[0].status == "packaged"
    assert package.packaged == ["raspberry-pi-5 int8/minmax"]
    assert workflow.errors == []


def chain(result: Any) -> list[tuple[str, str, str]]:
    return [(a.format.value, a.label, a.decision) for a in result.attempts]


def test_a_missed_int8_tries_the_next_calibration_then_the_other_formats_int8(tmp_path: Path) -> None:
    outcomes: dict[str, float | str] = {"tflite int8/minmax": 0.90, "tflite int8/histogram": 0.95}
    _, results, package, progress = run_workflow(tmp_path, ["raspberry-pi-5"], outcomes)
    assert chain(results[0]) == [
        ("tflite", "int8/minmax", "rejected"),
        ("tflite", "int8/histogram", "rejected"),
        ("onnx", "int8/minmax", "packaged"),
    ]
    assert any("top1_agreement 0.9" in reason for reason in results[0].attempts[0].reasons)
    assert results[0].format is not None and results[0].format.value == "onnx"
    assert "tflite int8 missed; onnx int8 passed" in results[0].plan_notes
    assert package.packaged == ["raspberry-pi-5 int8/minmax"]
    assert sum("missed" in m for m in progress.messages) == 2


def test_when_no_format_reaches_int8_the_first_format_falls_back_to_fp16(tmp_path: Path) -> None:
    outcomes: dict[str, float | str] = {
        "tflite int8/minmax": 0.90,
        "tflite int8/histogram": 0.95,
        "onnx int8/minmax": 0.91,
        "onnx int8/entropy": "error:quantize",
        "onnx int8/percentile": 0.92,
    }
    _, results, package, _ = run_workflow(tmp_path, ["raspberry-pi-5"], outcomes)
    assert chain(results[0]) == [
        ("tflite", "int8/minmax", "rejected"),
        ("tflite", "int8/histogram", "rejected"),
        ("onnx", "int8/minmax", "rejected"),
        ("onnx", "int8/entropy", "failed"),
        ("onnx", "int8/percentile", "rejected"),
        ("tflite", "fp16", "packaged"),
    ]
    assert results[0].format is not None and results[0].format.value == "tflite"
    assert package.packaged == ["raspberry-pi-5 fp16"]


def test_an_export_failure_of_the_other_format_is_noted_and_the_chain_goes_on(tmp_path: Path) -> None:
    outcomes: dict[str, float | str] = {
        "tflite int8/minmax": 0.90,
        "tflite int8/histogram": 0.95,
        "onnx int8/minmax": "error:export",
    }
    _, results, package, _ = run_workflow(tmp_path, ["raspberry-pi-5"], outcomes)
    assert [label for _, label, _ in chain(results[0])][-2:] == ["int8/minmax", "fp16"]
    assert any("onnx int8 not built" in note for note in results[0].plan_notes)
    assert package.packaged == ["raspberry-pi-5 fp16"]


def test_degraded_packages_the_closest_attempt_of_any_format_with_its_plan(tmp_path: Path) -> None:
    """The chain ended in TFLite, but ONNX int8 came closest: it is packaged, as ONNX."""
    outcomes: dict[str, float | str] = {
        "tflite int8/minmax": 0.90,
        "tflite int8/histogram": 0.91,
        "onnx int8/minmax": 0.97,
        "onnx int8/entropy": 0.97,
        "onnx int8/percentile": 0.97,
        "tflite fp16": 0.92,
        "tflite fp32": 0.93,
    }
    _, results, package, _ = run_workflow(tmp_path, ["raspberry-pi-5"], outcomes, allow_degraded=True)
    assert results[0].status == "degraded"
    assert package.packaged == ["raspberry-pi-5 int8/minmax"]
    assert results[0].format is not None and results[0].format.value == "onnx"


def test_a_failed_build_is_recorded_and_the_chain_goes_on(tmp_path: Path) -> None:
    outcomes: dict[str, float | str] = {"openvino int8/minmax": "error:quantize"}
    _, results, package, _ = run_workflow(tmp_path, ["intel-x86-openvino"], outcomes)
    assert decisions(results[0]) == [("int8/minmax", "failed"), ("int8/percentile", "packaged")]
    assert results[0].attempts[0].error is not None
    assert results[0].attempts[0].error["step"] == "quantize"
    assert package.packaged == ["intel-x86-openvino int8/percentile"]


def test_nothing_passing_fails_that_profile_only_with_a_clear_error(tmp_path: Path) -> None:
    workflow, results, package, _ = run_workflow(
        tmp_path, ["jetson-orin-nano", "raspberry-pi-5"], {"onnx fp16": 0.5, "onnx fp32": 0.6}
    )
    jetson, pi = results
    assert jetson.status == "failed"
    assert decisions(jetson) == [("fp16", "rejected"), ("fp32", "rejected")]
    assert jetson.bundle is None
    assert pi.status == "packaged"
    assert package.packaged == ["raspberry-pi-5 int8/minmax"]
    [error] = workflow.errors
    assert error.step == "validate"
    assert error.profile == "jetson-orin-nano"
    assert "--allow-degraded" in error.hint
    assert "fp16" in error.message and "fp32" in error.message


def test_allow_degraded_packages_the_closest_attempt_and_says_so(tmp_path: Path) -> None:
    outcomes: dict[str, float | str] = {"onnx fp16": 0.97, "onnx fp32": 0.96}
    workflow, results, package, _ = run_workflow(
        tmp_path, ["jetson-orin-nano"], outcomes, allow_degraded=True
    )
    assert results[0].status == "degraded"
    assert decisions(results[0]) == [("fp16", "degraded"), ("fp32", "rejected")]
    assert package.packaged == ["jetson-orin-nano fp16"]
    assert workflow.errors == []


def test_allow_degraded_still_fails_when_nothing_could_even_be_built(tmp_path: Path) -> None:
    outcomes: dict[str, float | str] = {"onnx fp16": "error:quantize", "onnx fp32": "error:validate"}
    workflow, results, _, _ = run_workflow(tmp_path, ["jetson-orin-nano"], outcomes, allow_degraded=True)
    assert results[0].status == "failed"
    assert [a.decision for a in results[0].attempts] == ["failed", "failed"]
    assert workflow.errors[0].step == "validate"


def test_an_export_failure_moves_the_profile_to_its_next_format(tmp_path: Path) -> None:
    outcomes: dict[str, float | str] = {"tflite int8/minmax": "error:export"}
    _, results, package, progress = run_workflow(tmp_path, ["raspberry-pi-5"], outcomes)
    result = results[0]
    assert result.format is not None and result.format.value == "onnx"
    assert [(a.format.value, a.label, a.decision) for a in result.attempts] == [
        ("tflite", "int8/minmax", "failed"),
        ("onnx", "int8/minmax", "packaged"),
    ]
    assert any("fell back to onnx" in note for note in result.plan_notes)
    assert any("fallback" in m for m in progress.messages)
    assert package.packaged == ["raspberry-pi-5 int8/minmax"]


def test_an_export_failure_with_no_other_format_fails_the_profile(tmp_path: Path) -> None:
    workflow, results, _, _ = run_workflow(tmp_path, ["jetson-orin-nano"], {"onnx fp16": "error:export"})
    assert results[0].status == "failed"
    assert workflow.errors[0].step == "export"


@pytest.mark.parametrize("agreement", [0.979, 0.98, 0.981])
def test_the_tolerance_boundary_is_inclusive(tmp_path: Path, agreement: float) -> None:
    _, results, _, _ = run_workflow(tmp_path, ["jetson-orin-nano"], {"onnx fp16": agreement})
    first = results[0].attempts[0]
    assert first.decision == ("rejected" if agreement < 0.98 else "packaged")
