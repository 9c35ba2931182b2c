"""Weights and artifacts of the wrong model, driven through the CLI (issue "A core that data flows through one
way", section "Bad input, generally"): for every registered model, a checkpoint of another model, one with keys
missing, one mis-shaped key and one NaN tensor end in exit 2 naming the value, before any export starts; ``verify``
refuses a graph that is not the model's, naming its inputs/outputs and what the model takes.

Models come from :data:`harness.models.MODELS`, so a new model is covered without editing this file; its
weights are the real state_dict of its eager model (``adapter.blank_model``)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.__main__ import DEFAULT_CONFIG
from harness.config import expand, load_config
from harness.models import MODELS

ROOT = Path(__file__).resolve().parent.parent

# each model's cheapest selection (a run refused here never exports, so any selection would do; these keep a
# run that wrongly goes on short); a model not named here gets its smallest profile filtered to its cells
CHEAP = {
    "bgmv2": ("smoke", "exporter=torchscript,refine_mode=full,batch=1"),
    "rvm": ("rvm-smoke", "exporter=torchscript,ratio_mode=input,dim_names=unique"),
}


def _selection(name):
    if name in CHEAP:
        return CHEAP[name]
    cfg = load_config(DEFAULT_CONFIG)
    best = None
    for profile in cfg.profiles:
        try:
            n = len(expand(cfg, profile, f"model={name}").cells)
        except Exception:  # noqa: BLE001 - a profile without this model's cells
            continue
        if n and (best is None or n < best[0]):
            best = (n, profile)
    assert best, f"no profile of matrix.yaml selects model {name!r}"
    return best[1], f"model={name}"


def _real_state(name):
    """``(weights group, real state_dict)`` of the model's eager module for its cheap selection's first cell."""
    import torch

    profile, flt = _selection(name)
    plan = expand(load_config(DEFAULT_CONFIG), profile, flt)
    a = MODELS[name]
    group = a.weights_group(plan.cells[0])
    torch.manual_seed(0)
    return group, {k: v.clone() for k, v in a.blank_model(group, plan.settings).state_dict().items()}


@pytest.fixture(scope="module")
def states():
    return {name: _real_state(name) for name in MODELS}


def _run(name, *args):
    profile, flt = _selection(name)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--profile", profile, "--filter", flt,
                           "--no-progress", "--jobs", "1", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc, time.perf_counter() - t0


def _save(tmp, sd, fname):
    import torch

    p = tmp / fname
    torch.save(sd, p)
    return p


def _weights(sd):
    """Float parameter keys (not BatchNorm counters, which some loaders fill in)."""
    return [k for k, v in sd.items() if v.is_floating_point() and k.endswith(".weight") and v.dim() >= 2]


def _missing5(states, name):
    _, sd = states[name]
    keys = _weights(sd)
    gone = [keys[i * (len(keys) // 5)] for i in range(5)]
    return {k: v for k, v in sd.items() if k not in gone}, [r"missing 5 keys", *map(re.escape, gone)]


def _misshaped(states, name):
    _, sd = states[name]
    k = _weights(sd)[len(_weights(sd)) // 2]
    shape = list(sd[k].shape)
    bad = dict(sd)
    bad[k] = sd[k].new_zeros([shape[0] + 1, *shape[1:]])
    return bad, [re.escape(k) + r".*\[" + str(shape[0] + 1) + ".*expected \\[" + str(shape[0]) + ","]


def _nan(states, name):
    import torch

    _, sd = states[name]
    k = _weights(sd)[-1]
    bad = dict(sd)
    bad[k] = sd[k].clone()
    bad[k].view(-1)[:12] = float("nan")
    assert int(torch.isnan(bad[k]).sum()) == 12
    return bad, [k + r" holds 12 NaN values", "expected finite weights"]


def _check_refused(proc, secs, tmp, patterns):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for p in patterns:
        assert re.search(p, proc.stderr), (p, proc.stderr)
    assert not (tmp / "out").exists(), "the run wrote its output directory: work started before the refusal"
    assert secs < 60, secs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_of_another_model_is_refused_naming_both(states, tmp_path, name):
    """E.g. BGMv2 weights for an RVM run: "looks like BGMv2 MattingRefine(backbone='mobilenetv2'), expected RVM
    MattingNetwork(variant='mobilenetv3'): 382 keys (...)"."""
    group = states[name][0]
    for other in (o for o in MODELS if o != name):
        sd = states[other][1]
        path = _save(tmp_path, sd, f"{other}.pth")
        proc, secs = _run(name, "--checkpoint", str(path), "--out", str(tmp_path / "out"))
        me, them = MODELS[name], MODELS[other]
        _check_refused(proc, secs, tmp_path, [
            rf"looks like {them.label} {re.escape(them.checkpoint_kind(sd))}",
            rf"expected {me.label} {re.escape(me.group_kind(group))}", rf"{len(sd)} keys"])


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("make", [_missing5, _misshaped, _nan], ids=["5-keys-missing", "mis-shaped-key", "nan-tensor"])
def test_damaged_checkpoint_of_the_right_model_is_refused_naming_the_key(states, tmp_path, name, make):
    sd, patterns = make(states, name)
    path = _save(tmp_path, sd, "damaged.pth")
    proc, secs = _run(name, "--checkpoint", str(path), "--out", str(tmp_path / "out"))
    _check_refused(proc, secs, tmp_path, patterns)


def test_base_error_classes_catch_every_models_errors():
    """One hierarchy: the CLI catches model.errors' bases, so every model's errors exit 2 (torch-free)."""
    import importlib

    from model import errors

    for name in MODELS:
        mod = importlib.import_module(f"model.{name}.errors")
        assert issubclass(mod.CheckpointError, errors.CheckpointError)
        assert issubclass(mod.InputContractError, errors.InputContractError)
        assert issubclass(errors.CheckpointError, errors.ModelInputError)
        assert issubclass(errors.ModelInputError, ValueError)
    code = "import sys, model.errors, model.bgmv2.errors, model.rvm.errors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------ verify: graphs of another model
def _verify(*args):
    return subprocess.run([sys.executable, "-m", "harness", "verify", *args, "--runtime", "onnxruntime-cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _strip_metadata(path):
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def rvm_onnx(tmp_path_factory):
    """A real RVM mobilenetv3 export (legacy ONNX, runtime ratio) as the official onnx branch makes it: no
    harness metadata."""
    import warnings

    import torch

    from model.rvm.export import OUTPUT_NAMES, MattingNetworkExport, dynamic_axes, input_names

    torch.manual_seed(0)
    m = MattingNetworkExport("mobilenetv3", "deep_guided_filter", 0.5, ratio_input=True).eval()
    z = torch.zeros(1, 1, 1, 1)
    path = tmp_path_factory.mktemp("rvm") / "rvm.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.rand(1, 3, 64, 64), z, z, z, z, torch.tensor([0.5])), str(path), dynamo=False,
                          opset_version=17, input_names=input_names(True), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic_axes())
    return path


@pytest.fixture(scope="module")
def bgmv2_onnx(tmp_path_factory):
    """A real BGMv2 mobilenetv2 export (legacy ONNX, full refine mode) with its harness metadata stripped."""
    import torch

    from harness.exporters import export_model
    from model.bgmv2 import MattingRefine

    torch.manual_seed(0)
    m = MattingRefine("mobilenetv2", refine_mode="full").eval()
    path = tmp_path_factory.mktemp("bgmv2") / "bgmv2.onnx"
    x = torch.rand(1, 3, 64, 112)
    export_model("onnx", m, path, (x, x), opset=17)
    _strip_metadata(path)
    return path


def test_verify_refuses_an_rvm_graph_as_bgmv2(rvm_onnx):
    proc = _verify(str(rvm_onnx), "--backbone", "mobilenetv2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"is not a BGMv2 graph: it takes src float32 \[.*r1i .*downsample_ratio float32 \[1\] "
                     r"and gives fgr .*; a BGMv2 artifact takes src, bgr and gives pha, fgr, .*missing input bgr; "
                     r"unexpected inputs r1i, r2i, r3i, r4i, downsample_ratio", proc.stderr), proc.stderr
    proc = _verify(str(rvm_onnx))  # without flags too: the graph is named before --backbone is asked for
    assert proc.returncode == 2 and "is not a BGMv2 graph" in proc.stderr, proc.stderr[-2000:]


def test_verify_still_refuses_an_rvm_artifact_by_its_metadata(rvm_onnx, tmp_path):
    import json
    import shutil

    import onnx

    from harness.exporters import META_KEY

    p = tmp_path / "rvm_meta.onnx"
    shutil.copy(rvm_onnx, p)
    m = onnx.load(str(p))
    m.metadata_props.add(key=META_KEY, value=json.dumps({"model": "rvm", "format": "onnx"}))
    onnx.save(m, str(p))
    proc = _verify(str(p))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "exported from model 'rvm'" in proc.stderr, proc.stderr


def test_verify_refuses_a_foreign_graph(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "foreign", [x], [y])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    proc = _verify(str(path), "--backbone", "mobilenetv2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert ("is not a BGMv2 graph: it takes x float32 [1, 3, 8, 8] and gives y float32 [1, 3, 8, 8]; a BGMv2 "
            "artifact takes src, bgr and gives pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm (missing inputs src, bgr; "
            "unexpected input x; missing outputs pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm)") in proc.stderr, proc.stderr


def test_verify_refuses_a_bgmv2_graph_with_flags_of_another_dtype(bgmv2_onnx):
    """A BGMv2 graph without metadata: the flags say fp16, the graph takes float32."""
    proc = _verify(str(bgmv2_onnx), "--backbone", "mobilenetv2", "--refine-mode", "full", "--precision", "fp16")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"is not a BGMv2 graph: it takes src float32 \[batch, 3, height, width\], bgr float32 .*; a "
                     r"BGMv2 artifact takes src float16 \[1, 3, 288, 512\], bgr float16 \[1, 3, 288, 512\] .*"
                     r"input src is float32, the fp16, 288x512 run feeds float16", proc.stderr), proc.stderr


def test_verify_refuses_a_fixed_size_graph_at_another_resolution(tmp_path):
    """A BGMv2 graph exported without dynamic axes at 64x112, verified at the default 288x512: the fixed size is
    named with the flag that fixes it."""
    import torch

    from model.bgmv2 import MattingRefine

    torch.manual_seed(0)
    m = MattingRefine("mobilenetv2", refine_mode="full").eval()
    x = torch.rand(1, 3, 64, 112)
    path = tmp_path / "static.onnx"
    with torch.no_grad():
        torch.onnx.export(m, (x, x), str(path), dynamo=False, opset_version=17, input_names=["src", "bgr"],
                          output_names=["pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm"])
    proc = _verify(str(path), "--backbone", "mobilenetv2", "--refine-mode", "full")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"input src is fixed to \[1, 3, 64, 112\], the fp32, 288x512 run feeds \[1, 3, 288, 512\] "
                     r"\(give --resolution HxW", proc.stderr), proc.stderr
