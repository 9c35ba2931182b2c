"""The libtorch-cpp runtime: a real CMake build of harness/cpp against the installed torch wheel, real
TorchScript artifacts, the shipped images, parity with eager PyTorch and latency timed in the binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness import cpp_runner, inputs
from harness.benchmark import Protocol
from harness.cache import Cache
from harness.exporters import export_model
from harness.runtimes import RUNTIMES
from model.bgmv2 import MattingRefine

ROOT = Path(__file__).resolve().parent.parent
needs_toolchain = pytest.mark.skipif(cpp_runner.unavailable() is not None,
                                     reason=f"libtorch-cpp cannot be built here: {cpp_runner.unavailable()}")


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """The runner, built (or fetched) through the test session's cache."""
    path, facts = cpp_runner.ensure_binary(Cache(), tmp_path_factory.mktemp("cpp"))
    return path, facts


def _scripted(weights, tmp_path, crop="gather", mode="sampling"):
    m = MattingRefine("mobilenetv2", refine_patch_crop_method=crop, refine_mode=mode, refine_sample_pixels=8000)
    m.load_state_dict(weights)
    path = tmp_path / f"{crop}.pt"
    export_model("torchscript", m.eval(), path, ())
    return path, m.eval()


def test_unavailable_without_a_compiler_or_cmake(monkeypatch, tmp_path):
    """No toolchain on PATH: the runtime reports why (cells become `skip`), it never errors."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    why = RUNTIMES["libtorch-cpp"].unavailable()
    assert why is not None and "no C++ compiler on PATH" in why
    fake = tmp_path / "c++"
    fake.write_text("#!/bin/sh\necho fake\n")
    fake.chmod(0o755)
    why = RUNTIMES["libtorch-cpp"].unavailable()
    assert why is not None and "cmake is not on PATH" in why


@needs_toolchain
def test_runner_matches_eager_and_sets_hoisted_attributes(binary, weights, tmp_path):
    """One artifact, two refine modes set with setattr: each equals eager PyTorch in that mode."""
    path, model = _scripted(weights, tmp_path)
    _, src, bgr = inputs.batch_of((288, 512), 1)
    refined = {}
    for mode in ("sampling", "thresholding"):
        attrs = {"refine_mode": mode, "refine_sample_pixels": 8000, "refine_threshold": 0.1,
                 "backbone_scale": 0.25, "refine_prevent_oversampling": True}
        proc = cpp_runner.RunnerProcess(binary[0], str(path), attrs, threads=torch.get_num_threads())
        try:
            assert proc.ready["attrs"]["refine_mode"] == mode and proc.ready["attrs"]["refine_sample_pixels"] == "8000"
            outs, ms = proc.run(src.numpy(), bgr.numpy())
            assert ms > 0 and len(outs) == 6
            model.refiner.mode = mode
            with torch.inference_mode():
                ref = model(src, bgr)
            for o, r in zip(outs, ref):
                assert o.shape == tuple(r.shape) and o.dtype == np.float32
                assert float(np.abs(o - r.numpy()).max()) <= 1e-5
            refined[mode] = int(outs[5].sum())  # refined quarter-resolution cells
            r = proc.bench(src.numpy(), bgr.numpy(), "compute", Protocol(0.0, 2, 0.0, 5, 10.0))
            assert r["clock"] == "steady_clock" and len(r["samples_ms"]) >= 5 and r["warmup_runs"] >= 2
            assert all(t > 0 for t in r["samples_ms"])
        finally:
            proc.close()
        assert proc.proc.poll() is not None and not proc.workdir.exists()
    assert refined["sampling"] != refined["thresholding"]  # the setattr really changed the refiner


@needs_toolchain
def test_runner_errors_are_clear(binary, weights, tmp_path):
    path, _ = _scripted(weights, tmp_path)
    with pytest.raises(cpp_runner.RunnerError, match=r"cannot set refine_sample_pixels \(int\) from 'many'"):
        cpp_runner.RunnerProcess(binary[0], str(path), {"refine_sample_pixels": "many"})
    with pytest.raises(cpp_runner.RunnerError, match="has no attribute 'refine_patches'"):
        cpp_runner.RunnerProcess(binary[0], str(path), {"refine_patches": 3})
    with pytest.raises(cpp_runner.RunnerError, match="could not load the model"):
        cpp_runner.RunnerProcess(binary[0], str(tmp_path / "missing.pt"), {})
    proc = cpp_runner.RunnerProcess(binary[0], str(path), {})
    try:
        with pytest.raises(cpp_runner.RunnerError, match="expected run, bench, threads or quit"):
            proc.request("infer")
        with pytest.raises(cpp_runner.RunnerError, match="is not an .npy file"):
            proc.request("run", str(path), str(path), str(tmp_path))
        proc.proc.kill()  # a runner that dies is reported with its exit status, not a hang
        with pytest.raises((cpp_runner.RunnerError, BrokenPipeError), match="exited with code -9|Broken pipe"):
            proc.run(np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 3, 8, 8), np.float32))
    finally:
        proc.close()


@needs_toolchain
def test_roi_align_artifact_names_the_missing_torchvision_op(binary, weights, tmp_path):
    path, _ = _scripted(weights, tmp_path, crop="roi_align")
    with pytest.raises(cpp_runner.RunnerError) as e:
        cpp_runner.RunnerProcess(binary[0], str(path), {})
    assert "libtorch has no torchvision::roi_align" in str(e.value)
    assert cpp_runner.TORCHVISION_OPS_ENV in str(e.value)


@needs_toolchain
def test_build_is_cached_and_keyed_on_the_sources(binary, tmp_path):
    path, facts = binary
    assert path.is_file() and os.access(path, os.X_OK)
    version = json.loads(subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout)
    assert version["torch"] == torch.__version__.split("+")[0]
    cache = Cache()
    key, parts = cpp_runner.build_key()
    assert cache.get("tool", key) is not None  # stored for every later worker and run
    assert parts["torch"] == torch.__version__ and "matting_runner" in str(path)
    again, facts2 = cpp_runner.ensure_binary(cache, tmp_path)
    assert again == path and facts2["cpp_build_cached"] is True


@needs_toolchain
def test_matrix_cells_on_libtorch_cpp(tmp_path):
    """The harness runs TorchScript artifacts on libtorch-cpp: parity with eager, latency timed inside
    the binary, roi_align artifacts xfail at load (rule libtorch-cpp-roi-align-needs-torchvision-cpp)."""
    out = tmp_path / "cpp"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--profile", "ci", "--filter",
         "runtime=libtorch-cpp,precision=fp32,crop_method=gather|roi_align|n/a,replace_method=scatter_nd|n/a,"
         "refine_mode=sampling|thresholding|full,input_guard=false,refine_patch_select=nonzero", "--out", str(out),
         "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    df = pd.read_csv(out / "results.csv").set_index("cell_id")
    assert len(df) == 5 and set(df.runtime) == {"libtorch-cpp"}
    ok = df[df.crop_method != "roi_align"]
    assert set(ok.status) == {"pass"}, ok[["status", "reason"]].to_string()
    assert (ok.max_abs_pha <= 1e-5).all() and (ok.ref_iou >= 0.99).all()
    assert set(ok.latency_clock) == {"steady_clock (in libtorch-cpp)"}
    assert (ok.p50_ms > 0).all() and ok.cpp_build_s.notna().all()
    # the ci protocol's minimum of 6 timed calls (the C++ runner times a fixed count, no adaptive stop), or
    # fewer with the "few runs" flag when a loaded machine hit measure_max_s
    assert ((ok.latency_runs >= 6) | ok.latency_warning.fillna("").str.contains("few runs")).all()
    # timed with the latency stage's thread count (the runner's own report), the one the device label names
    assert (ok.latency_threads == ok.device.str.extract(r"\((\d+) threads\)")[0].astype(int)).all()
    # one TorchScript file serves both patch modes: only the setattr differs
    patch = ok[ok.refine_mode != "full"]
    assert patch.artifact_key.nunique() == 1 and patch.ref_cells.nunique() == 2
    roi = df[df.crop_method == "roi_align"]
    assert len(roi) == 2 and set(roi.status) == {"xfail"} and set(roi.stage) == {"load"}
    assert roi.reason.str.contains("libtorch has no torchvision::roi_align").all()
    # the per-target summary answers "does this config work on libtorch-cpp, and how fast"
    summary = (out / "summary.md").read_text()
    row = next(line for line in summary.splitlines()
               if line.startswith("| bgmv2 | libtorch-cpp | torchscript | fp32 |"))
    assert "| 3/5 |" in row and "gather 2/2 · roi_align 0/2" in row
    assert "2 xfail at load (libtorch-cpp-roi-align-needs-torchvision-cpp)" in row
    assert "Per deployment target" in (out / "report.html").read_text()


@needs_toolchain
def test_latency_is_timed_with_the_latency_thread_count_not_the_run_stages(binary, weights, tmp_path):
    """A worker runs its other stages on its share of the cores (1 intra-op thread with --jobs 2 on 2 cores)
    and times latency on all of them: the runner's ``bench`` reply says which ``at::get_num_threads()`` the
    timed calls ran with, and it follows the harness's setting (run 1, latency 2, later 1 again) although
    ``runtime_info`` (taken at the run stage) says 1. A runner whose thread count went stale behind the
    plug-in's back is refused, not timed with the wrong count."""
    path, _ = _scripted(weights, tmp_path)
    _, src, bgr = inputs.batch_of((288, 512), 1)
    feeds = {"src": src, "bgr": bgr}
    attrs = {"refine_mode": "sampling", "refine_sample_pixels": 8000, "refine_threshold": 0.1,
             "backbone_scale": 0.25, "refine_prevent_oversampling": True}
    rt = RUNTIMES["libtorch-cpp"]()
    rt.binary = binary[0]
    proto = Protocol(0.0, 1, 0.0, 3, 10.0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the worker's share
        rt.load(str(path), {**attrs, "threads": 2, "input_names": ["src", "bgr"],
                            "output_names": ["pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm"]})
        rt.run(feeds)
        assert rt.info()["threads"] == 1
        torch.set_num_threads(2)  # the latency stage's
        lat = rt.measure_native(feeds, "compute", proto, "cpu", 1)
        assert lat.threads == 2 and lat.runs >= 3 and lat.clock == "steady_clock (in libtorch-cpp)"
        torch.set_num_threads(1)
        assert rt.measure_native(feeds, "compute", proto, "cpu", 1).threads == 1
        rt.proc.request("threads", "2")  # behind the plug-in's back: its cached count (1) is now stale
        with pytest.raises(cpp_runner.RunnerError, match="timed with 2 intra-op threads, the harness asked for 1"):
            rt.measure_native(feeds, "compute", proto, "cpu", 1)
    finally:
        torch.set_num_threads(before)
        rt.close()
