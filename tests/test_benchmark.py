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
