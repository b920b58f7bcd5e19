"""What ONNX Runtime's int8 kernels need on x86 CPUs without VNNI: pure decisions, no I/O.

On AVX2 (and AVX-512 without VNNI) ONNX Runtime multiplies uint8 activations by int8 weights
with ``VPMADDUBSW``, which adds each pair of products into a *16-bit* lane and saturates: two
products of 255 x 127 already exceed 32767. Measured here on digits-cnn (AMD EPYC, AVX2): the
symmetric int8 model that the Jetson profile asks for agreed with fp32 on 95.0% of the top-1
predictions with the fused kernels, and on 100% with the reference (unfused) ones. VNNI's
``VPDPBUSD`` accumulates in 32 bits and has no such problem; ARM's dot-product neither.

The same kernels take *unsigned* activations, so x86 devices get uint8 activations (U8S8, as
ONNX Runtime recommends for x86) and the others int8 (S8S8; TensorRT takes nothing else).

Two remedies for the saturation, each where it belongs:

- **For a device** that is x86 without VNNI (``generic-x86``), the model is quantized with
  ``reduce_range`` (7-bit weights, so a pair of products cannot overflow) and keeps the fast
  kernels. That is ONNX Runtime's own advice for these CPUs.
- **On the converting host**, when it is x86 without VNNI and the model was *not* quantized
  that way (it is meant for an ARM board, a Jetson or a VNNI CPU), the host's validation and
  benchmark open it with ``session.x64quantprecision=1``, which makes ONNX Runtime widen before
  adding. The figures then describe the model, not this host's kernel shortcut (its latency is
  pessimistic, and the report says so).
"""

from __future__ import annotations

from collections.abc import Iterable

from hw_profiles.schema import Architecture, HardwareProfile, ModelFormat, Precision

# ISA features whose int8 dot product accumulates in 32 bits.
WIDE_INT8_DOT = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86_MACHINES = frozenset({"x86_64", "amd64", "x64"})
PRECISE_QUANT_OPTION = "session.x64quantprecision"
_INT8 = (Precision.INT8, Precision.INT8_DYNAMIC)


def saturating_int8(machine: str, features: Iterable[str]) -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels saturate on this CPU (x86 without VNNI)."""
    return machine.lower() in X86_MACHINES and not (set(features) & WIDE_INT8_DOT)


def reduce_range_for(profile: HardwareProfile) -> bool:
    """Quantize ONNX weights to 7 bits for this device: it is x86 without VNNI."""
    return saturating_int8(Architecture(profile.architecture).value, profile.cpu.features)


def unsigned_activations_for(profile: HardwareProfile) -> bool:
    """Quantize ONNX activations to uint8 for this device: it is x86.

    ONNX Runtime's x86 int8 kernels multiply unsigned activations by signed weights
    (``VPMADDUBSW``, and VNNI's ``VPDPBUSD``); int8 activations are shifted to uint8 on every call.
    Measured here on mobilenet-mini (AVX2, 2 threads): uint8 activations ran 1.6x faster than int8
    ones. ARM kernels take int8 natively, and TensorRT only takes int8.
    """
    return Architecture(profile.architecture) is Architecture.X86_64


def host_session_options(
    fmt: ModelFormat,
    precision: Precision,
    profile: HardwareProfile,
    host_machine: str,
    host_features: Iterable[str],
) -> dict[str, str]:
    """ONNX Runtime session entries the *converting host* needs to run this artifact faithfully."""
    if fmt is not ModelFormat.ONNX or precision not in _INT8:
        return {}
    if not saturating_int8(host_machine, host_features) or reduce_range_for(profile):
        return {}
    return {PRECISE_QUANT_OPTION: "1"}
