"""The latency protocol: warm-up and measurement honour both their time and count minimums, the cap
holds, statistics and warnings are computed from the samples."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from harness import benchmark
from harness.benchmark import Protocol, cpu_stall_us, measure, measure_uncontended, summarize


def test_protocol_meets_both_minimums_and_the_cap():
    calls = []

    def fn():
        calls.append(time.perf_counter())

    p = Protocol(warmup_min_s=0.05, warmup_min_runs=3, measure_min_s=0.1, measure_min_runs=7, measure_max_s=5)
    lat = measure(fn, p, "cpu: test", batch=2, cold=True)
    # a ~microsecond call: the time minimums decide, so many more calls than the count minimums
    assert lat.warmup_runs > 3 and lat.warmup_s >= 0.05
    assert lat.runs > 7 and lat.measure_s >= 0.1
    assert len(calls) == 1 + lat.warmup_runs + lat.runs and lat.cold_ms is not None
    assert lat.clock == "perf_counter" and len(lat.samples_ms) == lat.runs
    # the record says how much was measured: calls and the loop's seconds (a declared record field)
    from harness.record import columns
    from harness.results import latency_fields

    rec = latency_fields(lat, None)
    assert rec["latency_runs"] == lat.runs and rec["measure_s"] == round(lat.measure_s, 3) >= 0.1
    assert "measure_s" in columns()

    def slow():
        time.sleep(0.03)

    p = Protocol(warmup_min_s=0.0, warmup_min_runs=2, measure_min_s=0.0, measure_min_runs=50, measure_max_s=0.2)
    lat = measure(slow, p, "cpu: test")
    assert lat.warmup_runs == 2  # count decides when the time minimum is 0
    assert 3 <= lat.runs < 50 and "few runs" in lat.warning  # the cap stopped it below the minimum count
    assert lat.p50_ms >= 30 and lat.fps == pytest.approx(1000 / lat.p50_ms)


def test_statistics_and_unstable_warning():
    t = np.array([10.0] * 18 + [30.0, 50.0])
    lat = summarize(t, warmup_runs=5, warmup_s=0.1, measure_s=0.3, cold_ms=90.0, batch=1, clock="perf_counter",
                    device="cpu", protocol=Protocol(measure_min_runs=20, cv_warn=0.1))
    assert lat.p50_ms == 10.0 and lat.max_ms == 50.0 and lat.min_ms == 10.0
    assert lat.p99_ms == pytest.approx(np.percentile(t, 99))
    assert lat.cv == pytest.approx(t.std(ddof=1) / t.mean())
    assert lat.warning.startswith("unstable: coefficient of variation")
    steady = summarize(np.full(20, 5.0), warmup_runs=5, warmup_s=0.1, measure_s=0.1, cold_ms=None, batch=4,
                       clock="perf_counter", device="cpu", protocol=Protocol())
    assert steady.warning == "" and steady.fps == 800.0
    with pytest.raises(ValueError, match="no timed runs"):
        summarize(np.array([]), warmup_runs=0, warmup_s=0, measure_s=0, cold_ms=None, batch=1, clock="x",
                  device="cpu", protocol=Protocol())


def test_median_ci_ranks_and_coverage():
    """The p50's CI is the order-statistic interval of binomial(n, 1/2): none below 6 samples (no 95 %
    interval exists: 2/2^5 > 5 %), [min, max] at 6, ranks 2..9 of 10 (1-based); its coverage on skewed
    lognormal samples is >= 95 % (measured 96 % at n = 12, the exact binomial coverage is 96.1 %)."""
    from harness.benchmark import median_ci

    assert median_ci([5.0, 1.0, 3.0, 2.0, 4.0]) is None
    assert median_ci([5.0, 1.0, 3.0, 2.0, 4.0, 6.0]) == (1.0, 6.0)
    assert median_ci(list(range(10, 0, -1))) == (2.0, 9.0)
    rng = np.random.default_rng(0)
    true_median = 1.0  # lognormal(0, s): median exp(0)
    hits = [lo <= true_median <= hi for lo, hi in (median_ci(rng.lognormal(0, 0.6, 12)) for _ in range(3000))]
    assert 0.945 <= float(np.mean(hits)) <= 0.975
    # a near miss: a 90 % interval is narrower than the 95 % one on the same sample
    x = rng.lognormal(0, 0.6, 40)
    lo95, hi95 = median_ci(x)
    lo90, hi90 = median_ci(x, 0.90)
    assert lo95 <= lo90 and hi90 <= hi95 and (lo95, hi95) != (lo90, hi90)


def test_adaptive_protocol_stops_when_the_p50_is_pinned_and_not_before():
    """target_ci: a steady call stops as soon as the p50's 95 % CI is within +-5 % (after the minimum count);
    a bimodal one (2 ms / 8 ms at random) never gets there and runs to the cap; without target_ci the
    minimums decide (stop "min")."""
    p = Protocol(warmup_min_s=0.0, warmup_min_runs=1, measure_min_s=0.0, measure_min_runs=6, measure_max_s=3.0,
                 target_ci=0.05)
    steady = measure(lambda: time.sleep(0.005), p, "cpu: test")
    assert steady.stop == "ci" and 6 <= steady.runs < 40
    lo, hi = steady.p50_ci_ms
    assert lo <= steady.p50_ms <= hi and max(steady.p50_ms - lo, hi - steady.p50_ms) <= 0.05 * steady.p50_ms
    rng = np.random.default_rng(1)
    p_noisy = Protocol(warmup_min_s=0.0, warmup_min_runs=1, measure_min_s=0.0, measure_min_runs=6,
                       measure_max_s=0.4, target_ci=0.05)
    noisy = measure(lambda: time.sleep(0.002 if rng.random() < 0.5 else 0.008), p_noisy, "cpu: test")
    assert noisy.stop == "max" and noisy.measure_s >= 0.4
    fixed = measure(lambda: time.sleep(0.002), Protocol(0.0, 1, 0.0, 8, 3.0), "cpu: test")
    assert fixed.stop == "min" and fixed.runs == 8


class _Pressure:
    """A stand-in for /proc/pressure/cpu's cumulative ``some`` stall (us): each measurement (a pair of reads
    around it) stalls ``shares[k]`` of its wall time; None shares: PSI unavailable."""

    def __init__(self, shares):
        self.shares, self.k, self.total, self.t0 = list(shares), 0, 10_000_000, 0.0

    def __call__(self):
        share = self.shares[min(self.k // 2, len(self.shares) - 1)]
        if share is None:
            self.k += 1
            return None
        if self.k % 2 == 0:
            self.t0 = time.perf_counter()
        else:
            self.total += int(share * (time.perf_counter() - self.t0) * 1e6)
        self.k += 1
        return self.total


def _once(p50s):
    """One 'measurement' per call (p50s[k] ms) that takes ~20 ms of wall time."""
    calls = []

    def once():
        time.sleep(0.02)
        ms = p50s[len(calls)]
        calls.append(ms)
        return summarize(np.full(6, ms), warmup_runs=2, warmup_s=0.0, measure_s=0.02, cold_ms=None, batch=1,
                         clock="perf_counter", device="cpu", protocol=Protocol(measure_min_runs=6))
    return once, calls


def test_contended_measurement_is_repeated_and_the_least_contended_kept(monkeypatch):
    """Other tasks waiting for a CPU during 50 %, then 30 %, then 20 % of the timing (limit 10 %, 2 retries):
    three measurements, the 20 % one kept (its p50) and flagged "contended"; the second of 45/5 % stops
    at the quiet one, unflagged; at exactly the limit (near miss) or without PSI nothing is repeated."""
    monkeypatch.setattr(benchmark, "RETRY_PAUSE_S", 0.0)
    p = Protocol(measure_min_runs=6, contention_max=0.10, contention_retries=2)
    once, calls = _once([200.0, 150.0, 110.0, 999.0])
    lat = measure_uncontended(once, p, _Pressure([0.5, 0.3, 0.2]))
    assert calls == [200.0, 150.0, 110.0] and lat.attempts == 3 and lat.p50_ms == 110.0
    assert lat.contention == pytest.approx(0.2, abs=0.03)
    assert "contended: other tasks waited for a CPU during 20% of the timing" in lat.warning
    assert "least contended of 3 attempts" in lat.warning

    once, calls = _once([200.0, 60.0, 999.0])
    lat = measure_uncontended(once, p, _Pressure([0.45, 0.05]))
    assert calls == [200.0, 60.0] and lat.attempts == 2 and lat.p50_ms == 60.0 and lat.warning == ""

    once, calls = _once([60.0, 999.0])
    lat = measure_uncontended(once, p, _Pressure([0.09]))
    assert calls == [60.0] and lat.attempts == 1 and lat.warning == "" and lat.contention < 0.10

    once, calls = _once([60.0, 999.0])
    lat = measure_uncontended(once, p, _Pressure([None]))
    assert calls == [60.0] and lat.attempts == 1 and lat.contention is None and lat.warning == ""

    once, calls = _once([200.0, 999.0])
    lat = measure_uncontended(once, Protocol(contention_retries=0), _Pressure([0.5]))
    assert calls == [200.0] and "contended" in lat.warning and "of 1 attempts" in lat.warning


def test_contention_is_read_from_pressure_stall_information(tmp_path):
    """The real /proc/pressure/cpu: with one busy process per core plus the timed loop, some task always
    waits for a CPU, so the measured contention is high and flagged; the file's format is parsed (a
    missing or unreadable file gives None, never an error)."""
    fake = tmp_path / "cpu"
    fake.write_text("some avg10=1.00 avg60=2.00 avg300=3.00 total=123456\n"
                    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert cpu_stall_us(str(fake)) == 123456
    assert cpu_stall_us(str(tmp_path / "missing")) is None
    fake.write_text("garbage\n")
    assert cpu_stall_us(str(fake)) is None
    if cpu_stall_us() is None:
        pytest.skip("no pressure stall information here (/proc/pressure/cpu)")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.2)

        def busy():
            t = time.perf_counter()
            while time.perf_counter() - t < 0.005:
                pass

        lat = measure_uncontended(lambda: measure(busy, Protocol(0.0, 1, 0.3, 6, 2.0), "cpu: test"),
                                  Protocol(contention_max=0.10, contention_retries=0))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert lat.contention is not None and lat.contention > 0.5, lat.contention
    assert lat.attempts == 1 and "contended" in lat.warning
