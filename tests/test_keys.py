"""Cache keys cannot serve a stale artifact or result: they are derived from what each exporter declares
it bakes (harness/targets.py), and these tests try to make two different artifacts share a key."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from harness import cache as cache_mod
from harness import runtimes as runtimes_mod
from harness.config import Settings, expand, load_config
from harness.keys import CellKeys
from harness.runs import RunOptions
from harness.runtimes import HOISTED, RUNTIMES
from harness.exporters import specs
from harness.targets import ALL_FIELDS, MODEL_CELL_FIELDS, MODEL_SETTINGS, RUN_FIELDS, ExporterSpec

EXPORTER_SPECS = specs()

from .test_config import MATRIX


@pytest.fixture(scope="module")
def full_keys(tmp_path_factory):
    config = load_config(MATRIX)
    plan = expand(config, "full")  # BGMv2's full profile, plus RVM's
    plan = dataclasses.replace(plan, cells=plan.cells + expand(config, "rvm-full").cells)
    keys = CellKeys(plan, RunOptions(out_dir=tmp_path_factory.mktemp("k")), threads=2)
    keys.weights_ids()
    return plan, keys


def test_every_field_is_classified_for_every_exporter():
    """Adding an axis or a model setting without deciding whether each exporter bakes it is an error."""
    from harness.config import Cell

    assert set(Cell.__dataclass_fields__) <= set(ALL_FIELDS)
    model_settings = {"backbone_scale", "refine_sample_pixels", "refine_threshold", "refine_kernel_size",
                      "refine_prevent_oversampling", "refine_max_patches", "refine_topk_step"}
    assert model_settings == set(MODEL_SETTINGS) and model_settings <= set(Settings.model_fields)
    for spec in EXPORTER_SPECS.values():
        kinds = spec.classification()
        assert set(kinds) == set(ALL_FIELDS)
        assert all(kinds[f] == "run" for f in RUN_FIELDS)
        # a field may only be "settable" where the runtimes really set it after loading
        for f, kind in kinds.items():
            if kind == "settable":
                assert spec.format == "torchscript" and f in HOISTED, (spec.name, f)
        # every model field is baked unless the artifact can change it after loading
        for f in MODEL_CELL_FIELDS + MODEL_SETTINGS:
            assert kinds[f] in ("bakes", "settable"), (spec.name, f)
    with pytest.raises(ValueError, match="neither baked"):
        ExporterSpec("x", "onnx", bakes=("backbone",)).classification()
    with pytest.raises(ValueError, match="both"):
        ExporterSpec("x", "onnx", bakes=ALL_FIELDS[:-3], settable=("backbone",)).classification()


def test_no_two_cells_differing_in_a_baked_field_share_an_artifact_key(full_keys):
    """Walk every cell of the `full` profile (every backbone, mode, crop, replace, opset, precision,
    exporter, runtime, resolution, batch) plus each model setting changed on its own."""
    plan, keys = full_keys
    by_key = {}
    for cell in plan.cells:
        for sim in {False, cell.simplify}:
            spec = EXPORTER_SPECS[cell.exporter]
            baked = (cell.exporter,) + tuple(repr(keys.field_value(cell, f, sim)) for f in spec.bakes)
            by_key.setdefault(keys.artifact_key(cell, sim), set()).add(baked)
    assert len(plan.cells) > 10_000
    shared = {k: v for k, v in by_key.items() if len(v) > 1}
    assert not shared, list(shared.values())[:3]
    # each model setting is baked into every non-TorchScript artifact; TorchScript sets them on load
    cell = next(c for c in plan.cells if c.exporter == "eager")
    base = keys.artifact_key(cell, False)
    for name, value in [("backbone_scale", 0.125), ("refine_sample_pixels", 16_000), ("refine_threshold", 0.2),
                        ("refine_kernel_size", 1), ("refine_prevent_oversampling", False),
                        ("export_resolution", (512, 896))]:
        other = CellKeys(dataclasses.replace(plan, settings=plan.settings.model_copy(update={name: value})),
                         keys.opts, threads=2)
        other.weights_id.update(keys.weights_id)
        for exporter in EXPORTER_SPECS:
            c = next(x for x in plan.cells if x.exporter == exporter)
            same = other.artifact_key(c, False) == keys.artifact_key(c, False)
            assert same == (EXPORTER_SPECS[exporter].classification()[name] != "bakes"), (exporter, name)
        assert other.artifact_key(cell, False) != base or name == "export_resolution"


def test_the_reported_eager_and_aoti_collision_is_gone(full_keys):
    """Issue 9: sampling and thresholding eager cells shared one state_dict + model.json (built for
    whichever mode ran first); aoti likewise. TorchScript legitimately shares one file across modes."""
    plan, keys = full_keys
    for exporter, shared in [("eager", False), ("aoti", False), ("torchscript", True), ("onnx", False)]:
        cells = [c for c in plan.cells if c.exporter == exporter and c.backbone == "mobilenetv2"
                 and c.crop_method == "roi_align" and c.replace_method == "scatter_nd" and c.precision == "fp32"
                 and c.opset in (None, 17) and not c.simplify]
        modes = {c.refine_mode for c in cells}
        assert modes == {"sampling", "thresholding"}
        ks = {c.refine_mode: keys.artifact_key(c, False) for c in cells}
        assert (ks["sampling"] == ks["thresholding"]) is shared, exporter


def test_result_keys_follow_the_runtime_packages_gpu_and_toolchain(full_keys, monkeypatch):
    """Upgrading OpenVINO re-runs OpenVINO cells (and only cells that use it); a new GPU or driver re-runs
    CUDA cells; a new C++ compiler re-runs libtorch-cpp cells."""
    plan, keys = full_keys
    pick = {rt: next(c for c in plan.cells if c.runtime == rt and c.exporter != "onnx-dynamo")
            for rt in ("openvino-cpu", "onnxruntime-cpu", "onnxruntime-tensorrt", "eager-cuda", "libtorch-cpp",
                       "torchscript-cpu")}
    before = {rt: keys.result_key(c) for rt, c in pick.items()}
    real = cache_mod.package_version

    def bumped(name):
        return "2099.1" if name in ("openvino", "tensorrt") else real(name)

    monkeypatch.setattr(cache_mod, "package_version", bumped)
    after = {rt: keys.result_key(c) for rt, c in pick.items()}
    changed = {rt for rt in pick if before[rt] != after[rt]}
    assert changed == {"openvino-cpu", "onnxruntime-tensorrt"}
    monkeypatch.setattr(cache_mod, "package_version", real)
    monkeypatch.setattr(runtimes_mod, "gpu_identity", lambda: "NVIDIA H100 80GB HBM3, driver 999.1")
    assert keys.result_key(pick["eager-cuda"]) != before["eager-cuda"]
    assert keys.result_key(pick["torchscript-cpu"]) == before["torchscript-cpu"]
    from harness import cpp_runner

    monkeypatch.setattr(cpp_runner, "toolchain_id", lambda: {"compiler": "g++ 99"})
    assert keys.result_key(pick["libtorch-cpp"]) != before["libtorch-cpp"]
    assert {"openvino", "onnxruntime-gpu", "tensorrt"} <= {p for r in RUNTIMES.values() for p in r.packages}


def test_near_misses_share_keys_where_they_must(full_keys):
    """Not over-keyed: runtime, validation resolution and batch never make a new artifact."""
    plan, keys = full_keys
    groups = {}
    rvm = {}
    for c in plan.cells:
        if c.exporter == "onnx" and c.opset == 17 and not c.simplify and c.model == "bgmv2":
            groups.setdefault((c.backbone, c.refine_mode, c.crop_method, c.replace_method, c.precision, c.input_guard,
                                 c.refine_patch_select), set()).add(
                keys.artifact_key(c, False))
        elif c.exporter == "onnx" and c.opset == 17 and not c.simplify and c.model == "rvm":
            rvm.setdefault((c.rvm_variant, c.rvm_refiner, c.downsample_ratio, c.ratio_mode, c.dim_names, c.precision),
                           set()).add(keys.artifact_key(c, False))
    assert groups and all(len(v) == 1 for v in groups.values())
    # RVM: one graph per variant x refiner x ratio x ratio mode x dim naming x precision, whatever the runtime,
    # resolution or batch; and every such config has its own graph
    assert rvm and all(len(v) == 1 for v in rvm.values())
    assert len({k for v in rvm.values() for k in v}) == len(rvm)
    for a, b in itertools.combinations(list(groups.values())[:6], 2):
        assert a != b
