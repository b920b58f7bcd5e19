"""Planning is pure: check the rules on every built-in profile, every source kind and every override."""

from __future__ import annotations

import itertools

import pytest

from converter.errors import ConversionError
from converter.planning import (
    CALIBRATION_METHODS,
    FORMAT_PRECISIONS,
    FORMAT_SOURCES,
    PRECISION_WIDTH,
    CalibrationMethod,
    ModelFacts,
    SourceKind,
    TargetPlan,
    calibration_methods,
    plan_target,
)
from hw_profiles import list_profiles, load_profile
from hw_profiles.schema import HardwareProfile, ModelFormat, Precision

PROFILES = list_profiles()
FACTS = [
    ModelFacts(source_kind=kind, batch=batch, has_conv=conv)
    for kind, batch, conv in itertools.product(SourceKind, (None, 1, 4), (False, True))
]
FORMAT_OVERRIDES: list[list[ModelFormat] | None] = [None, *([f] for f in ModelFormat)]
PRECISION_OVERRIDES: list[list[Precision] | None] = [
    None,
    *([p] for p in Precision),
    [Precision.FP16, Precision.INT8],
]


def _labels(plan: TargetPlan) -> list[str]:
    return [a.label for a in plan.attempts]


def _plan_or_error(
    profile: HardwareProfile,
    facts: ModelFacts,
    formats: list[ModelFormat] | None,
    precisions: list[Precision] | None,
) -> TargetPlan | None:
    try:
        return plan_target(profile, facts, formats=formats, precisions=precisions)
    except ConversionError as exc:
        assert exc.step == "plan"
        assert exc.profile == profile.name
        assert exc.hint
        return None


def test_the_builtin_profiles_are_there() -> None:
    names = {p.name for p in PROFILES}
    assert {"raspberry-pi-5", "jetson-orin-nano", "intel-x86-openvino", "coral-edgetpu"} <= names


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_plan_obeys_the_rules(profile: HardwareProfile) -> None:
    planned = 0
    for facts, formats, precisions in itertools.product(FACTS, FORMAT_OVERRIDES, PRECISION_OVERRIDES):
        plan = _plan_or_error(profile, facts, formats, precisions)
        if plan is None:
            continue
        planned += 1
        fmt = plan.format
        # The format: runnable on the profile, reachable from the source, and the first such candidate.
        assert fmt in {r.format for r in profile.runtimes}
        assert facts.source_kind in FORMAT_SOURCES[fmt]
        assert plan.runtime == profile.runtime_for(fmt).name
        candidates = formats or profile.formats
        reachable = [
            f
            for f in candidates
            if facts.source_kind in FORMAT_SOURCES[f]
            and (not profile.quantization.full_integer_io or f is ModelFormat.TFLITE)
        ]
        assert fmt == reachable[0]
        # Attempts: every one in that format and buildable; the primary is the first usable request.
        assert all(a.format == fmt for a in plan.attempts)
        assert all(a.precision in FORMAT_PRECISIONS[fmt] for a in plan.attempts)
        wanted = precisions or profile.precisions
        buildable = [p for p in wanted if p in FORMAT_PRECISIONS[fmt]]
        if fmt is ModelFormat.ONNX and facts.has_conv and buildable[0] is Precision.INT8_DYNAMIC:
            # Dynamic int8 ONNX of a CNN is refused when asked for, and skipped when the profile has it first.
            assert not precisions
            buildable = buildable[1:]
        assert plan.primary.precision == buildable[0]
        # Fallbacks only widen, and come from the request or the profile.
        chain = list(dict.fromkeys(a.precision for a in plan.attempts))
        widths = [PRECISION_WIDTH[p] for p in chain]
        assert widths == sorted(widths) and len(set(widths)) == len(widths)
        assert all(p in wanted or p in profile.precisions for p in chain)
        # Static int8 expands to every calibration method of the format, in order; nothing else has one.
        for precision in chain:
            methods = [a.calibration for a in plan.attempts if a.precision is precision]
            methods_for = calibration_methods(fmt, facts.source_kind)
            expected = list(methods_for) if precision is Precision.INT8 else [None]
            assert methods == expected
        if facts.has_conv:
            assert Precision.INT8_DYNAMIC not in chain[1:]
        if profile.quantization.full_integer_io:
            assert chain == [Precision.INT8]
        # Batch: the source's fixed batch wins; otherwise static profiles and TFLite get 1.
        if facts.batch is not None:
            assert plan.batch == facts.batch
        elif profile.quantization.static_shapes or fmt is ModelFormat.TFLITE:
            assert plan.batch == 1
        else:
            assert plan.batch is None
        assert plan.calibration_samples == profile.quantization.calibration_samples
    assert planned > 0


def test_raspberry_pi_5_gets_tflite_int8_with_a_chain_to_fp32() -> None:
    plan = plan_target(
        load_profile("raspberry-pi-5"), ModelFacts(source_kind=SourceKind.TORCH, has_conv=True)
    )
    assert plan.format is ModelFormat.TFLITE
    assert _labels(plan) == ["int8/minmax", "int8/histogram", "fp16", "fp32"]
    assert plan.batch == 1


def test_an_mlp_may_fall_back_to_dynamic_int8_before_fp16() -> None:
    plan = plan_target(
        load_profile("raspberry-pi-5"), ModelFacts(source_kind=SourceKind.TORCH, has_conv=False)
    )
    assert _labels(plan) == ["int8/minmax", "int8/histogram", "int8-dynamic", "fp16", "fp32"]


def test_an_onnx_source_reaches_the_pis_tflite_through_pytorch() -> None:
    plan = plan_target(load_profile("raspberry-pi-5"), ModelFacts(source_kind=SourceKind.ONNX, has_conv=True))
    assert plan.format is ModelFormat.TFLITE
    # onnx2torch makes a PyTorch module of it, so the same int8 routes apply (AEQ, then PT2E).
    assert _labels(plan) == ["int8/minmax", "int8/histogram", "fp16", "fp32"]
    assert plan.batch == 1


def test_an_onnx_source_kept_in_onnx_tries_every_ort_calibration() -> None:
    plan = plan_target(
        load_profile("raspberry-pi-5"),
        ModelFacts(source_kind=SourceKind.ONNX, has_conv=True),
        formats=[ModelFormat.ONNX],
    )
    assert plan.format is ModelFormat.ONNX
    assert _labels(plan) == ["int8/minmax", "int8/entropy", "int8/percentile", "fp16", "fp32"]
    assert plan.batch is None


def test_jetson_gets_onnx_fp16_then_fp32_and_never_narrower() -> None:
    plan = plan_target(load_profile("jetson-orin-nano"), ModelFacts(source_kind=SourceKind.TORCH))
    assert plan.format is ModelFormat.ONNX
    assert _labels(plan) == ["fp16", "fp32"]


def test_intel_gets_openvino_int8_with_accuracy_control_last_and_a_static_batch() -> None:
    plan = plan_target(
        load_profile("intel-x86-openvino"), ModelFacts(source_kind=SourceKind.TORCH, has_conv=True)
    )
    assert plan.format is ModelFormat.OPENVINO
    assert _labels(plan) == ["int8/minmax", "int8/percentile", "int8/accuracy-control", "fp16", "fp32"]
    assert plan.attempts[2].calibration is CalibrationMethod.ACCURACY_CONTROL
    assert plan.batch == 1


def test_format_and_precision_overrides_win() -> None:
    plan = plan_target(
        load_profile("raspberry-pi-5"),
        ModelFacts(source_kind=SourceKind.TORCH, has_conv=True),
        formats=[ModelFormat.ONNX],
        precisions=[Precision.FP16],
    )
    assert plan.format is ModelFormat.ONNX
    assert _labels(plan) == ["fp16", "fp32"]


def test_the_edge_tpu_never_falls_back_to_float() -> None:
    plan = plan_target(load_profile("coral-edgetpu"), ModelFacts(source_kind=SourceKind.TORCH, has_conv=True))
    assert plan.format is ModelFormat.TFLITE
    assert {a.precision for a in plan.attempts} == {Precision.INT8}


def test_the_edge_tpu_takes_onnx_but_not_torchscript() -> None:
    onnx = plan_target(load_profile("coral-edgetpu"), ModelFacts(source_kind=SourceKind.ONNX))
    assert onnx.format is ModelFormat.TFLITE and {a.precision for a in onnx.attempts} == {Precision.INT8}
    with pytest.raises(ConversionError) as caught:
        plan_target(load_profile("coral-edgetpu"), ModelFacts(source_kind=SourceKind.TORCHSCRIPT))
    assert caught.value.step == "plan"
    assert "torchscript" in caught.value.message
    assert "PyTorch" in caught.value.hint and "Keras" in caught.value.hint


def test_a_format_the_profile_cannot_run_is_refused_with_the_ones_it_can() -> None:
    with pytest.raises(ConversionError) as caught:
        plan_target(
            load_profile("jetson-orin-nano"),
            ModelFacts(source_kind=SourceKind.TORCH),
            formats=[ModelFormat.OPENVINO],
        )
    assert "no runtime for openvino" in caught.value.message
    assert "onnx" in caught.value.hint


def test_a_precision_the_profile_does_not_allow_is_refused() -> None:
    with pytest.raises(ConversionError) as caught:
        plan_target(
            load_profile("jetson-orin-nano"),
            ModelFacts(source_kind=SourceKind.TORCH),
            precisions=[Precision.INT8_DYNAMIC],
        )
    assert "does not allow int8-dynamic" in caught.value.message


def test_torchscript_reaches_onnx_and_openvino_but_not_tflite() -> None:
    facts = ModelFacts(source_kind=SourceKind.TORCHSCRIPT, has_conv=True)
    assert plan_target(load_profile("raspberry-pi-5"), facts).format is ModelFormat.ONNX
    assert plan_target(load_profile("intel-x86-openvino"), facts).format is ModelFormat.OPENVINO
    with pytest.raises(ConversionError):
        plan_target(load_profile("raspberry-pi-5"), facts, formats=[ModelFormat.TFLITE])


def test_a_precision_the_format_cannot_build_is_skipped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every exporter builds every precision today; a future format may not.
    monkeypatch.setitem(
        FORMAT_PRECISIONS, ModelFormat.OPENVINO, (Precision.FP32, Precision.FP16, Precision.INT8)
    )
    profile = load_profile("intel-x86-openvino")
    plan = plan_target(
        profile,
        ModelFacts(source_kind=SourceKind.TORCH, has_conv=False),
        precisions=[Precision.INT8_DYNAMIC, Precision.FP16],
    )
    assert plan.primary.precision is Precision.FP16
    assert any("int8-dynamic skipped" in note for note in plan.notes)


@pytest.mark.parametrize("kind", [SourceKind.KERAS, SourceKind.SAVED_MODEL])
def test_tensorflow_sources_reach_every_format(kind: SourceKind) -> None:
    facts = ModelFacts(source_kind=kind, has_conv=True)
    pi = plan_target(load_profile("raspberry-pi-5"), facts)
    assert pi.format is ModelFormat.TFLITE
    assert _labels(pi) == ["int8/converter", "fp16", "fp32"]
    assert plan_target(load_profile("intel-x86-openvino"), facts).format is ModelFormat.OPENVINO
    # ONNX goes through tf2onnx, and calibrates with ONNX Runtime's own methods.
    jetson = plan_target(load_profile("jetson-orin-nano"), facts)
    assert jetson.format is ModelFormat.ONNX
    onnx_first = plan_target(
        load_profile("intel-x86-openvino"), facts, formats=[ModelFormat.ONNX, ModelFormat.OPENVINO]
    )
    assert onnx_first.format is ModelFormat.ONNX
    assert calibration_methods(ModelFormat.ONNX, kind) == CALIBRATION_METHODS[ModelFormat.ONNX]
    assert calibration_methods(ModelFormat.OPENVINO, kind) == CALIBRATION_METHODS[ModelFormat.OPENVINO]


def test_torchscript_cannot_reach_tflite_and_the_plan_says_what_can() -> None:
    facts = ModelFacts(source_kind=SourceKind.TORCHSCRIPT)
    with pytest.raises(ConversionError) as caught:
        plan_target(load_profile("coral-edgetpu"), facts)
    assert "torchscript" in caught.value.message and "tflite" in caught.value.message
    assert "onnx and openvino from any source" in caught.value.hint


def test_dynamic_int8_onnx_is_refused_for_a_cnn_and_planned_for_an_mlp() -> None:
    pi = load_profile("raspberry-pi-5")
    with pytest.raises(ConversionError) as caught:
        plan_target(
            pi,
            ModelFacts(source_kind=SourceKind.TORCH, has_conv=True),
            formats=[ModelFormat.ONNX],
            precisions=[Precision.INT8_DYNAMIC],
        )
    error = caught.value
    assert (error.step, error.format, error.profile) == ("plan", "onnx", "raspberry-pi-5")
    assert "ConvInteger" in error.message and "--precision int8" in error.hint
    mlp = plan_target(
        pi,
        ModelFacts(source_kind=SourceKind.TORCH, has_conv=False),
        formats=[ModelFormat.ONNX],
        precisions=[Precision.INT8_DYNAMIC],
    )
    assert _labels(mlp) == ["int8-dynamic", "fp16", "fp32"]


def test_dynamic_int8_first_in_a_profile_is_skipped_for_a_cnn_with_a_note() -> None:
    profile = load_profile("raspberry-pi-5").model_copy(
        update={"precisions": [Precision.INT8_DYNAMIC, Precision.FP16, Precision.FP32]}
    )
    plan = plan_target(
        profile, ModelFacts(source_kind=SourceKind.ONNX, has_conv=True), formats=[ModelFormat.ONNX]
    )
    assert _labels(plan) == ["fp16", "fp32"]
    assert any("int8-dynamic skipped" in note and "ConvInteger" in note for note in plan.notes)


def test_calibrations_narrow_and_order_the_static_int8_attempts() -> None:
    facts = ModelFacts(source_kind=SourceKind.ONNX, has_conv=True)
    jetson = load_profile("jetson-orin-nano")
    plan = plan_target(
        jetson,
        facts,
        precisions=[Precision.INT8],
        calibrations=[CalibrationMethod.PERCENTILE, CalibrationMethod.ENTROPY],
    )
    assert _labels(plan) == ["int8/percentile", "int8/entropy", "fp16", "fp32"]
    # A method the toolchain lacks is skipped with a note, or refused when nothing is left.
    mixed = plan_target(
        jetson,
        facts,
        precisions=[Precision.INT8],
        calibrations=[CalibrationMethod.HISTOGRAM, CalibrationMethod.ENTROPY],
    )
    assert _labels(mixed)[0] == "int8/entropy"
    assert any("calibration histogram skipped" in note for note in mixed.notes)
    with pytest.raises(ConversionError) as caught:
        plan_target(jetson, facts, precisions=[Precision.INT8], calibrations=[CalibrationMethod.HISTOGRAM])
    assert caught.value.step == "plan" and "minmax, entropy, percentile" in caught.value.hint
    # Without static int8 in the chain, the methods are unused, and the plan says so.
    fp16 = plan_target(jetson, facts, calibrations=[CalibrationMethod.ENTROPY])
    assert _labels(fp16) == ["fp16", "fp32"]
    assert any("unused" in note for note in fp16.notes)
