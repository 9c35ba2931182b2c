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
    contention_max: float = 0.10  # CPU contention share above which a measurement is repeated, then flagged
    contention_retries: int = 2  # repeats of a contended measurement (the least contended one is kept)


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
    contention: Optional[float] = None  # share of the measurement other tasks waited for a CPU (PSI), None: unknown
    attempts: int = 1  # measurements made (more than 1 when contended ones were repeated)
    threads: Optional[int] = None  # intra-op threads the timed calls ran with, as the runtime reported them

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


PRESSURE_FILE = "/proc/pressure/cpu"
RETRY_PAUSE_S = 0.5  # before repeating a contended measurement, per attempt made (a burst may pass)


def cpu_stall_us(path: str = PRESSURE_FILE) -> Optional[int]:
    """Microseconds, since boot, during which at least one runnable task waited for a CPU: the ``some``
    line's ``total`` of Linux pressure stall information (``/proc/pressure/cpu``, Linux >= 4.20 with
    CONFIG_PSI). None where it does not exist or cannot be read (other systems, ``psi=0``)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def measure_uncontended(once: Callable[[], Latency], protocol: Protocol,
                        stall_us: Callable[[], Optional[int]] = cpu_stall_us) -> Latency:
    """``once()`` (one whole measurement under ``protocol``), repeated while the CPU was contended.

    Contention is the share of the measurement's wall time during which some runnable task waited for a
    CPU (``stall_us``: :func:`cpu_stall_us`); with as many intra-op threads as cores and the other workers
    stopped, that is a task outside the timed process taking a core from it (measured ~0.01 when alone).
    OpenMP runtimes (libtorch, TorchScript, eager: libgomp spins at every barrier) slow down 4-35x under
    contention that costs onnxruntime or OpenVINO 2-2.5x (docs/latency-stability.md), so one noisy
    neighbour made twin cells differ 2x. A measurement above
    ``protocol.contention_max`` is repeated up to ``protocol.contention_retries`` times (after a pause of
    :data:`RETRY_PAUSE_S` per attempt); the least contended one is kept, with ``contention`` and ``attempts``
    set, and flagged "contended: ..." in ``warning`` if it is still above the limit. Unknown contention
    (no PSI) is never repeated."""
    best: Optional[Latency] = None
    attempts = 0
    while True:
        if attempts:
            time.sleep(RETRY_PAUSE_S * attempts)
        s0, t0 = stall_us(), time.perf_counter()
        lat = once()
        s1, wall = stall_us(), time.perf_counter() - t0
        attempts += 1
        if s0 is not None and s1 is not None and wall > 0:
            lat.contention = round(min(1.0, max(0.0, (s1 - s0) / 1e6 / wall)), 4)
        if best is None or (lat.contention is not None and best.contention is not None
                            and lat.contention < best.contention):
            best = lat
        if (lat.contention is None or lat.contention <= protocol.contention_max
                or attempts > protocol.contention_retries):
            break
    best.attempts = attempts
    if best.contention is not None and best.contention > protocol.contention_max:
        best.warning = "; ".join(filter(None, [best.warning, (
            f"contended: other tasks waited for a CPU during {best.contention:.0%} of the timing "
            f"(> {protocol.contention_max:.0%}, /proc/pressure/cpu) in the least contended of {attempts} attempts")]))
    return best


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
