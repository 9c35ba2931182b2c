"""Latency stage: a measurement protocol in the spirit of trtexec and optimum-benchmark.

1. Cold: the first call after loading is timed on its own (``cold_ms``).
2. Warm-up: untimed calls until *both* ``warmup_min_s`` seconds and ``warmup_min_runs`` calls are done.
3. Measure: timed calls until *both* ``measure_min_s`` seconds and ``measure_min_runs`` calls are done,
   or ``measure_max_s`` seconds have passed (then ``below_min_runs`` is set). Adaptive (``target_ci`` > 0,
   the ``ci`` profile): after those minimums, stop as soon as the distribution-free 95 % confidence interval
   of the p50 (order statistics of a binomial(n, 1/2), :func:`median_ci`) is within +-``target_ci`` of the
   p50; ``measure_max_s`` still caps it. The CI and why measuring stopped are recorded (``p50_ci_ms``,
   ``stop``: ``ci`` / ``min`` / ``max``).

CPU work is timed with ``time.perf_counter`` around each synchronous call. CUDA work is timed with a
pair of CUDA events per call and ``torch.cuda.synchronize()`` (so asynchronous kernel launches are
not mistaken for finished work); the host clock is also recorded. Statistics: p50/p90/p99, mean, std,
min, max, coefficient of variation (std/mean) with an "unstable" warning above ``cv_warn``, FPS
(frames per second = batch x 1000 / p50_ms).

Methodology comparison (anchors.md, Appendix B): trtexec warms 200 ms and measures >= 3 s and >= 10
iterations with a CoV warning; optimum-benchmark measures >= 10 s and >= 10 iterations; the official
BMV2 speed test has no warm-up, no synchronisation and reports tqdm's it/s.
"""

from __future__ import annotations

import functools
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np


@dataclass
class Protocol:
    """Latency protocol (seconds and call counts); defaults from matrix.yaml ``settings.latency``."""

    warmup_min_s: float = 0.2
    warmup_min_runs: int = 10
    measure_min_s: float = 1.0
    measure_min_runs: int = 20
    measure_max_s: float = 15.0
    cv_warn: float = 0.10
    target_ci: float = 0.0  # adaptive stop: 95 % CI of the p50 within +- this fraction of it (0: off)


def _binom_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ binomial(n, 1/2)."""
    from math import comb

    return sum(comb(n, i) for i in range(0, k + 1)) / 2.0 ** n


@functools.lru_cache(maxsize=None)
def _median_ranks(n: int, level: float = 0.95) -> Optional[Tuple[int, int]]:
    """0-based ranks (lo, hi) of the sorted sample bounding the median with coverage >= ``level``
    (the widest j with P(X < j) <= (1 - level) / 2), or None when n is too small (n < 6 at 95 %)."""
    alpha = (1.0 - level) / 2.0
    if n > 200:  # normal approximation of the binomial (exact sums overflow a float past n ~ 1000)
        from statistics import NormalDist

        z = NormalDist().inv_cdf(1.0 - alpha)
        j = max(1, int(math.floor(n / 2.0 - z * math.sqrt(n) / 2.0)))
        return j - 1, n - j
    j = 0
    while j + 1 <= n // 2 and _binom_cdf(j, n) <= alpha:  # P(X <= j) = P(X < j + 1)
        j += 1
    if j == 0:
        return None
    return j - 1, n - j


def median_ci(times_ms, level: float = 0.95) -> Optional[Tuple[float, float]]:
    """Distribution-free confidence interval (ms) of the median of ``times_ms`` (order statistics), or
    None with fewer than 6 samples (no 95 % interval exists). No bootstrap: exact for any continuous
    distribution, which CPU latency (skewed, multi-modal) is not close to normal."""
    n = len(times_ms)
    ranks = _median_ranks(n, level)
    if ranks is None:
        return None
    srt = sorted(times_ms)
    return float(srt[ranks[0]]), float(srt[ranks[1]])


@dataclass
class Latency:
    """Latency of one cell in milliseconds, on ``device`` (e.g. ``cpu: AMD EPYC (2 threads)``).

    ``samples_ms`` are the individual timed calls (kept for the distribution plots); ``clock`` is
    ``perf_counter`` or ``cuda-events``; ``warning`` is "" or "unstable: ..." / "few runs: ..."."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cv: float
    runs: int
    warmup_runs: int
    warmup_s: float
    measure_s: float
    cold_ms: Optional[float]
    fps: float
    clock: str
    device: str
    warning: str = ""
    samples_ms: List[float] = field(default_factory=list)
    p50_ci_ms: Optional[Tuple[float, float]] = None  # 95 % CI of p50 (ms), None under 6 samples
    stop: str = ""  # why measuring stopped: "ci" (adaptive target met), "min" (minimums met), "max" (cap)

    # kept for older callers: the number of warm-up calls
    @property
    def warmup(self) -> int:
        return self.warmup_runs

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(times_ms: np.ndarray, *, warmup_runs: int, warmup_s: float, measure_s: float,
              cold_ms: Optional[float], batch: int, clock: str, device: str, protocol: Protocol,
              stop: str = "") -> Latency:
    """Statistics of ``times_ms`` (one entry per timed call, ms).

    Raises:
        ValueError: ``times_ms`` is empty.
    """
    if times_ms.size == 0:
        raise ValueError("no timed runs")
    mean = float(times_ms.mean())
    std = float(times_ms.std(ddof=1)) if times_ms.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    p50 = float(np.percentile(times_ms, 50))
    warnings = []
    if cv > protocol.cv_warn:
        warnings.append(f"unstable: coefficient of variation {cv:.2f} > {protocol.cv_warn:g} "
                        f"(p50 {p50:.2f} ms, min {times_ms.min():.2f}, max {times_ms.max():.2f})")
    if times_ms.size < protocol.measure_min_runs:
        warnings.append(f"few runs: {times_ms.size} < {protocol.measure_min_runs} within measure_max_s="
                        f"{protocol.measure_max_s:g} s")
    return Latency(
        p50_ms=p50, p90_ms=float(np.percentile(times_ms, 90)), p99_ms=float(np.percentile(times_ms, 99)),
        mean_ms=mean, std_ms=std, min_ms=float(times_ms.min()), max_ms=float(times_ms.max()), cv=cv,
        runs=int(times_ms.size), warmup_runs=warmup_runs, warmup_s=warmup_s, measure_s=measure_s,
        cold_ms=cold_ms, fps=batch * 1000.0 / p50 if p50 > 0 else float("inf"), clock=clock, device=device,
        warning="; ".join(warnings), samples_ms=[round(float(t), 4) for t in times_ms],
        p50_ci_ms=median_ci(times_ms.tolist()), stop=stop,
    )


class _Stopper:
    """When to stop timed calls under ``protocol`` (see the module docstring); ``why`` after it said stop."""

    def __init__(self, protocol: Protocol) -> None:
        self.p = protocol
        self.t0 = time.perf_counter()
        self.why = ""

    def more(self, times: List[float]) -> bool:
        p, n = self.p, len(times)
        elapsed = time.perf_counter() - self.t0
        if elapsed >= p.measure_max_s and n > 0:
            self.why = "max"
            return False
        if n < p.measure_min_runs or elapsed < p.measure_min_s:
            return True
        if p.target_ci <= 0:
            self.why = "min"
            return False
        if n > 50 and n % 10:
            return True  # past 50 calls, look at the CI every 10th call (it sorts the samples)
        ci = median_ci(times)
        if ci is not None:
            mid = float(np.median(times))
            if mid > 0 and max(mid - ci[0], ci[1] - mid) <= p.target_ci * mid:
                self.why = "ci"
                return False
        return True


def measure(fn: Callable[[], object], protocol: Protocol, device: str, batch: int = 1,
            cuda: bool = False, cold: bool = False) -> Latency:
    """Time ``fn`` (one inference) under ``protocol``.

    Args:
        cuda: time with CUDA events + synchronisation (``fn`` launches work on the current stream).
        cold: time the first call separately as ``cold_ms`` (call right after loading).
    """
    sync = _cuda_sync() if cuda else (lambda: None)
    cold_ms = None
    if cold:
        t0 = time.perf_counter()
        fn()
        sync()
        cold_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    n_warm = 0
    while n_warm < protocol.warmup_min_runs or time.perf_counter() - t0 < protocol.warmup_min_s:
        fn()
        n_warm += 1
    sync()
    warm_s = time.perf_counter() - t0
    times: List[float] = []
    t0 = time.perf_counter()
    stopper = _Stopper(protocol)
    if cuda:
        import torch

        while stopper.more(times):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        clock = "cuda-events"
    else:
        while stopper.more(times):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        clock = "perf_counter"
    return summarize(np.asarray(times), warmup_runs=n_warm, warmup_s=warm_s, measure_s=time.perf_counter() - t0,
                     cold_ms=cold_ms, batch=batch, clock=clock, device=device, protocol=protocol,
                     stop=stopper.why)


def _cuda_sync() -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize


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


_ISA_PREFIXES = ("sse", "ssse", "avx", "amx", "fma", "f16c", "vnni", "bf16", "fp16", "neon", "asimd", "sve")


@functools.lru_cache(maxsize=None)
def all_cpu_flags() -> Tuple[str, ...]:
    """Every flag of the first CPU in /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm); () where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return tuple(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ()


def cpu_flags() -> List[str]:
    """The CPU's instruction-set flags that change numerics or kernel choice (SSE/AVX/AVX-512/AMX/FMA/F16C/
    VNNI/BF16/FP16, and NEON/ASIMD/SVE on Arm), sorted; empty where unreadable.

    OpenVINO's CPU plugin, for one, runs an fp16 hint as bf16 without AVX512-FP16/AMX-FP16 and as fp16
    with it, so these flags are part of every result key and of ``environment.json``."""
    return sorted({x for x in all_cpu_flags() if x.startswith(_ISA_PREFIXES) or "avx512" in x})
