"""Keep a thread's alternate signal stack across native calls that replace it with memory they own.

OpenVINO's CPU plugin, when an ``ov.Core`` first creates it (on the first compile, or when the
Core lists its devices), points the calling thread's alternate signal stack at memory of its own.
When that Core is torn down, the plugin frees the memory, and switches the stack off only if the
tearing-down thread is the one it was given to. A Core released on another thread (the OTA
updater unloading a model loaded at start, or Python's garbage collector running on whatever
thread allocates) leaves the first thread's alternate stack pointing at freed memory. Python runs
its signal handlers on the alternate stack (``SA_ONSTACK``), so the next SIGTERM or SIGINT cannot
be delivered, and the kernel kills the process with SIGSEGV.

``preserved_signal_stack`` puts the caller's alternate stack back once such a call returns, so no
thread is ever left pointing into a library's memory. It costs two system calls, and does nothing
where ``sigaltstack`` cannot be reached through ctypes (anything but Linux).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _StackT(ctypes.Structure):
    """``stack_t`` as Linux lays it out: pointer, flags, size."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a Linux without a dynamic libc
        return None


_LIBC = _load_libc()


def current_signal_stack() -> tuple[int, int, int] | None:
    """This thread's alternate signal stack as (address, flags, size), or None where unknown."""
    if _LIBC is None:
        return None
    stack = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return int(stack.ss_sp or 0), int(stack.ss_flags), int(stack.ss_size)


@contextmanager
def preserved_signal_stack() -> Iterator[None]:
    """Run the block, then give this thread back the alternate signal stack it had before."""
    if _LIBC is None:
        yield
        return
    saved = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        _LIBC.sigaltstack(ctypes.byref(saved), None)
