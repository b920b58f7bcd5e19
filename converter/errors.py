"""The one error type the converter raises: it names the step, the format and what to do next.

Every failure an operator can cause (a missing file, a calibration array of the wrong shape, an
operator an exporter cannot lower, a profile nobody wrote) ends up as a ``ConversionError``, so the
CLI can print it as two clean lines instead of a traceback, and scripts can read ``step``.
"""

from __future__ import annotations

import re
from typing import Any

# The steps of a conversion, in order. ``ConversionError.step`` is always one of these.
STEPS = ("load", "data", "plan", "export", "quantize", "validate", "benchmark", "package")


class ConversionError(Exception):
    """A conversion step failed in a way the operator can act on."""

    def __init__(
        self,
        message: str,
        *,
        step: str,
        hint: str,
        format: str | None = None,
        profile: str | None = None,
    ) -> None:
        if step not in STEPS:
            raise ValueError(f"unknown conversion step {step!r}; steps are {STEPS}")
        super().__init__(message)
        self.message = message
        self.step = step
        self.hint = hint
        self.format = format
        self.profile = profile

    def __str__(self) -> str:
        return f"{self.headline()} (hint: {self.hint})"

    def headline(self) -> str:
        """The message prefixed with where it happened: ``[export tflite, raspberry-pi-5] ...``."""
        where = ", ".join(part for part in (f"{self.step} {self.format or ''}".strip(), self.profile) if part)
        return f"[{where}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "format": self.format,
            "profile": self.profile,
            "message": self.message,
            "hint": self.hint,
        }


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# How the toolchains name an operator they cannot handle, most specific first.
_UNSUPPORTED_OP_PATTERNS = (
    re.compile(r"operation_type='(\w+)'"),  # onnx2torch: "Converter is not implemented (...)"
    re.compile(r"Lowering not found:\s*([\w.:]+)"),  # litert-torch
    re.compile(r"unrecognized namespace\s+([\w.:]+)"),  # torch.onnx (TorchScript)
    re.compile(r"[Uu]nsupported (?:operator|op)[^:]*:\s*'?([\w.:]+)"),
    re.compile(r"\b(aten::\w+)"),
    re.compile(r"\b(aten\.\w+(?:\.\w+)?)"),
)


def describe_failure(exc: BaseException) -> str:
    """``Type: first line`` of the deepest cause, without terminal colour codes."""
    deepest = exc
    while deepest.__cause__ is not None and deepest.__cause__ is not deepest:
        deepest = deepest.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(deepest)).splitlines() if line.strip()]
    return f"{type(deepest).__name__}: {lines[0] if lines else 'no message'}"


def unsupported_operator(text: str) -> str | None:
    """The operator a toolchain's error message names as unsupported, if it names one."""
    for pattern in _UNSUPPORTED_OP_PATTERNS:
        match = pattern.search(_ANSI.sub("", text))
        if match:
            return match.group(1).rstrip(".")
    return None
