"""The decision judge (harness/decide.py) on real records: the committed bench run's cells (real latency
samples from real exports on this project's CI machine kind), and mutants of them that try to fool it."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest

from harness.decide import decide, decision_dicts, failure_groups, p50_ratio_ci

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "reports" / "bench" / "matrix"


@pytest.fixture(scope="module")
def real():
    recs = [json.loads(line) for line in (BENCH / "results.jsonl").read_text().splitlines() if line.strip()]
    env = json.loads((BENCH / "environment.json").read_text())
    return recs, env


def _one(decisions, runtime, precision="fp32"):
    hits = [d for d in decisions if d.runtime == runtime and d.precision == precision and d.primary]
    assert len(hits) == 1, [(d.runtime, d.precision, d.primary) for d in decisions]
    return hits[0]


def _ort_full(recs):
    return next(r for r in recs if r["runtime"] == "onnxruntime-cpu" and r["refine_mode"] == "full")


def test_real_run_recommends_a_named_config_per_target_with_accuracy_and_ci(real):
    recs, env = real
    ds = decide(recs, env)
    ort = _one(ds, "onnxruntime-cpu")
    assert ort.recommended.cell_id == _ort_full(recs)["cell_id"]
    assert ort.recommended.label == "onnx op17 · mode full"
    lo, hi = ort.recommended.p50_ci
    assert lo <= ort.recommended.p50_ms <= hi
    assert ort.accuracy["atol"] == 1e-3 and ort.accuracy["max_abs"] < 1e-3
    assert ort.runner_up is not None and ort.why_runner_up_lost.startswith("slower: p50 x")
    assert set(ort.per_semantic) == {"full", "sampling"}
    # skipped-only targets (CUDA on this CPU machine) get no decision: they say nothing about the target
    assert not [d for d in ds if "cuda" in d.runtime or "tensorrt" in d.runtime]
    # deterministic: same records in another order give the same answer and intervals
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    assert decision_dicts(decide(shuffled, env)) == decision_dicts(ds)


def test_a_faster_cell_that_fails_parity_is_never_recommended(real):
    recs, env = real
    recs = copy.deepcopy(recs)
    fast = copy.deepcopy(_ort_full(recs))
    fast.update(cell_id=fast["cell_id"] + "-mutant", status="fail", stage="parity", opset=18,
                latency_samples_ms=[s * 0.5 for s in fast["latency_samples_ms"]], p50_ms=fast["p50_ms"] * 0.5)
    d = _one(decide(recs + [fast], env), "onnxruntime-cpu")
    assert d.recommended.cell_id == _ort_full(recs)["cell_id"]
    # an xpass (a rule says it should fail) does not compete either
    fast.update(status="xpass", rule="some-rule")
    assert _one(decide(recs + [fast], env), "onnxruntime-cpu").recommended.cell_id == _ort_full(recs)["cell_id"]


def _twin(rec, scale, suffix, key, **kw):
    t = copy.deepcopy(rec)
    t.update(cell_id=rec["cell_id"] + suffix, artifact_key=key, opset=18,
             latency_samples_ms=[s * scale for s in rec["latency_samples_ms"]], p50_ms=rec["p50_ms"] * scale, **kw)
    return t


def test_a_difference_inside_the_noise_is_a_tie_broken_by_portability(real):
    """Near-miss: a twin 3 % faster on a less portable artifact loses; mutant: 30 % faster wins."""
    recs, env = real
    base = _ort_full(recs)
    shared = copy.deepcopy(base)  # the same artifact file also passes on OpenVINO: more portable
    shared.update(cell_id=base["cell_id"] + "-ov", runtime="openvino-cpu")
    near = _twin(base, 0.97, "-near", "other-artifact")
    d = _one(decide(recs + [shared, near], env), "onnxruntime-cpu")
    assert d.recommended.cell_id == base["cell_id"], d.why_runner_up_lost
    assert d.runner_up.cell_id == near["cell_id"]
    assert "tied on latency" in d.why_runner_up_lost and "less portable" in d.why_runner_up_lost
    assert "passes on 1 runtime(s), the winner's on 2" in d.why_runner_up_lost
    far = _twin(base, 0.7, "-far", "other-artifact")
    d = _one(decide(recs + [shared, far], env), "onnxruntime-cpu")
    assert d.recommended.cell_id == far["cell_id"]
    assert d.why_runner_up_lost.startswith("slower: p50 x1.4")
    # fewer data-dependent ops break a tie between equally shared artifacts
    a = _twin(base, 1.0, "-a", "ka", data_dependent_ops="NonZerox1, TopKx1")
    b = _twin(base, 1.02, "-b", "kb", data_dependent_ops="")
    d = _one(decide([a, b], env), "onnxruntime-cpu")
    assert d.recommended.cell_id == b["cell_id"] and "2 data-dependent op type(s) vs 0" in d.why_runner_up_lost


def test_a_noisy_gap_is_not_called_significant(real):
    """Two cells whose samples overlap widely (cv ~0.37, the bench's eager cell) tie at an 8 % p50 gap."""
    recs, env = real
    eager = next(r for r in recs if r["runtime"] == "eager-cpu" and r["refine_mode"] == "full")
    s = np.asarray(eager["latency_samples_ms"])
    ratio, lo, hi = p50_ratio_ci(s * 1.08, s)
    assert lo <= 1.05 < 1.08 <= hi or lo <= 1.05
    a = _twin(eager, 1.0, "-a", "ka")
    b = _twin(eager, 1.08, "-b", "kb")
    d = _one(decide([b, a], env), "eager-cpu")
    assert d.ties == 1 and "tied on latency" in d.why_runner_up_lost


def test_p50_ratio_ci_brackets_the_truth():
    rng = np.random.default_rng(3)
    a = rng.lognormal(np.log(20), 0.1, 40)
    r, lo, hi = p50_ratio_ci(a * 1.5, a)
    assert r == pytest.approx(1.5) and lo <= 1.5 <= hi
    r, lo, hi = p50_ratio_ci(rng.permutation(a), a)
    assert lo <= 1.0 <= hi
    with pytest.raises(ValueError, match="needs >= 2 samples"):
        p50_ratio_ci([1.0], a)


def test_a_target_where_nothing_passes_is_blocked_with_its_rule_and_evidence(real):
    recs, env = real
    env = dict(env, rules={"ort-broken": {"reason": "x", "evidence": "https://github.com/microsoft/onnxruntime/issues/1"}})
    rs = copy.deepcopy([r for r in recs if r["runtime"] == "onnxruntime-cpu"])
    for r in rs:
        r.update(status="xfail", stage="load", rule="ort-broken", reason="RuntimeError: boom [expected: x]")
    rs[0].update(status="error", rule="", reason="ValueError: other")
    d = _one(decide(rs, env), "onnxruntime-cpu")
    assert d.recommended is None
    causes = {g["cause"]: g for g in d.blocked}
    assert causes["rule ort-broken"]["evidence"] == "https://github.com/microsoft/onnxruntime/issues/1"
    assert causes["error at load: ValueError"]["count"] == 1
    assert "blocked" in decision_dicts([d])[0]
    # without the rules in environment.json, the first URL in the reason is the evidence
    rs[1]["reason"] = "xfail: see https://github.com/pytorch/pytorch/issues/69889]"
    groups = {g["cause"]: g for g in failure_groups(rs, {})}
    assert groups["rule ort-broken"]["evidence"] == "https://github.com/pytorch/pytorch/issues/69889"
