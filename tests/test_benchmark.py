"""The latency protocol: warm-up and measurement honour both their time and count minimums, the cap
holds, statistics and warnings are computed from the samples."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.benchmark import Protocol, measure, summarize


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
