"""The picks' safety notes (harness/decide.py: Note, prefer_guarded, pick_notes, precision_notes) on the
committed runs reports/baseline (ci profile) and reports/nightly-baseline: what the pick does with input
outside the model's contract, the input-guarded twin preferred when its cost is inside the noise, a reduced
precision slower than fp32 flagged "do not ship", and the parity rule a reduced-precision pick passed by.
Each judge meets a mutant of the real records that must change its answer and a near-miss that must not."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from harness.decide import (GUARD_AXIS, MIN_EFFECT, NOTE_KINDS, Note, decide, decision_dicts, drift_margin, guard_axis,
                            p50_ratio_ci, silent_probes)
from harness.models import MODELS, default_model, record_owner

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "reports" / "baseline"
NIGHTLY = ROOT / "reports" / "nightly-baseline"
ORT32 = "mobilenetv2-full-na-na-onnx-sim-op17-fp32-onnxruntime-cpu-288x512-b1"  # the ORT fp32 pick of both runs
ORT16 = "mobilenetv2-full-na-na-onnx-sim-op17-fp16-onnxruntime-cpu-288x512-b1"


def _load(d: Path) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    recs = [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines() if line.strip()]
    return recs, json.loads((d / "environment.json").read_text())


@pytest.fixture(scope="module")
def baseline():
    return _load(BASELINE)


@pytest.fixture(scope="module")
def nightly():
    """The nightly run without its legacy opset-18 ONNX graphs: ties go to the newer opset (decide.py), and
    those graphs have no guarded twin; the notes are judged on the op17 pick, which has one."""
    recs, env = _load(NIGHTLY)
    return [r for r in recs if not (r.get("exporter") == "onnx" and r.get("opset") == 18)], env


@pytest.fixture(scope="module")
def base_decisions(baseline):
    return decide(*baseline)


@pytest.fixture(scope="module")
def nightly_decisions(nightly):
    return decide(*nightly)


def _d(decisions, runtime, precision="fp32"):
    """The primary decision of the default model (the one whose cells carry the guard axis and the probes)."""
    hits = [d for d in decisions if d.runtime == runtime and d.precision == precision and d.primary
            and d.model == default_model()]
    assert len(hits) == 1, [(d.model, d.target) for d in hits]
    return hits[0]


def _note(d, kind):
    found = [n for n in d.notes if n.kind == kind]
    assert len(found) <= 1, found
    return found[0] if found else None


def _by_id(recs):
    return {r["cell_id"]: r for r in recs}


def _scaled(rec, scale):
    """The record with its per-call samples and p50 scaled (a slower or faster twin of itself)."""
    rec["latency_samples_ms"] = [s * scale for s in rec["latency_samples_ms"]]
    rec["p50_ms"] = rec["p50_ms"] * scale
    return rec


# ------------------------------------------------------------------------------------------ the Note type
def test_a_note_refuses_an_unknown_kind_or_an_empty_text():
    with pytest.raises(ValueError, match="note kind 'warning'; expected one of"):
        Note("warning", "x")
    with pytest.raises(ValueError, match="needs a text"):
        Note("guard", "  ")
    n = Note("guard", "t", ("a", "b"), "why")
    assert n.as_dict() == {"kind": "guard", "label": "input guard", "text": "t", "detail": "why", "cells": ["a", "b"]}


def test_the_guard_axis_is_read_from_the_adapters_declarations():
    """No model is named: an adapter has guarded twins exactly when its axes declare GUARD_AXIS as a bool axis."""
    axes = {name: guard_axis(a) for name, a in MODELS.items()}
    assert set(axes.values()) == {GUARD_AXIS, ""}
    for name, a in MODELS.items():
        assert (axes[name] == GUARD_AXIS) == (GUARD_AXIS in a.axis_names())


# ------------------------------------------------------------------------------------------ 1. input contract
def test_the_contract_note_names_the_silent_failures_and_what_the_guarded_twin_does(nightly, nightly_decisions):
    recs, _ = nightly
    d = _d(nightly_decisions, "onnxruntime-cpu")
    assert d.recommended.cell_id == ORT32
    n = _note(d, "input_contract")
    assert n.text == ("returns a wrong matte without an error for: H/W not a multiple of 4, 0-255 input; "
                      "the +guard twin refuses such input.")
    assert n.cells == (ORT32, ORT32 + "-guard")
    assert "refuses with an error: float64 input, 4-channel (RGBA) input" in n.detail
    # the words come from the record's probe fields, not from a table of runtimes
    r = _by_id(recs)[ORT32]
    assert (r["probe_size"], r["probe_range"], r["silent_failures"]) == ("garbage", "garbage", 2)
    assert silent_probes(r) == ["size", "range"]


def test_contract_mutants_change_the_words_and_a_near_miss_does_not(nightly):
    recs, env = nightly
    by = _by_id(recs)
    # mutant: the pick now answers RGBA input too (channels garbage) -> named; 0-255 refused -> no longer named
    mut = copy.deepcopy(recs)
    m = _by_id(mut)
    m[ORT32].update(probe_channels="garbage", probe_range="refuses")
    text = _note(_d(decide(mut, env), "onnxruntime-cpu"), "input_contract").text
    assert "for: H/W not a multiple of 4, 4-channel (RGBA) input;" in text and "0-255" not in text.split(";")[0]
    # mutant: the guarded twin still answers odd sizes wrongly -> said so
    mut = copy.deepcopy(recs)
    _by_id(mut)[ORT32 + "-guard"]["probe_size"] = "garbage"
    text = _note(_d(decide(mut, env), "onnxruntime-cpu"), "input_contract").text
    assert "the +guard twin refuses 0-255 input and still answers H/W not a multiple of 4 wrongly" in text
    # mutant: the pick was never probed -> no contract note at all (nothing is claimed without evidence)
    mut = copy.deepcopy(recs)
    _by_id(mut)[ORT32].pop("input_contract")
    assert _note(_d(decide(mut, env), "onnxruntime-cpu"), "input_contract") is None
    # near-miss: a harmless outcome (dtype converts instead of refuses) is not a silent failure
    mut = copy.deepcopy(recs)
    _by_id(mut)[ORT32]["probe_dtype"] = "converts"
    n = _note(_d(decide(mut, env), "onnxruntime-cpu"), "input_contract")
    assert n.text.startswith("returns a wrong matte without an error for: H/W not a multiple of 4, 0-255 input;")
    assert "converts silently (harmless): float64 input" in n.detail
    assert by[ORT32]["probe_dtype"] == "refuses"  # the fixture itself is untouched


# ------------------------------------------------------------------------------------------ 2. the guarded twin
def test_a_guarded_twin_inside_the_noise_is_chosen_and_says_so(baseline, base_decisions):
    """Baseline: the guarded twin of the ORT fp32 pick is x1.03 (95 % CI 1.01-1.05): a tie, so it ships."""
    recs, _ = baseline
    by = _by_id(recs)
    d = _d(base_decisions, "onnxruntime-cpu")
    assert d.recommended.cell_id == ORT32 + "-guard"
    assert d.runner_up.cell_id == ORT32
    assert d.why_runner_up_lost.startswith("the same config without the input guard: it returns a wrong matte "
                                           "without an error for H/W not a multiple of 4, 0-255 input")
    ratio, lo, hi = p50_ratio_ci(by[ORT32 + "-guard"]["latency_samples_ms"], by[ORT32]["latency_samples_ms"])
    assert lo <= 1 + MIN_EFFECT < hi  # the twin ties: its CI reaches into the noise band
    n = _note(d, "guard")
    assert n.text == f"guarded twin chosen: x{ratio:.2f} p50, inside the noise (95 % CI {lo:.2f}–{hi:.2f} of the fastest's p50)."
    assert n.cells == (ORT32 + "-guard", ORT32)
    assert "returns a wrong matte without an error for: H/W not a multiple of 4, 0-255 input" in n.detail
    assert _note(d, "input_contract").text.startswith("no silent failure")
    # every guarded pick of the run is one whose twin tied (never a slower one)
    for dd in base_decisions:
        if dd.recommended is not None and dd.recommended.record.get(GUARD_AXIS):
            assert dd.recommended.tie and _note(dd, "guard").text.startswith("guarded twin chosen")


def test_a_guarded_twin_beyond_the_noise_is_named_with_its_cost(nightly, nightly_decisions):
    """Nightly: the same twin is x1.18 (CI 1.16-1.22): the unguarded pick stays, the alternative and its cost shown."""
    recs, _ = nightly
    by = _by_id(recs)
    d = _d(nightly_decisions, "onnxruntime-cpu")
    assert d.recommended.cell_id == ORT32
    ratio, lo, hi = p50_ratio_ci(by[ORT32 + "-guard"]["latency_samples_ms"], by[ORT32]["latency_samples_ms"])
    assert lo > 1 + MIN_EFFECT
    n = _note(d, "guard")
    assert n.text.startswith(f"guarded twin not chosen: it costs x{by[ORT32 + '-guard']['p50_ms'] / by[ORT32]['p50_ms']:.2f} "
                             f"p50, beyond the noise (95 % CI {lo:.2f}–{hi:.2f}")
    assert n.cells == (ORT32, ORT32 + "-guard")


def test_guard_preference_mutants_and_near_misses(baseline, nightly):
    """Mutant: the baseline twin made 15 % slower loses; near-miss: the nightly twin made as fast as the pick
    (x1.00) wins; mutant: a twin that the probes show no safer is not preferred even when free."""
    recs, env = baseline
    mut = copy.deepcopy(recs)
    _scaled(_by_id(mut)[ORT32 + "-guard"], 1.15)
    d = _d(decide(mut, env), "onnxruntime-cpu")
    assert d.recommended.cell_id == ORT32 and _note(d, "guard").text.startswith("guarded twin not chosen: it costs x1.1")

    nrecs, nenv = nightly
    mut = copy.deepcopy(nrecs)
    m = _by_id(mut)
    _scaled(m[ORT32 + "-guard"], m[ORT32]["p50_ms"] / m[ORT32 + "-guard"]["p50_ms"])
    d = _d(decide(mut, nenv), "onnxruntime-cpu")
    assert d.recommended.cell_id == ORT32 + "-guard"
    assert _note(d, "guard").text.startswith("guarded twin chosen")

    mut = copy.deepcopy(recs)
    _by_id(mut)[ORT32 + "-guard"].update(probe_size="garbage", probe_range="garbage", silent_failures=2)
    d = _d(decide(mut, env), "onnxruntime-cpu")
    assert d.recommended.cell_id == ORT32
    assert _note(d, "guard").text == "guarded twin not preferred: the probes show it no safer."


def test_without_latency_the_guard_is_not_preferred(baseline):
    """The pick and its guarded twin, neither timed: nothing shows the guard's cost inside the noise."""
    recs, env = baseline
    by = _by_id(recs)
    pair = [{k: (None if k in ("p50_ms", "latency_samples_ms") else v) for k, v in by[c].items()}
            for c in (ORT32, ORT32 + "-guard")]
    d = _d(decide(pair, env), "onnxruntime-cpu")
    assert d.recommended.cell_id == ORT32
    assert _note(d, "guard").text == ("guarded twin not preferred: no latency measured to show its cost is inside "
                                      "the noise.")


def test_a_model_without_a_guard_axis_gets_no_guard_notes(base_decisions):
    for d in base_decisions:
        if not guard_axis(record_owner({"model": d.model})):
            assert _note(d, "guard") is None and "without the input guard" not in d.why_runner_up_lost


# ------------------------------------------------------------------------------------------ 3. slower than fp32
def test_reduced_precision_slower_than_fp32_is_do_not_ship_with_both_numbers_and_the_cpu(baseline, base_decisions):
    recs, env = baseline
    flagged = 0
    for d in base_decisions:
        if d.precision == "fp32" or d.recommended is None:
            continue
        fp32 = [x for x in base_decisions if (x.model, x.runtime, x.shape, x.precision) == (d.model, d.runtime, d.shape, "fp32")]
        n = _note(d, "slower_than_fp32")
        if not fp32:
            assert n is None
            continue
        fastest = min((c for c in fp32[0].candidates if c.p50_ms is not None), key=lambda c: c.p50_ms)
        ratio, lo, hi = p50_ratio_ci(d.recommended.record["latency_samples_ms"], fastest.record["latency_samples_ms"])
        assert (n is not None) == (lo > 1 + MIN_EFFECT), (d.target, lo)
        if n is None:
            continue
        flagged += 1
        assert d.notes[0] is n  # first on the card
        assert n.text.startswith(f"{d.precision} slower than fp32 here: do not ship. p50 {d.recommended.p50_ms:.1f} vs "
                                 f"{fastest.p50_ms:.1f} ms (x{ratio:.2f}, 95 % CI {lo:.2f}–{hi:.2f}) on CPU {env['cpu']}")
        assert "which has native fp16 arithmetic (avx512_fp16, f16c)" in n.text  # this Xeon's flags
        assert n.cells == (d.recommended.cell_id, fastest.cell_id)
    assert flagged == 4  # every BGMv2 fp16 CPU pick of the ci profile (onnxruntime, openvino, libtorch, torchscript)


def test_slower_than_fp32_near_miss_and_mutants(baseline):
    """Near-miss: RVM's fp16 ORT pick is x1.01 of fp32 (CI 0.98-1.04): no note. Mutant: the same made 30 %
    slower gets it; mutant: the BGMv2 fp16 pick made faster than fp32 loses it."""
    recs, env = baseline
    ds = decide(recs, env)
    rvm16 = [d for d in ds if d.precision == "fp16" and d.primary and not guard_axis(record_owner(d.recommended.record))]
    assert len(rvm16) == 1 and _note(rvm16[0], "slower_than_fp32") is None
    target = (rvm16[0].model, rvm16[0].runtime, "fp16")
    mut = copy.deepcopy(recs)
    for r in mut:
        if (record_owner(r).name, r["runtime"], r["precision"]) == target and r.get("p50_ms"):
            _scaled(r, 1.3)
    d = next(x for x in decide(mut, env) if (x.model, x.runtime, x.precision) == target and x.primary)
    assert _note(d, "slower_than_fp32").text.startswith("fp16 slower than fp32 here: do not ship.")
    mut = copy.deepcopy(recs)
    m = _by_id(mut)
    _scaled(m[ORT16], 0.9 * m[ORT32]["p50_ms"] / m[ORT16]["p50_ms"])
    d = _d(decide(mut, env), "onnxruntime-cpu", "fp16")
    assert d.recommended.cell_id == ORT16 and _note(d, "slower_than_fp32") is None
    # near-miss: really slower (CI above 1) but inside the 5 % band is not "do not ship"
    mut = copy.deepcopy(recs)
    m = _by_id(mut)
    _scaled(m[ORT16], 1.035 * np.median(m[ORT32]["latency_samples_ms"]) / np.median(m[ORT16]["latency_samples_ms"]))
    _, lo, _ = p50_ratio_ci(m[ORT16]["latency_samples_ms"], m[ORT32]["latency_samples_ms"])
    assert 1.0 < lo <= 1 + MIN_EFFECT
    d = _d(decide(mut, env), "onnxruntime-cpu", "fp16")
    assert d.recommended.cell_id == ORT16 and _note(d, "slower_than_fp32") is None


def test_the_hardware_words_follow_environment_json(baseline):
    recs, env = baseline
    old = dict(env, cpu="Old CPU", cpu_flags=["avx2", "f16c", "fma"])
    n = _note(_d(decide(recs, old), "onnxruntime-cpu", "fp16"), "slower_than_fp32")
    assert n.text.endswith("on CPU Old CPU, without native fp16 arithmetic (no avx512_fp16, no amx_fp16; f16c converts only).")
    bare = {k: v for k, v in env.items() if k != "cpu_flags"}
    n = _note(_d(decide(recs, bare), "onnxruntime-cpu", "fp16"), "slower_than_fp32")
    assert n.text.endswith(f"on CPU {env['cpu']} (flags not recorded).")


# ------------------------------------------------------------------------------------------ 4. the parity rule
def test_the_drift_profile_rule_is_written_out_with_its_numbers(baseline, base_decisions):
    recs, env = baseline
    r = _by_id(recs)[ORT16]
    assert r["parity_ref"] == "fp16 drift profile" and r["violation_frac_pha"] > 0.25  # 29 % beyond atol 0.02
    d = _d(base_decisions, "onnxruntime-cpu", "fp16")
    n = _note(d, "parity_rule")
    tol = env["tolerances"]["fp16"]
    worst = drift_margin(r["drift_profile"], tol["eager_drift_factor"], tol["atol"])
    assert n.text == ("passed by the fp16 drift-profile rule, not the pixel rule (atol 0.02, at most 0.1 % of pixels "
                      "beyond it): 29.1 % of alpha pixels beyond atol is allowed because eager fp16 itself puts 43.2 % "
                      f"there (vs fp32); its drift from fp32 stays within 1.5x eager fp16's at every quantile (closest: "
                      f"{100 * worst[0]:.3g} % of the limit).")
    assert n.detail.startswith("Drift profile: the median, 90 %, 99 %, 99.9 % quantiles and the max of |output − eager fp32|")
    assert "cell 0.0164/0.0513/0.1/0.143/0.216 vs eager fp16 0.0167/0.0521/0.106/0.16/0.207" in n.detail
    # fp32 picks pass by the plain rule: no note
    assert _note(_d(base_decisions, "onnxruntime-cpu"), "parity_rule") is None


def test_drift_margin_reproduces_the_recorded_verdicts(nightly):
    """The judge re-reads every recorded drift profile: each cell that passed by it is within the limit, and
    the one that failed by it (an xfail) is beyond it on the outputs its reason names."""
    recs, env = nightly
    tol = env["tolerances"]["fp16"]
    passed = [r for r in recs if r.get("parity_ref") == "fp16 drift profile"]
    failed = [r for r in recs if r.get("drift_profile") and r.get("parity_ref") != "fp16 drift profile"]
    assert len(passed) > 100 and len(failed) == 1
    for r in passed:
        assert drift_margin(r["drift_profile"], tol["eager_drift_factor"], tol["atol"])[0] <= 1.0, r["cell_id"]
    bad = failed[0]
    assert drift_margin(bad["drift_profile"], tol["eager_drift_factor"], tol["atol"])[0] > 1.0
    for out in ("pha", "fgr"):
        assert f"{out}: drift from fp32" in bad["reason"]
        assert drift_margin({out: bad["drift_profile"][out]}, tol["eager_drift_factor"], tol["atol"])[0] > 1.0


def test_a_contradicting_drift_profile_is_called_out_and_a_near_miss_is_not(baseline):
    """Mutant: the pick's alpha max drift raised past 1.5x eager's -> the note says the record contradicts its
    verdict. Near-miss: raised to just under the limit -> still within it."""
    recs, env = baseline
    limit = 1.5 * _by_id(recs)[ORT16]["drift_profile"]["pha"][1][-1]
    for value, words in ((limit * 1.01, "but the recorded profile breaks the rule (pha at the max"),
                         (limit * 0.999, "stays within 1.5x eager fp16's at every quantile (closest: 99.9 % of the limit)")):
        mut = copy.deepcopy(recs)
        _by_id(mut)[ORT16]["drift_profile"]["pha"][0][-1] = value
        assert words in _note(_d(decide(mut, env), "onnxruntime-cpu", "fp16"), "parity_rule").text
    # near-miss: a median foreground drift 5x eager's but under atol 0.02 is within the rule (its floor is atol)
    mut = copy.deepcopy(recs)
    fgr = _by_id(mut)[ORT16]["drift_profile"]["fgr"]
    assert 1.5 * fgr[1][0] < 0.015 < 0.02
    fgr[0][0] = 0.015
    text = _note(_d(decide(mut, env), "onnxruntime-cpu", "fp16"), "parity_rule").text
    assert "stays within 1.5x eager fp16's at every quantile (closest: 75 % of the limit)" in text


def test_the_pixel_rule_and_a_missing_tolerance_are_said_plainly(baseline, base_decisions):
    recs, env = baseline
    n = _note(_d(base_decisions, "libtorch-cpp", "fp16"), "parity_rule")
    assert n.text == ("passed the fp16 pixel rule against eager fp16 on the same inputs (atol 0.02, at most 0.1 % of "
                      "pixels beyond it): alpha max 0, 0 % of pixels beyond atol.")
    assert n.detail == ("Against eager fp32 it moves alpha by up to 0.207, as eager fp16 itself does (0.207): the "
                        "precision's own drift, not the export's.")
    no_tol = {k: v for k, v in env.items() if k != "tolerances"}
    n = _note(_d(decide(recs, no_tol), "onnxruntime-cpu", "fp16"), "parity_rule")
    assert "(tolerance not recorded: no environment.json)" in n.text


# ------------------------------------------------------------------------------------------ outputs
def test_notes_are_serialized_in_order_and_deterministic(baseline, base_decisions):
    recs, env = baseline
    rows = decision_dicts(base_decisions)
    json.dumps(rows)  # JSON-ready
    for d, row in zip(base_decisions, rows):
        if d.recommended is None:
            assert "notes" not in row
            continue
        assert row["notes"] == [n.as_dict() for n in d.notes]
        kinds = [n["kind"] for n in row["notes"]]
        assert kinds == sorted(kinds, key=NOTE_KINDS.index)
    assert decision_dicts(decide(list(reversed(recs)), env)) == rows
