"""The CI gate: JUnit XML, `harness diff` and `run --baseline` on a real smoke run, fooled with injected
regressions (a perturbed ONNX graph in a real re-run; a slower runtime; stale rules) and near-misses that
must pass (an identical re-run; the same latency distribution resampled; a change under the effect size)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from harness.diff import diff_records

ROOT = Path(__file__).resolve().parent.parent
ORT_FULL = "mobilenetv2-full-na-na-onnx-op17-fp32-onnxruntime-cpu-288x512-b1"


def _harness(*args, env=None, timeout=900):
    import os

    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e)


def _records(d: Path):
    return [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The smoke profile (served from the session cache when test_e2e ran it first)."""
    out = tmp_path_factory.mktemp("gate") / "base"
    proc = _harness("run", "--profile", "smoke", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_junit_has_one_testcase_per_cell_mapped_like_pytest(base):
    recs = {r["cell_id"]: r for r in _records(base)}
    suite = ET.parse(base / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(recs) == int(suite.get("tests"))
    by = {c.get("name"): c for c in cases}
    assert set(by) == set(recs)
    for cid, r in recs.items():
        c = by[cid]
        assert c.get("classname") == f"bgmv2.{r['runtime']}.{r['precision']}"
        kids = [k.tag for k in c]
        want = {"pass": [], "xfail": ["skipped"], "skip": ["skipped"], "fail": ["failure"], "xpass": ["failure"]}
        assert kids == want.get(r["status"], ["error"]), (cid, r["status"], kids)
        if r["status"] == "xfail":
            assert c.find("skipped").get("type") == "xfail" and r["reason"][:50] in c.find("skipped").get("message")
    assert int(suite.get("skipped")) == sum(r["status"] in ("skip", "xfail") for r in recs.values()) > 0


def test_identical_rerun_passes_the_gate(base, tmp_path):
    new = tmp_path / "new"
    proc = _harness("run", "--profile", "smoke", "--out", str(new), "--no-progress", "--baseline", str(base))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "## Matrix diff: no regression" in proc.stdout
    res = json.loads((new / "diff.json").read_text())
    assert res["regression"] is False and res["compared_latency"] > 0
    assert all(v == 0 for v in res["counts"].values()), res["counts"]
    assert (new / "diff.html").is_file() and "no regression" in (new / "diff.md").read_text()
    # the report opens with the comparison (written before the report, so the page has it)
    html = (new / "report.html").read_text()
    assert '<section id="changed" class="">' in html and "no regression" in html.split('id="changed"', 1)[1][:600]
    proc = _harness("diff", str(base), str(new), "--out", str(tmp_path / "d"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # --no-baseline (after a --baseline, as `nox -s matrix -- --no-baseline` passes it): no comparison, and
    # the earlier run's diff in OUT no longer describes this one
    proc = _harness("run", "--profile", "smoke", "--out", str(new), "--no-progress", "--baseline", str(base),
                    "--no-baseline")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Matrix diff" not in proc.stdout and not (new / "diff.json").exists()
    assert 'id="changed"' not in (new / "report.html").read_text()


def test_a_perturbed_graph_in_a_real_rerun_fails_the_gate(base, tmp_path):
    """Real: the ONNX full-mode cell re-exported with one refiner Conv weight x1.5 fails parity; the run and
    the diff both exit 1, and --exit-zero keeps the results but exits 0."""
    new = tmp_path / "perturbed"
    proc = _harness("run", "--profile", "smoke", "--filter", "exporter=onnx,refine_mode=full,batch=1", "--out",
                    str(new), "--no-progress", "--baseline", str(base), env={"MATRIX_FAULTS": f"{ORT_FULL}@export=perturb"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    res = json.loads((new / "diff.json").read_text())
    assert res["regression"] is True
    assert [c["cell_id"] for c in res["new_failures"]] == [ORT_FULL]
    assert res["new_failures"][0]["before"] == "pass" and res["new_failures"][0]["after"] == "fail"
    assert res["counts"]["removed"] > 0  # the filter ran fewer cells: reported, not a regression by itself
    assert "### New failures (1)" in (new / "diff.md").read_text()
    suite = ET.parse(new / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) == 1
    assert "Unexpected results (1)" in (new / "summary.md").read_text()
    proc = _harness("diff", str(base), str(new), "--out", str(tmp_path / "d"))
    assert proc.returncode == 1 and "REGRESSION" in proc.stdout
    proc = _harness("report", str(new))
    assert proc.returncode == 1
    kept = tmp_path / "exit-zero"
    proc = _harness("run", "--profile", "smoke", "--filter", "exporter=onnx,refine_mode=full,batch=1", "--out",
                    str(kept), "--no-progress", "--exit-zero", env={"MATRIX_FAULTS": f"{ORT_FULL}@export=perturb"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 unexpected result(s)" in proc.stderr
    assert {r["cell_id"]: r["status"] for r in _records(kept)}[ORT_FULL] == "fail"


def _env(base):
    return json.loads((base / "environment.json").read_text())


def test_latency_judge_flags_a_slower_runtime_and_passes_noise(base):
    recs = _records(base)
    env = _env(base)
    timed = [r for r in recs if r["status"] == "pass" and r.get("latency_samples_ms")]
    ort = [r for r in timed if r["runtime"] == "onnxruntime-cpu"]
    assert ort and len(timed) > len(ort)

    def scaled(factor, which="onnxruntime-cpu", resample=False):
        out = copy.deepcopy(recs)
        rng = np.random.default_rng(7)
        for r in out:
            if r["status"] == "pass" and r.get("latency_samples_ms") and r["runtime"] == which:
                s = np.asarray(r["latency_samples_ms"]) * factor
                if resample:
                    s = rng.choice(s, size=s.size, replace=True)
                r["latency_samples_ms"] = s.tolist()
                r["p50_ms"] = float(np.median(s))
        return out

    # mutant: the runtime got 2x slower on every cell -> a regression on each of its cells whose samples are
    # tight enough to tell (the smoke profile times only ~5 calls: a cell whose calls spread over more than
    # 1.5x between its 10th and 90th percentile may honestly stay "not significant"), and on no other cell
    slow = diff_records(recs, scaled(2.0), env, env)
    flagged = {c.cell_id for c in slow.slower}
    tight = {r["cell_id"] for r in ort
             if np.quantile(r["latency_samples_ms"], 0.9) / np.quantile(r["latency_samples_ms"], 0.1) < 1.5}
    assert slow.regression and tight <= flagged <= {r["cell_id"] for r in ort}, (tight, flagged)
    assert all(c.lo > 1.1 for c in slow.slower) and not slow.new_failures
    assert {c.cell_id for c in diff_records(recs, scaled(4.0), env, env).slower} >= tight | flagged
    # near-miss: 5 % slower is under the 10 % minimum effect, whatever the samples say
    assert not diff_records(recs, scaled(1.05), env, env).regression
    # near-miss: the same samples resampled (what a re-run on an idle machine looks like)
    assert not diff_records(recs, scaled(1.0, resample=True), env, env).slower
    # faster is reported, not a regression
    fast = diff_records(recs, scaled(0.4), env, env)
    assert not fast.regression and len(fast.faster) == len(ort)
    # another machine: latency is not compared, and the result says why
    other = dict(env, cpu="Intel Xeon (other)")
    res = diff_records(recs, scaled(2.0), env, other)
    assert not res.regression and res.compared_latency == 0 and "cpu differs" in res.latency_note
    assert diff_records(recs, scaled(2.0), env, other, latency="always").regression


def test_status_classes_stale_rules_and_lost_configs(base):
    recs = _records(base)
    env = _env(base)
    xf = next(r for r in recs if r["status"] == "xfail")
    ok = next(r for r in recs if r["status"] == "pass")
    new = copy.deepcopy(recs)
    for r in new:
        if r["cell_id"] == xf["cell_id"]:
            r.update(status="xpass", reason=f"passed although rule {xf.get('rule')!r} expects failure")
        if r["cell_id"] == ok["cell_id"]:
            r.update(status="xfail", rule="new-rule", reason="now expected to fail")
    res = diff_records(recs, new, env, env)
    assert [c.cell_id for c in res.new_xpass] == [xf["cell_id"]]
    assert [c.cell_id for c in res.lost] == [ok["cell_id"]]
    assert res.regression
    # a rule conditioned on the machine (OpenVINO fp16 -> bf16 on CPUs without AVX512-FP16) that holds on NEW's
    # machine only is a flip with the reason, not a lost config; on the same machine it is lost
    env_rules = dict(env, rules={"new-rule": {"reason": "x", "evidence": "", "machine": True}})
    other = dict(env_rules, cpu="AMD EPYC (other)")
    res = diff_records(recs, new, env, other)
    assert ok["cell_id"] in [c.cell_id for c in res.flips] and not res.lost
    assert "holds on NEW's machine only" in next(c.detail for c in res.flips if c.cell_id == ok["cell_id"])
    assert [c.cell_id for c in diff_records(recs, new, env, env_rules).lost] == [ok["cell_id"]]
    # and back: the fix is reported as fixed, no regression
    back = diff_records(new, recs, env, env)
    assert [c.cell_id for c in back.fixed] == [ok["cell_id"]] and not back.regression
    assert [c.cell_id for c in back.flips] == [xf["cell_id"]]  # xpass -> xfail: the rule holds again


def test_no_baseline_undoes_an_earlier_baseline_and_nox_matrix_compares_by_default():
    """`nox -s matrix` passes `--baseline reports/baseline` before the user's args; `--no-baseline` after it
    (or another `--baseline DIR`) wins, as README "CI gate" says."""
    import ast

    from harness.__main__ import _parser

    parse = _parser().parse_args
    assert parse(["run", "--baseline", "reports/baseline"]).baseline == "reports/baseline"
    assert parse(["run", "--baseline", "reports/baseline", "--no-baseline"]).baseline is None
    assert parse(["run", "--no-baseline", "--baseline", "x"]).baseline == "x"
    assert parse(["run"]).baseline is None
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "matrix")
    call = next(c for c in ast.walk(fn) if isinstance(c, ast.Call) and getattr(c.func, "attr", "") == "run")
    args = [ast.unparse(a) for a in call.args]
    consts = {n.targets[0].id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Constant) and isinstance(n.targets[0], ast.Name)}
    at = args.index("'--baseline'")
    assert consts.get(args[at + 1], args[at + 1].strip("'")) == "reports/baseline"
    assert args[-1] == "*session.posargs" and at < len(args) - 1  # the user's flags come after: they win
    assert (ROOT / "reports" / "baseline" / "results.jsonl").is_file()


def test_diff_refuses_a_directory_without_results(base, tmp_path):
    proc = _harness("diff", str(tmp_path), str(base))
    assert proc.returncode == 2 and "has no results.jsonl" in proc.stderr
    proc = _harness("run", "--profile", "smoke", "--out", str(tmp_path / "x"), "--baseline", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "--baseline" in proc.stderr
