"""Keep the toolchains' own chatter off the operator's terminal, but not out of error messages.

TensorFlow, LiteRT, ONNX Runtime's calibrators, NNCF and torch's exporters print progress lines
and C++ log lines on stdout and stderr. ``quiet()`` sends Python-level stdout and the process's
file descriptors 1 and 2 (where native libraries write) to a temporary file while a toolchain
runs. When the toolchain fails, ``Captured.tail()`` gives its last lines for the error message.
Progress bars keep drawing meanwhile: ``converter.progress.RichProgress`` writes to its own copy
of the terminal's file descriptor.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

# Loggers of the toolchains that log at INFO or WARNING on every call.
NOISY_LOGGERS = ("nncf", "onnxruntime", "absl", "tensorflow", "torch.onnx", "torch._export", "root")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Importing openvino sends a usage ping from a background thread that forks; once litert-torch has
# loaded JAX, JAX warns about that fork on the terminal. The ping is OpenVINO's, not ours to fix.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


@dataclass
class Captured:
    """What a toolchain printed while ``quiet()`` was active."""

    stdout: io.StringIO = field(default_factory=io.StringIO)
    native: str = ""

    def text(self) -> str:
        return self.stdout.getvalue() + self.native

    def tail(self, lines: int = 8) -> str:
        kept = [line for line in self.text().splitlines() if line.strip()]
        return "\n".join(kept[-lines:])


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    """Capture stdout (Python) and stderr (native and Python) for the duration of the block."""
    captured = Captured()
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    with (
        tempfile.TemporaryFile(mode="w+b") as sink,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(captured.stdout),
    ):
        warnings.simplefilter("ignore")
        saved = {fd: _redirect_fd(fd, sink.fileno()) for fd in (1, 2)}
        try:
            yield captured
        finally:
            for fd, copy in saved.items():
                _restore_fd(fd, copy)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            sink.seek(0)
            captured.native = sink.read().decode("utf-8", errors="replace")


def _redirect_fd(fd: int, target: int) -> int | None:
    """Point ``fd`` at ``target``; returns a copy of the old one (None where fds are unavailable)."""
    try:
        for stream in (sys.__stdout__, sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        saved = os.dup(fd)
        os.dup2(target, fd)
    except (OSError, ValueError):
        return None
    return saved


def _restore_fd(fd: int, saved: int | None) -> None:
    if saved is None:
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
    os.dup2(saved, fd)
    os.close(saved)
