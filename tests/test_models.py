"""A model is a plug-in: a second model family, written outside the core (tests/plugins/toymatte.py, loaded
through $MATRIX_PLUGINS), runs through the unchanged harness: its axis and setting join the config schema,
its cells are expanded, named, exported by every exporter, run on every runtime that can carry its I/O,
judged by the default elementwise judge (which fails wrong graphs), timed and reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "tests.plugins.toymatte"
FAST_LATENCY = {"warmup_min_s": 0.0, "warmup_min_runs": 1, "measure_min_s": 0.0, "measure_min_runs": 3,
                "measure_max_s": 2, "compute": False}


def _toy_config(tmp_path: Path) -> Path:
    """matrix.yaml with BGMv2's axes, settings and rules left out and the toy model's added."""
    raw = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    for axis in ("backbone", "crop_method", "replace_method", "refine_mode", "input_guard", "refine_patch_select"):
        raw["axes"].pop(axis)
    for name in ("backbone_scale", "refine_sample_pixels", "refine_threshold", "refine_kernel_size",
                 "refine_prevent_oversampling", "refine_max_patches", "refine_topk_step"):
        raw["settings"].pop(name)
    raw["axes"].update(model=["toymatte"], toy_width=[4, 8], resolution=[[64, 96]], batch=[1, 2])
    raw["settings"].update(export_resolution=[32, 48], latency=FAST_LATENCY, toy_gain=2.0)
    raw["rules"] = []
    raw["profiles"] = {"toy": {"axes": {
        "exporter": ["eager", "torchscript", "onnx", "onnx-dynamo"], "opset": [17, 18], "batch": [1],
        "runtime": ["eager-cpu", "torchscript-cpu", "onnxruntime-cpu", "openvino-cpu", "libtorch-cpp"],
        "tf32": [False]}}}
    raw["default_profile"] = "toy"
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _run(args, tmp_path: Path, faults: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, MATRIX_PLUGINS=PLUGIN, MATRIX_CACHE_DIR=str(tmp_path / "cache"))
    if faults:
        env["MATRIX_FAULTS"] = faults
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_a_model_from_outside_the_core_runs_through_the_unchanged_matrix(tmp_path):
    config, out = _toy_config(tmp_path), tmp_path / "out"
    # three wrong graphs the elementwise judge must fail: a Conv weight x 1.5, NaN in 3 alpha values, pha and
    # fgr swapped
    bad = {"toymatte-8-onnx-op17-fp32-onnxruntime-cpu-64x96-b1": "perturb",
           "toymatte-4-onnx-sim-op17-fp32-onnxruntime-cpu-64x96-b1": "mutate-nan",
           "toymatte-8-onnx-dynamo-op18-fp16-onnxruntime-cpu-64x96-b1": "mutate-swap"}
    faults = ";".join(f"{cid}@export={kind}" for cid, kind in bad.items())
    proc = _run(["run", "--config", str(config), "--out", str(out), "--no-progress"], tmp_path, faults)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    recs = {r["cell_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    # every exporter x runtime that fits, both widths, both precisions; libtorch-cpp speaks BGMv2's I/O only
    assert len(recs) == 2 * 2 * (1 + 1 + 2 * 2 * 2 + 1 * 2 * 2), sorted(recs)  # eager, torchscript, onnx, dynamo
    assert not [c for c in recs if "libtorch-cpp" in c]
    assert {r["model"] for r in recs.values()} == {"toymatte"} and {r["toy_width"] for r in recs.values()} == {4, 8}
    for cid, rec in recs.items():
        if cid in bad:
            assert rec["status"] == "fail" and rec["stage"] == "parity", (cid, rec.get("reason"))
        else:
            assert rec["status"] == "pass", (cid, rec.get("reason"))
            assert rec["p50_ms"] > 0 and rec["toy_gain"] == 2.0 and "backbone" not in rec
            assert rec["max_abs_pha"] <= (1e-3 if rec["precision"] == "fp32" else 0.02)
    assert "non-finite" in recs["toymatte-4-onnx-sim-op17-fp32-onnxruntime-cpu-64x96-b1"]["reason"]
    assert "ShapeMismatch: pha" in recs["toymatte-8-onnx-dynamo-op18-fp16-onnxruntime-cpu-64x96-b1"]["reason"]
    # one ONNX export serves the plain cell of both runtimes; each width has its own weights and artifacts
    a, b = (recs[f"toymatte-4-onnx-op17-fp32-{rt}-64x96-b1"]["artifact_key"] for rt in ("onnxruntime-cpu", "openvino-cpu"))
    assert a == b != recs["toymatte-8-onnx-op17-fp32-openvino-cpu-64x96-b1"]["artifact_key"]
    assert (out / "weights-toymatte-w4.pth").read_bytes() != (out / "weights-toymatte-w8.pth").read_bytes()
    html = (out / "report.html").read_text()
    assert "toymatte · onnx → onnxruntime-cpu · 64x96 · batch 1" in html and "<th>toy_width</th>" in html
    # the plug-in's own parity metric is in every judged record, its section and finding in the report
    judged = [r for r in recs.values() if r.get("max_abs_pha") is not None]
    assert judged and all("toy_mean_abs_pha" in r for r in judged)
    fp32 = [r for r in judged if r["precision"] == "fp32" and r["status"] == "pass"]  # judged against eager fp32 too
    assert fp32 and all(0 <= r["toy_mean_abs_pha"] <= r["max_abs_pha"] for r in fp32)
    assert recs["toymatte-8-onnx-op17-fp32-onnxruntime-cpu-64x96-b1"]["toy_mean_abs_pha"] > 1e-3  # the perturbed graph
    assert 'id="toymatte-mean-abs"' in html and "TinyMatte: mean |pha - eager|" in html
    ok = sum(r["status"] == "pass" for r in recs.values())
    finding = f"TinyMatte: {ok} of {len(recs)} cells match eager PyTorch"
    assert finding in html and finding in (out / "summary.md").read_text()
    # the core names no model of its own besides BGMv2: the toy model needed no edit in harness/
    core = [p for p in (ROOT / "harness").rglob("*.py") if "toymatte" in p.read_text()]
    assert core == []


def test_a_plugin_module_that_does_not_import_is_a_clear_error(tmp_path):
    env = dict(os.environ, MATRIX_PLUGINS="tests.plugins.no_such_model")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--list"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "$MATRIX_PLUGINS" in proc.stderr and "'tests.plugins.no_such_model'" in proc.stderr


def test_without_the_plugin_its_axis_is_refused_with_the_file_and_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--config", str(_toy_config(tmp_path)), "--list"],
                          cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "MATRIX_PLUGINS"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "axes.toy_width: unknown key" in proc.stderr
