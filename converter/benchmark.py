"""Host benchmark of an artifact in its own runtime, with the profile's thread count.

These are *host* figures: measured on the machine that converts, not on the device. They compare
artifacts with each other (int8 against fp16 on the same host); the device's own latency comes
from the agent's telemetry. The host CPU and its inference-relevant ISA features are recorded
with every result, so nobody mistakes one for the other.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hw_profiles.schema import CPU_FEATURES

# /proc/cpuinfo spells some ARM features differently from the profiles.
_ARM_FLAG_NAMES = {"asimd": "neon", "asimddp": "dotprod", "asimdhp": "fp16", "i8mm": "i8mm", "bf16": "bf16"}


class HostInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    machine: str
    cpu: str
    cores: int
    features: list[str]


class BenchmarkResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    host_figures: bool = Field(default=True, description="Always true: measured on the converting host.")
    host: HostInfo
    runtime: str
    provider: str
    fallbacks: list[str] = Field(default_factory=list)
    threads: int
    batch: int
    warmup: int
    iterations: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput_per_s: float = Field(description="Samples per second, one request at a time.")
    size_bytes: int
    peak_rss_delta_mb: float = Field(description="Resident memory added by loading and running the model.")


def latency_summary(seconds: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p95, mean) in milliseconds of per-call wall times."""
    if not seconds:
        raise ValueError("no timings to summarise")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(np.mean(ms))


def cpu_features_from_flags(flags: Sequence[str]) -> list[str]:
    """The profile-vocabulary features among /proc/cpuinfo's flags (x86 names match; ARM are mapped)."""
    found = {_ARM_FLAG_NAMES.get(flag, flag) for flag in flags}
    return sorted(found & CPU_FEATURES)


@lru_cache(maxsize=1)
def host_info() -> HostInfo:
    cpu: str = platform.processor() or platform.machine()
    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and value.strip():
                cpu = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = value.split()
    return HostInfo(
        machine=platform.machine(),
        cpu=cpu,
        cores=os.cpu_count() or 1,
        features=cpu_features_from_flags(flags),
    )


def benchmark_session(
    session: Any,
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int,
    size_bytes: int,
    baseline_rss: int,
    warmup: int = 10,
    iterations: int = 100,
) -> BenchmarkResult:
    """Time ``session.infer(feeds)``: ``warmup`` untimed calls, then ``iterations`` timed ones.

    ``baseline_rss`` is the process's resident memory before the session was opened.
    """
    import psutil

    process = psutil.Process()
    peak = process.memory_info().rss
    for _ in range(warmup):
        session.infer(feeds)
    timings: list[float] = []
    for i in range(iterations):
        start = time.perf_counter()
        session.infer(feeds)
        timings.append(time.perf_counter() - start)
        if i % 10 == 0:  # outside the timed region; a /proc read is cheap but not free
            peak = max(peak, process.memory_info().rss)
    peak = max(peak, process.memory_info().rss)
    p50, p95, mean = latency_summary(timings)
    batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
    return BenchmarkResult(
        host=host_info(),
        runtime=session.runtime.value,
        provider=session.provider,
        fallbacks=list(session.fallbacks),
        threads=threads,
        batch=batch,
        warmup=warmup,
        iterations=iterations,
        p50_ms=p50,
        p95_ms=p95,
        mean_ms=mean,
        throughput_per_s=batch * 1e3 / mean if mean > 0 else 0.0,
        size_bytes=size_bytes,
        peak_rss_delta_mb=max(0, peak - baseline_rss) / 1e6,
    )
