"""The plug-in core (issue 10): exporters and runtimes are registered classes in their own files, the
config's axis values come from the registries, and a plug-in defined outside the core runs real cells."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.cache import Cache
from harness.config import ConfigError, expand, load_config
from harness.exporters import EXPORTERS, Exporter, read_metadata, register_exporter
from harness.runs import RunOptions
from harness.runtimes import RUNTIMES, Runtime, register_runtime
from harness.runtimes.onnxruntime import OnnxRuntimeCPU

ROOT = Path(__file__).resolve().parent.parent
FAST_LATENCY = {"warmup_min_s": 0.0, "warmup_min_runs": 1, "measure_min_s": 0.0, "measure_min_runs": 3,
                "measure_max_s": 2, "compute": False}


def _plan(tmp_path: Path, axes: dict, extra_runtimes: tuple = ()):
    """A plan of one profile ``plug`` restricting matrix.yaml's axes (new runtimes added to the universe)."""
    raw = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    raw["axes"]["runtime"] += list(extra_runtimes)
    base = {"model": ["bgmv2"], "backbone": ["mobilenetv2"], "resolution": [[288, 512]], "batch": [1], "tf32": [False], "opset": [17],
            "input_guard": [False], "refine_patch_select": ["nonzero"], "precision": ["fp32"], "simplify": [False],
            "crop_method": ["gather"], "replace_method": ["scatter_nd"]}
    raw["profiles"] = {"plug": {"axes": {**base, **axes}, "settings": {"latency": FAST_LATENCY}}}
    raw["default_profile"] = "plug"
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(raw))
    return expand(load_config(path), "plug")


def _runner(plan, tmp_path: Path):
    from harness.runner import Runner

    runner = Runner(plan, RunOptions(out_dir=tmp_path / "out"), Cache())
    (tmp_path / "out" / "artifacts").mkdir(parents=True)
    runner.prepare_weights()
    return runner


def test_matrix_yaml_names_only_registered_plugins_and_every_runtime_has_an_exporter():
    raw = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    assert set(raw["axes"]["exporter"]) <= set(EXPORTERS) and set(raw["axes"]["runtime"]) <= set(RUNTIMES)
    produced = {cls.format for cls in EXPORTERS.values()}
    assert all(cls.format in produced for cls in RUNTIMES.values()), {n: c.format for n, c in RUNTIMES.items()}
    assert {"executorch", "aoti", "onnx", "onnx-dynamo", "torchscript", "eager"} <= set(EXPORTERS)


def test_registration_refuses_incomplete_or_clashing_declarations():
    class Partial(Exporter):  # bakes one field and says nothing of the others: a silent cache-key bug
        name, format, suffix, bakes = "partial", "x", "model.x", ("backbone",)

    with pytest.raises(ValueError, match="neither baked, settable nor ignored"):
        register_exporter(Partial)

    class Clash(Exporter):
        name, format, suffix = "onnx", "onnx", "model.onnx"
        bakes = EXPORTERS["onnx"].bakes

    with pytest.raises(ValueError, match="registered twice"):
        register_exporter(Clash)

    class Nameless(Runtime):
        name = "nameless"

    with pytest.raises(ValueError, match="must set name and format"):
        register_runtime(Nameless)
    assert "partial" not in EXPORTERS and "nameless" not in RUNTIMES


def test_unknown_plugin_names_are_config_errors_naming_the_registry(tmp_path):
    raw = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    raw["axes"]["exporter"].append("tensorrt-native")
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"unknown exporter 'tensorrt-native'; expected one of .*harness/exporters/"):
        load_config(path)


class OnnxRuntimeNoOpt(OnnxRuntimeCPU):
    """A runtime written outside the core: onnxruntime with every graph optimisation off."""

    name = "onnxruntime-cpu-noopt"

    def load(self, path, settings):
        import onnxruntime as ort

        original = ort.SessionOptions

        def no_opt():
            opts = original()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            return opts

        ort.SessionOptions = no_opt
        try:
            return super().load(path, settings)
        finally:
            ort.SessionOptions = original

    def info(self):
        return {**super().info(), "graph_optimization": "disabled"}


def test_a_runtime_plugin_from_outside_the_core_runs_a_real_cell(tmp_path, monkeypatch):
    """Registered from this test file, named in the config, and run by the unchanged runner: the cell passes
    parity on the real export, is timed and probed, and its cell id, cache keys and record name it."""
    monkeypatch.setitem(RUNTIMES, OnnxRuntimeNoOpt.name, OnnxRuntimeNoOpt)
    plan = _plan(tmp_path, {"exporter": ["onnx"], "runtime": ["onnxruntime-cpu", OnnxRuntimeNoOpt.name],
                            "refine_mode": ["sampling"]}, extra_runtimes=(OnnxRuntimeNoOpt.name,))
    assert [c.runtime for c in plan.cells] == ["onnxruntime-cpu", OnnxRuntimeNoOpt.name]
    runner = _runner(plan, tmp_path)
    recs = [runner.run_cell(c) for c in plan.cells]
    assert [r["status"] for r in recs] == ["pass", "pass"], [r.get("reason") for r in recs]
    assert recs[0]["artifact_key"] == recs[1]["artifact_key"]  # one export serves both runtimes
    assert runner.keys.result_key(plan.cells[0]) != runner.keys.result_key(plan.cells[1])
    assert '"graph_optimization": "disabled"' in recs[1]["runtime_info"] and recs[1]["p50_ms"] > 0
    assert recs[1]["input_contract"] and recs[1]["judged_max_abs_pha"] < 1e-3


@pytest.mark.skipif(EXPORTERS["executorch"].unavailable() is not None or RUNTIMES["executorch-cpu"].unavailable() is not None,
                    reason=f"executorch is not usable here: {EXPORTERS['executorch'].unavailable() or RUNTIMES['executorch-cpu'].unavailable()}")
def test_executorch_full_mode_exports_runs_and_verifies(tmp_path, capsys):
    """The ExecuTorch plug-in on a real export: XNNPACK takes most of the graph, the program (exported at
    256x448, batch 2) runs at 288x512 batch 1 within the fp32 tolerance, and `verify` judges the .pte from
    its sidecar metadata alone at batch 1 and 2."""
    from harness.__main__ import main

    plan = _plan(tmp_path, {"exporter": ["executorch"], "runtime": ["executorch-cpu"], "refine_mode": ["full"]})
    runner = _runner(plan, tmp_path)
    rec = runner.run_cell(plan.cells[0])
    assert rec["status"] == "pass", rec.get("reason")
    assert rec["delegated_ops"] > rec["portable_ops"] > 0 and rec["lower_s"] > 0
    assert rec["judged_max_abs_pha"] < 1e-3 and rec["p50_ms"] > 0
    pte = tmp_path / "out" / rec["artifact"]
    meta = read_metadata(pte)
    assert meta["exporter"] == "executorch" and meta["refine_mode"] == "full" and meta["format"] == "pte"
    code = main(["verify", str(pte), "--runtime", "executorch-cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "pass  executorch-cpu 288x512 b1" in out and "pass  executorch-cpu 288x512 b2" in out


def test_a_record_field_declared_twice_is_refused_and_a_new_one_joins(monkeypatch):
    """Record fields are declared once (harness/record.py): a plug-in that declares a field a stage result
    already declares (``load_s``, harness/results.py Loaded) makes building the record fail naming both
    sections; a plug-in field of a new name becomes a column."""
    from harness import record

    aoti = EXPORTERS["aoti"]
    own = dict(aoti.record_fields)
    try:
        monkeypatch.setattr(aoti, "record_fields", {**own, "load_s": float})
        record._record_model.cache_clear()
        with pytest.raises(ValueError, match=r"'load_s' is declared twice: in section 'load/run' and in 'plug-ins'"):
            record.record_model("bgmv2")
        monkeypatch.setattr(aoti, "record_fields", {**own, "plugin_only_s": float})
        record._record_model.cache_clear()
        cols = record.columns("bgmv2")
        assert "plugin_only_s" in cols and cols.count("load_s") == 1
    finally:
        monkeypatch.setattr(aoti, "record_fields", own)
        record._record_model.cache_clear()
