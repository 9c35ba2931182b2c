"""End to end: the smoke matrix over real exports and runtimes, the report, and the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_COLUMNS = (
    "cell_id, backbone, backbone_scale, refine_sample_pixels, refine_threshold, crop_method, replace_method, "
    "refine_mode, opset, precision, exporter, simplify, runtime, status, stage, reason, max_abs_pha, "
    "max_abs_fgr, ref_iou, p50_ms"
).split(", ")


def _harness(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    proc = _harness("run", "--profile", "smoke", "--out", str(out), "--no-progress")
    return out, proc


def test_smoke_matrix_runs_and_reports(smoke):
    out, proc = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("results.jsonl", "results.csv", "report.html", "summary.md", "environment.json", "weights.pth"):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "results.csv")
    assert set(REQUIRED_COLUMNS) <= set(df.columns)
    assert len(df) == 19  # 18 + one input_guard graph
    unfold_onnx = df[(df.crop_method == "unfold") & (df.exporter == "onnx")]
    assert len(unfold_onnx) == 4 and set(unfold_onnx.status) == {"xfail"}
    assert set(unfold_onnx.stage) == {"export"}
    rest = df.drop(unfold_onnx.index)
    assert set(rest.status) == {"pass"}, rest[["cell_id", "status", "reason"]].to_string()
    assert (rest.max_abs_pha < 1e-3).all() and (rest.ref_iou >= 0.99).all() and (rest.p50_ms > 0).all()
    # the latency columns are filled for every passing cell
    for col in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "cv", "fps", "cold_ms",
                "compute_p50_ms", "load_s", "export_s"):
        assert rest[col].notna().all(), col
    assert (rest.p50_ms <= rest.p90_ms).all() and (rest.p90_ms <= rest.p99_ms).all()
    # at least measure_min_runs calls, unless a call took so long that measure_max_s came first: then the
    # record says so (a slow, contended machine is reported, not hidden)
    few = rest[rest.latency_runs < 5]
    assert few.latency_warning.str.contains("few runs").all(), few[["cell_id", "latency_runs", "latency_warning"]]
    assert (rest.latency_runs >= 1).all() and set(rest.latency_clock) == {"perf_counter"}
    html = (out / "report.html").read_text()
    # latency distribution + speed-vs-parity plots, one of each per model, resolution and batch (never pooled;
    # no Pareto chart for a group of fewer than MIN_SCATTER_CELLS cells)
    from harness.report.figures import MIN_SCATTER_CELLS, figure_groups

    groups = figure_groups([json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()
                            if json.loads(ln).get("p50_ms") is not None])
    assert [t for t, _ in groups] == ["bgmv2 · mobilenetv2 · 288x512 · batch 1", "bgmv2 · mobilenetv2 · 288x512 · batch 2"]
    assert html.count("data:image/png;base64,") == 2 + sum(len(g) >= MIN_SCATTER_CELLS for _, g in groups)
    assert set(df.batch) == {1, 2}
    # TorchScript reproduces eager exactly; ONNX within fp32 arithmetic noise
    ts = rest[rest.exporter == "torchscript"]
    assert (ts.max_abs_pha <= 1e-6).all()
    # artifacts on disk, per cell
    for _, row in rest.iterrows():
        assert (out / row.artifact).is_file()
    sim = rest[rest.simplify == True]  # noqa: E712
    assert (sim.nodes < sim.nodes_before_sim).all()
    env = json.loads((out / "environment.json").read_text())
    for key in ("python", "torch", "torchvision", "onnx", "onnxruntime", "onnxsim", "cpu", "git_commit", "weights"):
        assert key in env
    assert env["weights"]["source"] == "calibrated"


def test_finalists_are_re_measured_in_interleaved_rounds(smoke):
    """The smoke run's decisions with candidates near each other were timed again in rounds (a fresh process
    after the workers, rotating order): real values for every finalist, an interval from >= 6 rounds, the
    decision built on them, and the run's between-run spread in environment.json."""
    from harness.decide import decide, group_name
    from harness.rounds import read_rounds

    out, proc = smoke
    groups = read_rounds(out)
    assert groups, proc.stdout
    env = json.loads((out / "environment.json").read_text())
    assert env["latency_rounds"]["groups"] == len(groups) and "*" in env["latency_rounds"]["spread"]
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    for g in groups:
        assert g.stop in ("target", "cap", "max"), g.stop
        assert g.rounds >= 1 and len(g.cells) >= 2 and not g.cached
        assert all(v > 0 for c in g.cells for v in g.round_ms[c])
        assert g.reference in g.cells
        d = next(d for d in decide(recs, env, groups) if group_name(d.model, d.runtime, d.precision, d.shape) == g.group)
        assert d.rounds is g
        finals = [c for c in d.candidates if c.cell_id in g.cells]
        assert {c.cell_id for c in finals} == set(g.cells) and all(c.rounds == g.rounds for c in finals)
        if g.rounds >= 6:  # an interval over rounds, and "slower" only where it clears 1.05
            assert all(g.ratios[c][1] is not None for c in g.cells)
            assert all(c.tie == (c.lo <= 1.05) for c in finals)
        else:  # the cap came first (a slow machine): no interval, so nothing is called slower
            assert g.stop == "cap" and all(c.tie for c in finals)


def test_input_contract_probes_show_which_graphs_fail_silently(smoke):
    """Issue 15: the scatter_element ONNX graphs answer a 290x514 input (eager refuses it) with a wrong
    matte and run 0-255 inputs without a word; TorchScript refuses the size; the input_guard graph
    refuses both, and nothing changes the cells' verdicts."""
    out, _ = smoke
    df = pd.read_csv(out / "results.csv").set_index("cell_id")
    ran = df[df.status == "pass"]
    assert ran.input_contract.notna().all() and (df[df.status == "xfail"].input_contract.isna()).all()
    plain = ran[(ran.exporter == "onnx") & (ran.input_guard == False)]  # noqa: E712
    assert len(plain) == 8
    assert set(plain.probe_size) == {"garbage"} and set(plain.probe_range) == {"garbage"}
    assert set(plain.probe_dtype) == {"refuses"} and set(plain.probe_channels) == {"refuses"}
    guard = ran[ran.input_guard == True]  # noqa: E712
    assert len(guard) == 1
    assert guard.input_contract.iloc[0] == "size refuses · dtype refuses · channels refuses · range refuses"
    ts = ran[ran.exporter == "torchscript"]
    assert set(ts.probe_size) == {"refuses"} and set(ts.probe_range) == {"garbage"}
    recs = {r["cell_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    g = recs[guard.index[0]]["probe_details"]
    assert "input_guard_hw_multiple_of_4" in g["size"] and "input_guard_values_in_0_1" in g["range"]
    p = recs[plain.index[0]]["probe_details"]
    assert "ran without an error" in p["size"] and "% of pixels" in p["size"]
    summary = (out / "summary.md").read_text()
    assert "Input contract, size: 8 of 15 probed cells return wrong alpha for H, W not multiples of 4 " \
           "without an error — onnx: input_guard=False (8 of 9)" in summary, summary
    assert "input_guard export option on 1 cells vs the same cells without it: range garbage → refuses (1), " \
           "size garbage → refuses (1)" in summary
    html = (out / "report.html").read_text()
    assert '<h2 id="contract">Input contract' in html


def test_report_rebuilds_from_jsonl_and_survives_a_torn_line(smoke, tmp_path):
    out, _ = smoke
    copy = tmp_path / "copy"
    copy.mkdir()
    lines = (out / "results.jsonl").read_text().splitlines()
    (copy / "results.jsonl").write_text("\n".join(lines) + "\n" + lines[-1][: len(lines[-1]) // 2])
    (copy / "environment.json").write_text((out / "environment.json").read_text())
    proc = _harness("report", str(copy))
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(copy / "results.csv")) == len(lines)
    assert "xfail" in (copy / "report.html").read_text()


def test_html_escapes_reasons(smoke, tmp_path):
    out, _ = smoke
    copy = tmp_path / "esc"
    copy.mkdir()
    recs = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    recs[0]["status"] = "error"
    recs[0]["reason"] = 'RuntimeError: <script>alert("x")</script> & <b>'
    (copy / "results.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    proc = _harness("report", str(copy))
    assert proc.returncode == 1  # an error cell is unexpected
    html = (copy / "report.html").read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(" in html


def test_user_images_with_padding(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src.png"
    bgr = tmp_path / "bgr.png"
    base = (rng.random((290, 514, 3)) * 255).astype(np.uint8)
    Image.fromarray(base).save(bgr)
    fg = base.copy()
    fg[80:200, 150:350] = 255 - fg[80:200, 150:350]
    Image.fromarray(fg).save(src)
    out = tmp_path / "out"
    args = ["run", "--profile", "smoke", "--filter", "crop_method=roi_align,batch=1,simplify=False",
            "--src", str(src), "--bgr", str(bgr), "--out", str(out), "--no-progress"]
    proc = _harness(*args)
    assert proc.returncode == 2 and "--pad" in proc.stderr
    assert not out.exists()  # bad input: nothing half-written
    tiny = tmp_path / "tiny.png"
    Image.fromarray(base[:64, :64]).save(tiny)
    proc = _harness(*args[:5], "--src", str(tiny), "--bgr", str(tiny), "--out", str(out), "--no-progress")
    assert proc.returncode == 2 and "fewer than refine_sample_pixels=32000" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    proc = _harness(*args, "--pad")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = pd.read_csv(out / "results.csv")
    # records state the real size and the padding; pha/fgr are judged cropped back to 290x514
    assert set(df.resolution) == {"290x514"} and set(df.padded_to) == {"292x516"} and set(df.status) == {"pass"}
    assert set(df.input_size.dropna()) == {"290x514"}
    assert all(cid.endswith(("-290x514-b1", "-290x514-b1-guard")) for cid in df.cell_id), list(df.cell_id)


def test_bad_checkpoint_and_output_dir_exit_2(tmp_path):
    import torch

    good = tmp_path / "good.pth"
    torch.save({"backbone.features.0.0.weight": torch.zeros(32, 6, 3, 3)}, good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:200])
    proc = _harness("run", "--profile", "smoke", "--checkpoint", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "cannot read checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    proc = _harness("run", "--profile", "smoke", "--checkpoint", str(good), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "missing 381 keys" in proc.stderr and "Traceback" not in proc.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _harness("run", "--profile", "smoke", "--out", str(blocker / "sub"))
    assert proc.returncode == 2 and "not writable" in proc.stderr


def test_warm_rerun_comes_from_the_cache(smoke, tmp_path):
    out, _ = smoke
    again = tmp_path / "again"
    proc = _harness("run", "--profile", "smoke", "--out", str(again), "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(19 from the result cache)" in proc.stdout
    first = pd.read_csv(out / "results.csv").set_index("cell_id")
    second = pd.read_csv(again / "results.csv").set_index("cell_id")
    assert (second.cache == "result").all()
    assert first.status.sort_index().equals(second.status.sort_index())
    for _, row in second[second.status == "pass"].iterrows():
        assert (again / row.artifact).is_file()  # artifacts linked from the cache
    env = json.loads((again / "environment.json").read_text())
    assert env["cache"]["result_hits"] == 19 and env["cache"]["cells_run"] == 0
    # the rounds of the same cells, settings and machine come from the cache too (no minute of re-timing)
    rounds = env["latency_rounds"]
    assert rounds["groups"] >= 1 and rounds["cached"] == rounds["groups"] and rounds["seconds"] == 0


def test_cuda_runtimes_skip_with_reason_on_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "cuda"
    proc = _harness("run", "--profile", "bench", "--filter", "runtime=eager-cuda|torchscript-cuda|onnxruntime-cuda",
                    "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 6 and set(df.status) == {"skip"}
    assert df.reason.str.contains("CUDA is not available|has no CUDAExecutionProvider").all()
    from harness.system import gpu_device_nodes

    if not gpu_device_nodes():  # the coordinator records these skips itself: no worker, not even started early
        assert not (out / "logs").exists(), sorted(p.name for p in (out / "logs").iterdir())


def test_pytest_benchmark_json_feeds_the_report(smoke, tmp_path):
    out, _ = smoke
    bench_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "benchmarks" / "test_latency.py"),
         "-k", "full and onnxruntime-cpu", "--benchmark-json", str(bench_json)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(bench_json.read_text())
    assert data["machine_info"]["cpu"] and len(data["benchmarks"]) == 1
    bench = data["benchmarks"][0]
    assert bench["extra_info"]["cell_id"].startswith("mobilenetv2-full") and bench["stats"]["rounds"] == 20
    assert bench["extra_info"]["max_abs_pha_vs_eager"] < 1e-3
    copy = tmp_path / "rep"
    copy.mkdir()
    for name in ("results.jsonl", "environment.json"):
        (copy / name).write_text((out / name).read_text())
    proc = _harness("report", str(copy), "--benchmark-json", str(bench_json))
    assert proc.returncode == 0, proc.stderr
    assert "pytest-benchmark" in (copy / "report.html").read_text()
    assert len(pd.read_csv(copy / "benchmark.csv")) == 1
    proc = _harness("report", str(copy), "--benchmark-json", str(copy / "results.jsonl"))
    assert proc.returncode == 2 and "not a pytest-benchmark JSON file" in proc.stderr


def test_new_exporters_on_cpu_aoti_and_dynamo(tmp_path):
    """AOTInductor and the dynamo ONNX exporter: full refinement compiles/exports and matches eager on
    onnxruntime, OpenVINO and the AOTI runtime; the data-dependent sampling path fails at export with its
    cause named (rule torch-export-data-dependent-patches)."""
    import shutil

    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler for AOTInductor")
    out = tmp_path / "new"
    proc = _harness("run", "--profile", "nightly", "--filter",
                    "exporter=aoti|onnx-dynamo,precision=fp32,simplify=False,crop_method=roi_align|n/a,"
                    "replace_method=scatter_nd|n/a,refine_mode=full|sampling,runtime=aoti-cpu|onnxruntime-cpu|openvino-cpu",
                    "--out", str(out), "--no-progress", timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = pd.read_csv(out / "results.csv").set_index("cell_id")
    full = df[df.refine_mode == "full"]
    assert len(full) == 3 and set(full.status) == {"pass"}, full[["status", "reason"]].to_string()
    assert (full.max_abs_pha < 1e-3).all() and full.p50_ms.notna().all()
    aoti = full[full.exporter == "aoti"].iloc[0]
    assert aoti.compile_s > 0 and aoti.exporter_name == "aoti"
    dyn = full[full.exporter == "onnx-dynamo"]
    assert set(dyn.ready_tensorrt) == {True}  # unique dynamic dim names, unlike the legacy full graph
    sampling = df[(df.refine_mode == "sampling") & (df.refine_patch_select == "nonzero")]
    assert len(sampling) == 3 and set(sampling.status) == {"xfail"} and set(sampling.stage) == {"export"}
    assert sampling.reason.str.contains("Could not guard on data-dependent expression").all()
    assert sampling.reason.str.contains("patch count comes from nonzero").all()
    # the static patch selector (issue 14) exports through torch.export and equals the official model
    static = df[df.refine_patch_select == "static"]
    assert len(static) == 2 and set(static.exporter) == {"onnx-dynamo"}
    assert set(static.status) == {"pass"}, static[["status", "reason"]].to_string()
    assert (static.ref_nontie_disagreements == 0).all() and (static.judged_max_abs_pha < 1e-3).all()
    assert set(static.ready_tensorrt) == {True} and not static.data_dependent_ops.str.contains("NonZero").any()
    summary = (out / "summary.md").read_text()
    assert "Static patch selection, sampling/thresholding cells passing (nonzero → static" in summary
    assert "onnx-dynamo 0/2 → 2/2" in summary
