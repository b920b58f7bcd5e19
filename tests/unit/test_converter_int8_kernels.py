"""Which int8 ONNX models need 7-bit weights or ONNX Runtime's precise kernels: pure decisions."""

from __future__ import annotations

import pytest

from converter.exporters.onnx_export import even_batch
from converter.int8_kernels import (
    PRECISE_QUANT_OPTION,
    host_session_options,
    reduce_range_for,
    saturating_int8,
    unsigned_activations_for,
)
from hw_profiles import load_profile
from hw_profiles.schema import ModelFormat, Precision

AVX2 = ["sse4_2", "avx", "avx2", "fma", "f16c"]


@pytest.mark.parametrize(
    ("machine", "features", "saturates"),
    [
        ("x86_64", AVX2, True),
        ("AMD64", [*AVX2, "avx512f", "avx512bw"], True),
        ("x86_64", [*AVX2, "avx_vnni"], False),
        ("x86_64", [*AVX2, "avx512_vnni"], False),
        ("aarch64", ["neon"], False),
        ("arm64", ["neon", "dotprod"], False),
    ],
)
def test_only_x86_without_vnni_saturates(machine: str, features: list[str], saturates: bool) -> None:
    assert saturating_int8(machine, features) is saturates


def test_seven_bit_weights_only_for_x86_devices_without_vnni() -> None:
    assert reduce_range_for(load_profile("generic-x86"))
    assert not reduce_range_for(load_profile("intel-x86-openvino"))  # avx_vnni
    assert not reduce_range_for(load_profile("raspberry-pi-5"))
    assert not reduce_range_for(load_profile("jetson-orin-nano"))


@pytest.mark.parametrize("precision", [Precision.INT8, Precision.INT8_DYNAMIC])
def test_a_host_without_vnni_runs_other_devices_int8_onnx_precisely(precision: Precision) -> None:
    jetson = load_profile("jetson-orin-nano")
    assert host_session_options(ModelFormat.ONNX, precision, jetson, "x86_64", AVX2) == {
        PRECISE_QUANT_OPTION: "1"
    }
    # Not needed on a VNNI or ARM host, for float models, for other runtimes, or for 7-bit weights.
    assert host_session_options(ModelFormat.ONNX, precision, jetson, "x86_64", [*AVX2, "avx_vnni"]) == {}
    assert host_session_options(ModelFormat.ONNX, precision, jetson, "aarch64", ["neon"]) == {}
    assert host_session_options(ModelFormat.ONNX, Precision.FP16, jetson, "x86_64", AVX2) == {}
    assert host_session_options(ModelFormat.OPENVINO, precision, jetson, "x86_64", AVX2) == {}
    generic = load_profile("generic-x86")
    assert host_session_options(ModelFormat.ONNX, precision, generic, "x86_64", AVX2) == {}


@pytest.mark.parametrize(
    ("count", "limit", "size"), [(360, 32, 30), (512, 32, 32), (97, 32, 1), (8, 32, 8), (0, 32, 1)]
)
def test_calibration_batches_are_even_so_no_sample_is_dropped(count: int, limit: int, size: int) -> None:
    assert even_batch(count, limit) == size
    assert count % size == 0


def test_x86_devices_get_unsigned_activations_and_the_others_signed() -> None:
    assert unsigned_activations_for(load_profile("generic-x86"))
    assert unsigned_activations_for(load_profile("intel-x86-openvino"))
    # ARM kernels take int8 natively, and TensorRT (the Jetson) takes nothing else.
    assert not unsigned_activations_for(load_profile("raspberry-pi-5"))
    assert not unsigned_activations_for(load_profile("jetson-orin-nano"))
