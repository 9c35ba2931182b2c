"""Latency stage: warm-up, then timed runs; percentiles in milliseconds.

CPU work is timed with ``time.perf_counter`` around each synchronous call. CUDA timing (events plus
synchronisation) and the fuller protocol of issue #4 build on :class:`Latency`.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class Latency:
    """Latency of one cell: ``p50_ms``/``p90_ms``/``mean_ms``/``min_ms`` over ``runs`` timed calls
    after ``warmup`` untimed ones, on ``device`` (e.g. ``cpu: AMD EPYC ... (2 threads)``)."""

    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int
    device: str

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """Human-readable CPU model (from /proc/cpuinfo on Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(fn: Callable[[], object], warmup: int, runs: int, device: str) -> Latency:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed (ms per call)."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs, dtype=np.float64)
    for k in range(runs):
        t0 = time.perf_counter()
        fn()
        times[k] = (time.perf_counter() - t0) * 1e3
    return Latency(
        p50_ms=float(np.percentile(times, 50)),
        p90_ms=float(np.percentile(times, 90)),
        mean_ms=float(times.mean()),
        min_ms=float(times.min()),
        runs=runs,
        warmup=warmup,
        device=device,
    )


def physical_cores() -> int:
    """Number of physical CPU cores (distinct (physical id, core id) pairs in /proc/cpuinfo), falling
    back to ``os.cpu_count()``; at least 1."""
    import os

    pairs = set()
    phys = core = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":", 1)[1].strip()
                elif not line.strip():
                    if core is not None:
                        pairs.add((phys, core))
                    phys = core = None
        if core is not None:
            pairs.add((phys, core))
    except OSError:
        pass
    return max(1, len(pairs) or os.cpu_count() or 1)
