"""matrix.yaml validation and cell expansion."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError, expand, load_config, matching_rule

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "matrix.yaml"


def test_ci_profile_is_the_gate_subset_of_nightly():
    """ci (the pull-request gate, issue 13's 10-minute budget) is a subset of nightly, cell id for cell id,
    and still covers every crop x replace x mode, both precisions, onnxsim on/off, both CPU ONNX runtimes,
    TorchScript on Python and C++, the dynamo exporter in every refine mode and both patch selectors, RVM;
    what it leaves to nightly is exactly the slow part: AOTInductor, ExecuTorch, opsets 12/13/16/18 of the
    legacy exporter, dynamo fp16 and the other dynamo crop x replace graphs."""
    cfg = load_config(MATRIX)
    ci, nightly = expand(cfg, "ci").cells, expand(cfg, "nightly").cells
    ci_ids, nightly_ids = {c.cell_id for c in ci}, {c.cell_id for c in nightly}
    assert ci_ids < nightly_ids
    bg = [c for c in ci if c.model == "bgmv2"]
    assert {(c.crop_method, c.replace_method, c.refine_mode) for c in bg if c.exporter == "onnx" and c.refine_mode != "full"} \
        == {(c.crop_method, c.replace_method, c.refine_mode) for c in nightly if c.model == "bgmv2" and c.refine_mode != "full"}
    onnx = [c for c in bg if c.exporter == "onnx"]
    assert {c.opset for c in onnx} == {11, 17} and {c.simplify for c in onnx} == {False, True}
    assert {c.precision for c in onnx} == {"fp32", "fp16"}
    assert {c.runtime for c in onnx} == {"onnxruntime-cpu", "openvino-cpu", "onnxruntime-cuda"}
    dyn = [c for c in bg if c.exporter == "onnx-dynamo"]
    assert {c.refine_mode for c in dyn} == {"full", "sampling", "thresholding"}
    assert {c.refine_patch_select for c in dyn} == {"nonzero", "static"} and {c.precision for c in dyn} == {"fp32"}
    assert {c.exporter for c in ci} == {"eager", "torchscript", "onnx", "onnx-dynamo"}
    assert {c.runtime for c in bg if c.exporter == "torchscript"} == {"torchscript-cpu", "libtorch-cpp", "torchscript-cuda"}
    assert {c.cell_id for c in nightly if c.model == "rvm"} <= ci_ids  # RVM: all of it
    left = [c for c in nightly if c.cell_id not in ci_ids]
    assert all(c.exporter in ("aoti", "executorch") or (c.exporter == "onnx" and c.opset in (12, 13, 16, 18))
               or (c.exporter == "onnx-dynamo" and (c.precision == "fp16" or (c.crop_method, c.replace_method)
                                                    != ("gather", "scatter_element"))) for c in left)


def test_nightly_profile_covers_the_required_matrix():
    plan = expand(load_config(MATRIX), "nightly")
    ids = [c.cell_id for c in plan.cells]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", i) for i in ids)
    cells = [c for c in plan.cells if c.model == "bgmv2"]  # RVM's section: test_ci_profile_rvm_section
    onnx = [c for c in cells if c.exporter == "onnx"]
    assert {c.opset for c in onnx} == {11, 12, 13, 16, 17, 18}
    dynamo = [c for c in cells if c.exporter == "onnx-dynamo"]
    assert {c.opset for c in dynamo} == {18}  # the dynamo exporter's native opsets only
    assert {c.precision for c in cells} == {"fp32", "fp16"}
    assert {c.simplify for c in onnx} == {False, True}
    assert {c.runtime for c in onnx} == {"onnxruntime-cpu", "openvino-cpu", "onnxruntime-cuda"}
    patch = {(c.crop_method, c.replace_method, c.refine_mode) for c in cells if c.refine_mode != "full"}
    assert len(patch) == 3 * 2 * 2
    ts = [c for c in cells if c.exporter == "torchscript"]
    assert all(c.opset is None and not c.simplify and c.runtime in ("torchscript-cpu", "libtorch-cpp", "torchscript-cuda") for c in ts)
    assert {c.runtime for c in ts} == {"torchscript-cpu", "libtorch-cpp", "torchscript-cuda"}
    eager = [c for c in cells if c.exporter == "eager"]
    assert {c.runtime for c in eager} == {"eager-cuda"}
    aoti = [c for c in cells if c.exporter == "aoti"]
    assert {c.runtime for c in aoti} == {"aoti-cpu"} and all(c.opset is None and not c.simplify for c in aoti)
    # 13 model configs x 2 precisions x (TS on 3 runtimes + eager-cuda + aoti-cpu + legacy ONNX at 6 opsets
    # and dynamo at 1, each plain/onnxsim on 3 runtimes)
    plain = [c for c in cells if not c.input_guard and c.refine_patch_select == "nonzero" and c.exporter != "executorch"]
    assert len(plain) == 13 * 2 * (3 + 1 + 1 + (6 + 1) * 2 * 3)
    # profiles.nightly.include: the input_guard export option on 3 fp32 gather configs (sampling x 2 replace + full):
    # legacy ONNX opset 17 plain/onnxsim on 3 runtimes, TorchScript on 3, each next to its unguarded twin
    guard = [c for c in cells if c.input_guard]
    assert len(guard) == 3 * (2 * 3 + 3)
    ids = {c.cell_id for c in plain}
    assert all(c.cell_id.endswith("-guard") and c.cell_id[: -len("-guard")] in ids for c in guard)
    # and the static patch selector: 12 sampling/thresholding configs on TorchScript (3 runtimes), legacy
    # ONNX opset 17 and dynamo ONNX opset 18 (3 runtimes each, no onnxsim), AOTInductor for 2 of them
    static = [c for c in cells if c.refine_patch_select == "static" and c.exporter != "executorch"]
    assert len(static) == 12 * (3 + 3 + 3) + 2
    assert all(c.cell_id.endswith("-static") and c.cell_id[: -len("-static")] in ids for c in static)
    assert {c.exporter for c in static} == {"torchscript", "onnx", "onnx-dynamo", "aoti"}
    assert not any(c.refine_mode == "full" for c in static)
    # ExecuTorch (a plug-in): gather/scatter_nd fp32 in every mode with both selectors, full mode fp16
    et = sorted(c.cell_id.removeprefix("mobilenetv2-") for c in cells if c.exporter == "executorch")
    assert et == sorted(["full-na-na-executorch-fp16-executorch-cpu-288x512-b1",
                         "full-na-na-executorch-fp32-executorch-cpu-288x512-b1"]
                        + [f"{m}-gather-scatter_nd-executorch-fp32-executorch-cpu-288x512-b1{s}"
                           for m in ("sampling", "thresholding") for s in ("", "-static")])


def test_filter_and_rules():
    cfg = load_config(MATRIX)
    plan = expand(cfg, "ci", "exporter=onnx,precision=fp32,crop_method=unfold")
    assert plan.cells and all(c.crop_method == "unfold" and c.exporter == "onnx" for c in plan.cells)
    assert all(matching_rule(c, plan.rules).id == "unfold-legacy-onnx" for c in plan.cells)
    ts = expand(cfg, "ci", "exporter=torchscript,crop_method=unfold").cells
    assert all(matching_rule(c, plan.rules) is None for c in ts)
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        expand(cfg, "ci", "colour=red")
    with pytest.raises(ConfigError, match="selects no cells"):
        expand(cfg, "ci", "opset=99")
    with pytest.raises(ConfigError, match="not defined"):
        expand(cfg, "weekly")


def _mutate(tmp_path, fn):
    raw = yaml.safe_load(MATRIX.read_text())
    fn(raw)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "mutation,expected",
    [
        (lambda r: r["axes"].update(crop_methd=["unfold"]), r"axes\.crop_methd: unknown key"),
        (lambda r: r["axes"].update(crop_method=["unfold", "slice"]), r"axes\.crop_method\.1: .*'slice'.*'unfold', 'roi_align' or 'gather'"),
        (lambda r: r["axes"].update(precision=[]), r"axes\.precision: .*at least one value"),
        (lambda r: r["axes"].update(opset="17"), r"axes\.opset: .*valid list"),
        (lambda r: r["axes"].update(opset=[9]), r"unsupported opset 9"),
        (lambda r: r["settings"].update(backbone_scale=0.75), r"settings\.backbone_scale: .*0\.5.*0\.75"),
        (lambda r: r["profiles"]["ci"]["axes"].update(opset=[19]), r"profiles\.ci\.axes\.opset: value 19 is not in axes\.opset"),
        (lambda r: r["rules"][0]["when"].update(crop_method="unfould"), r"never occurs"),
        (lambda r: r["rules"][0]["when"].update(colour="red"), r"unknown key 'colour'"),
        (lambda r: r["axes"].update(runtime=["tensorrt"]), r"unknown runtime 'tensorrt'"),
        (lambda r: r["rules"][0]["when"].update(exporter="torchscript", opset=17), r"matches no cell of the axes"),
        (lambda r: r["profiles"]["smoke"].update(settings={"refine_sample_pixels": 200_000}),
         r"profiles\.smoke: refine_sample_pixels=200000 exceeds export_resolution \[256, 448\]"),
        (lambda r: r["limits"]["stage_timeout_s"].update(exprot=5), r"unknown stage 'exprot'"),
    ],
)
def test_bad_config_is_reported_precisely(tmp_path, mutation, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(_mutate(tmp_path, mutation))


def test_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "m.yaml"
    text = MATRIX.read_text().replace("crop_method: [unfold, roi_align, gather]", "crop_method: [unfold, slice, gather]", 1)
    path.write_text(text)
    line = next(n for n, ln in enumerate(text.splitlines(), 1) if "slice" in ln)
    with pytest.raises(ConfigError, match=rf"m\.yaml:{line}: axes\.crop_method\.1: .*'slice'"):
        load_config(path)


def test_cli_exits_2_on_bad_config_without_running(tmp_path):
    path = _mutate(tmp_path, lambda r: r["axes"].update(precision=["fp8"]))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--config", str(path), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "fp8" in proc.stderr and "precision" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_optional_tools_become_skip_reasons(monkeypatch):
    """An exporter plug-in names the missing package (its cells are `skip` with that reason), and a
    simplify cell also needs onnxsim while the plain export does not."""
    from harness.exporters import EXPORTERS, _onnx

    cells = expand(load_config(MATRIX), "smoke").cells
    sim = next(c for c in cells if c.simplify)
    ts = next(c for c in cells if c.exporter == "torchscript")
    have = {"onnx": "1", "onnxsim": None, "onnxscript": None}
    monkeypatch.setattr(_onnx, "module_version", lambda name: have.get(name))
    assert "onnxsim is not installed" in EXPORTERS[sim.exporter].unavailable(True)
    assert EXPORTERS[sim.exporter].unavailable(False) is None
    assert "onnxscript is not installed" in EXPORTERS["onnx-dynamo"].unavailable(False)
    assert EXPORTERS[ts.exporter].unavailable(ts.simplify) is None
    have["onnx"] = None
    assert "onnx is not installed" in EXPORTERS[sim.exporter].unavailable(True)


def test_a_cell_matching_several_rules_gets_the_one_that_predicts_its_failure():
    """fp16 dynamo exports run on OpenVINO match both the OpenVINO-fp16 parity rule and the torch.export
    rule; their export failure must be judged by the export rule (xfail), not left an error."""
    from harness.config import matching_rules
    from harness.rules import apply_rule, pick_rule

    cfg = load_config(MATRIX)
    plan = expand(cfg, "nightly", "exporter=onnx-dynamo,precision=fp16,runtime=openvino-cpu,refine_mode=sampling")
    cell = plan.cells[0]
    rules = matching_rules(cell, plan.rules)
    assert [r.id for r in rules] == ["openvino-cpu-fp16-runs-bf16", "torch-export-data-dependent-patches"]
    export_error = {"status": "error", "stage": "export", "reason": "GuardOnDataDependentSymNode"}
    assert apply_rule(export_error, pick_rule(export_error, rules))["status"] == "xfail"
    bf16 = '{"inference_precision": "bfloat16"}'
    parity_fail = {"status": "fail", "stage": "parity", "reason": "pha: drift from fp32 at the 50.0% quantile is 0.0738",
                   "runtime_info": bf16}
    judged = apply_rule(parity_fail, pick_rule(parity_fail, rules))
    assert judged["status"] == "xfail" and judged["rule"] == "openvino-cpu-fp16-runs-bf16"
    passed = {"status": "pass", "stage": "done", "reason": "", "runtime_info": bf16}
    assert apply_rule(passed, pick_rule(passed, rules))["status"] == "xpass"


def test_rules_predict_only_the_failure_they_name():
    """`match:` on the reason, `runtime_info:` on what the runtime did, `env:` on the machine. The same
    commit on a CPU whose OpenVINO plugin really runs fp16 (Intel AVX512-FP16/AMX) gives `pass`, not
    `xpass`; a different failure of a matching cell stays a failure."""
    from harness.config import Rule, matching_rules
    from harness.rules import apply_rule, pick_rule

    cfg = load_config(MATRIX)
    plan = expand(cfg, "ci", "exporter=onnx,precision=fp16,runtime=openvino-cpu,refine_mode=full,opset=17")
    rules = matching_rules(plan.cells[0], plan.rules)
    for precision, expected in (("bf16", "xpass"), ("f16", "pass")):
        rec = {"status": "pass", "stage": "done", "reason": "", "runtime_info": f'{{"inference_precision": "{precision}"}}'}
        assert apply_rule(rec, pick_rule(rec, rules))["status"] == expected
    crash_like = {"status": "error", "stage": "load", "reason": "RuntimeError: Exception from src/inference",
                  "runtime_info": '{"inference_precision": "bfloat16"}'}
    assert apply_rule(crash_like, pick_rule(crash_like, rules))["status"] == "error"
    unfold = expand(cfg, "ci", "crop_method=unfold,exporter=onnx,precision=fp32,runtime=onnxruntime-cpu").cells[0]
    urules = matching_rules(unfold, plan.rules)
    other = {"status": "error", "stage": "export", "reason": "RuntimeError: out of memory"}
    judged = apply_rule(other, pick_rule(other, urules))
    assert judged["status"] == "error" and "expected a failure matching" in judged["reason"]
    named = {"status": "error", "stage": "export",
             "reason": "SymbolicValueError: Unsupported: ONNX export of operator Unfold, input size not accessible."}
    assert apply_rule(named, pick_rule(named, urules))["status"] == "xfail"
    env_rule = Rule(id="needs-amx", when={"runtime": "openvino-cpu"}, env={"cpu_flags": ["amx_fp16_never"]},
                    reason="r", evidence="e")
    assert pick_rule({"status": "fail", "stage": "parity", "reason": ""}, [env_rule]) is None
    pkg_rule = Rule(id="old-ov", when={"runtime": "openvino-cpu"}, env={"packages": {"openvino": "<1.0"}},
                    reason="r", evidence="e")
    assert pick_rule({"status": "fail", "stage": "parity", "reason": ""}, [pkg_rule]) is None
    with pytest.raises(Exception, match="not a valid regular expression"):
        Rule(id="x", when={}, match="(", reason="r", evidence="e")
    with pytest.raises(Exception, match="not a version specifier"):
        Rule(id="x", when={}, env={"packages": {"openvino": "new"}}, reason="r", evidence="e")


def test_profile_include_values_must_be_in_the_universe(tmp_path):
    """An `include` entry is checked like the profile's own axes (it used to add cells outside `axes`)."""
    import yaml

    raw = yaml.safe_load(MATRIX.read_text())
    raw["profiles"]["smoke"]["include"] = [{"crop_method": ["bogus"]}]
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"profiles\.smoke\.include\[0\]\.crop_method: value 'bogus' is not in axes"):
        load_config(path)


def test_ci_profile_rvm_section():
    """RVM in ci (profiles.ci.include): mobilenetv3 at 288x512; the TensorRT question (runtime vs baked ratio x
    unique vs shared dim names x opsets 12/17 x onnxsim) on onnxruntime and OpenVINO; FGF, fp16, TorchScript,
    eager, dynamo; portrait, odd size and batch 2. No RVM cell for AOTInductor or ExecuTorch."""
    cells = [c for c in expand(load_config(MATRIX), "ci").cells if c.model == "rvm"]
    assert len(cells) == 52
    assert {c.runtime for c in cells if c.exporter == "torchscript"} == {"torchscript-cpu", "libtorch-cpp"}
    assert {c.rvm_variant for c in cells} == {"mobilenetv3"} and {c.rvm_refiner for c in cells} == {"dgf", "fgf"}
    onnx = [c for c in cells if c.exporter == "onnx"]
    assert {(c.ratio_mode, c.dim_names) for c in onnx} == {("input", "unique"), ("input", "shared"),
                                                           ("baked", "unique"), ("baked", "shared")}
    assert {c.opset for c in onnx} == {12, 17} and {c.simplify for c in onnx} == {False, True}
    assert {c.runtime for c in onnx} == {"onnxruntime-cpu", "openvino-cpu", "openvino-cpu-static"}
    assert {c.exporter for c in cells} == {"eager", "torchscript", "onnx", "onnx-dynamo"}
    assert {c.precision for c in cells} == {"fp32", "fp16"}
    assert {tuple(c.resolution) for c in cells} == {(288, 512), (512, 288), (721, 1283)}
    assert {c.batch for c in cells} == {1, 2} and {c.downsample_ratio for c in cells} == {0.25, 0.375, 0.5}
    # the non-ONNX exporters have no dim names and take the ratio as an input: not in their ids
    ts = [c for c in cells if c.exporter == "torchscript"]
    assert all(c.ratio_mode == "input" and "-input-" not in c.cell_id for c in ts)
    # BGMv2 cells are not made at RVM's odd size
    assert not [c for c in expand(load_config(MATRIX), "ci").cells if c.model == "bgmv2" and c.resolution[0] % 4]


def test_executorch_fp16_rule_holds_only_on_avx512_fp16_cpus():
    """Rule executorch-xnnpack-fp16-native-arith on the real record of the baseline (Intel Xeon with
    avx512_fp16): its raw parity failure is xfail there; the same failure on a CPU without the flag stays
    `fail` (on the AMD EPYC the cell passes, so a failure there is news); a pass on an AVX512-FP16 CPU is
    xpass; another failure of the cell (an export error) is not what the rule names. The rule is machine-
    conditioned, so `harness diff` treats its flips between CPUs as explained; rules without env or
    runtime_info conditions are not."""
    import json

    from harness.config import matching_rules
    from harness.rules import apply_rule, pick_rule

    cfg = load_config(MATRIX)
    cell = expand(cfg, "nightly", "exporter=executorch,precision=fp16").cells[0]
    rules = matching_rules(cell, cfg.rules)
    assert [r.id for r in rules] == ["executorch-xnnpack-fp16-native-arith"]
    rec = next(json.loads(line) for line in (ROOT / "reports" / "nightly-baseline" / "results.jsonl").read_text().splitlines()
               if json.loads(line)["cell_id"] == cell.cell_id)
    raw = {"status": rec["raw_status"], "stage": rec["stage"], "reason": rec["reason"].split(" [expected:")[0]}
    assert raw["status"] == "fail" and "drift from fp32" in raw["reason"]
    intel, amd = {"cpu_flags": {"avx512_fp16", "amx_tile"}}, {"cpu_flags": {"avx2", "f16c"}}
    assert apply_rule(dict(raw), pick_rule(raw, rules, intel))["status"] == "xfail"
    assert apply_rule(dict(raw), pick_rule(raw, rules, amd))["status"] == "fail"
    passed = {"status": "pass", "stage": "done", "reason": ""}
    assert apply_rule(dict(passed), pick_rule(passed, rules, intel))["status"] == "xpass"
    assert apply_rule(dict(passed), pick_rule(passed, rules, amd))["status"] == "pass"
    other = {"status": "error", "stage": "export", "reason": "RuntimeError: lowering failed"}
    assert apply_rule(dict(other), pick_rule(other, rules, intel))["status"] == "error"
    by_id = {r.id: r for r in cfg.rules}
    assert by_id["executorch-xnnpack-fp16-native-arith"].machine_conditioned
    assert by_id["openvino-cpu-fp16-runs-bf16"].machine_conditioned
    assert not by_id["unfold-legacy-onnx"].machine_conditioned
