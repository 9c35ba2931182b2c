"""Inputs the harness must refuse loudly, driven through the CLI as a user would (issue 15, first part):
exit 2 with a message naming the file and what it looks like, never a traceback or a silent green run."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import inputs

ROOT = Path(__file__).resolve().parent.parent


def _run(*args):
    return subprocess.run([sys.executable, "-m", "harness", "run", "--profile", "smoke", "--filter",
                           "exporter=torchscript,refine_mode=full,batch=1", "--no-progress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def _lfs(tmp):
    p = tmp / "lfs.pth"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 14632\n")
    return p, "Git LFS pointer"


def _text(tmp):
    p = tmp / "notes.pth"
    p.write_text("these are not weights\n")
    return p, "text file"


def _zip(tmp):
    p = tmp / "archive.pth"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    return p, "zip archive without data.pkl"


def _empty(tmp):
    p = tmp / "empty.pth"
    p.write_bytes(b"")
    return p, "empty"


def _directory(tmp):
    p = tmp / "ckpt_dir"
    p.mkdir()
    return p, "is a directory"


def _pickled_code(tmp):
    import pickle

    p = tmp / "evil.pth"
    p.write_bytes(pickle.dumps(np.float64(1.0)))  # a global (numpy) other than tensors
    return p, "never runs code"


@pytest.mark.parametrize("make", [_lfs, _text, _zip, _empty, _directory, _pickled_code])
def test_bad_checkpoints_exit_2_with_what_the_file_looks_like(tmp_path, make):
    path, expected = make(tmp_path)
    proc = _run("--checkpoint", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert "weights_only=False" not in proc.stderr  # never advise the unsafe load


def test_duplicate_yaml_key_is_an_error_with_its_line(tmp_path):
    text = (ROOT / "matrix.yaml").read_text().replace("default_profile: ci\n", "default_profile: ci\ndefault_profile: smoke\n")
    cfg = tmp_path / "m.yaml"
    cfg.write_text(text)
    proc = _run("--config", str(cfg), "--out", str(tmp_path / "out"))
    line = text.splitlines().index("default_profile: smoke") + 1
    assert proc.returncode == 2 and f"m.yaml:{line}: duplicate key 'default_profile'" in proc.stderr


def test_directory_as_src_is_named(tmp_path):
    (tmp_path / "d").mkdir()
    good = tmp_path / "b.png"
    Image.new("RGB", (512, 288)).save(good)
    proc = _run("--src", str(tmp_path / "d"), "--bgr", str(good), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def test_16bit_and_float_images_are_read_by_their_real_range(tmp_path):
    """A 16-bit PNG used to load as all 1.0 (white) and a float TIFF in [0, 1] as black."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 65536, size=(288, 512), dtype=np.uint16)
    png16 = tmp_path / "g16.png"
    Image.fromarray(gray).save(png16)
    arr, note = inputs._read_array(png16, "src")
    assert arr.shape == (288, 512, 3) and "16-bit" in note
    assert np.allclose(arr[..., 0], gray / 65535.0, atol=1e-6)
    flt = tmp_path / "f.tiff"
    Image.fromarray((gray / 65535.0).astype(np.float32), mode="F").save(flt)
    arr_f, note_f = inputs._read_array(flt, "src")
    assert np.allclose(arr_f[..., 0], gray / 65535.0, atol=1e-6) and "float" in note_f
    out_of_range = tmp_path / "big.tiff"
    Image.fromarray((gray.astype(np.float32) * 4.0), mode="F").save(out_of_range)
    with pytest.raises(inputs.InputError, match=r"big.tiff.*mode F.*expected \[0, 1\]"):
        inputs._read_array(out_of_range, "src")
    pair = inputs.load_user_pair(str(png16), str(flt))
    assert "src: 16-bit" in pair.conversion and "bgr: float" in pair.conversion
    assert abs(float(pair.src.mean()) - float(gray.mean() / 65535.0)) < 1e-4


# ------------------------------------------------------------------ the model's own entry point (eager)
@pytest.fixture(scope="module")
def eager():
    import torch

    from model.bgmv2 import MattingRefine

    torch.manual_seed(0)
    return MattingRefine("mobilenetv2", refine_mode="sampling", refine_sample_pixels=1600).eval()


def _good(h=64, w=112):
    from harness.inputs import load_sample, stack

    return stack([load_sample("rocket_coffee", (h, w))])


EAGER_BAD = [
    ("0-255 values", lambda s, b: (s * 255, b * 255), r"src values span \[.*, 2\d\d\]; expected RGB in \[0, 1\].*divide by 255"),
    ("[-1, 1] values", lambda s, b: (s * 2 - 1, b * 2 - 1), r"src values span \[-0\.9\d*, 0\.9\d*\].*\(x \+ 1\) / 2"),
    ("mean/std normalised", lambda s, b: ((s - 0.45) / 0.22, (b - 0.45) / 0.22), r"undo any mean/std normalisation"),
    ("uint8", lambda s, b: ((s * 255).byte(), (b * 255).byte()), r"src is uint8; expected float RGB in \[0, 1\].*/ 255"),
    ("float64", lambda s, b: (s.double(), b.double()), r"src is float64 but the model's weights are float32"),
    ("float16 into fp32", lambda s, b: (s.half(), b.half()), r"src is float16 but the model's weights are float32"),
    ("bgr float64 only", lambda s, b: (s, b.double()), r"bgr is float64"),
    ("NaN", lambda s, b: (s.masked_fill(s > 0.9, float("nan")), b), r"src contains NaN or Inf"),
    ("Inf in bgr", lambda s, b: (s, b.masked_fill(b > 0.9, float("inf"))), r"bgr contains NaN or Inf"),
    ("bgr 0-255 only", lambda s, b: (s, b * 255), r"bgr values span"),
    ("RGBA", lambda s, b: (torch_cat1(s), torch_cat1(b)), r"\(B, 3, H, W\) RGB tensors, got shape \[1, 4, 64, 112\]"),
    ("grayscale", lambda s, b: (s[:, :1], b[:, :1]), r"got shape \[1, 1, 64, 112\]"),
    ("no batch dim", lambda s, b: (s[0], b[0]), r"got shape \[3, 64, 112\]"),
    ("src/bgr sizes differ", lambda s, b: (s, b[..., :108]), r"same shape, got src \[1, 3, 64, 112\] and bgr \[1, 3, 64, 108\]"),
    ("H not a multiple of 4", lambda s, b: (s[..., :62, :], b[..., :62, :]), r"multiples of 4, got H=62 W=112"),
    ("empty batch", lambda s, b: (s[:0], b[:0]), r"src is empty"),
]


def torch_cat1(x):
    import torch

    return torch.cat([x, torch.ones_like(x[:, :1])], 1)


@pytest.mark.parametrize("name, make, message", EAGER_BAD, ids=[c[0] for c in EAGER_BAD])
def test_eager_model_refuses_what_it_must_not_take(eager, name, make, message):
    """Never a raw torch dtype error ("expected scalar type Byte but found Float"): the value is named."""
    import torch

    src, bgr = _good()
    with pytest.raises(ValueError, match=message), torch.inference_mode():
        eager(*make(src, bgr))


def test_eager_guard_near_misses_pass(eager):
    """Near-misses: a resize overshoot of 0.005 outside [0, 1] and an all-black frame are valid inputs."""
    import torch

    src, bgr = _good()
    with torch.inference_mode():
        eager(src * 1.005, bgr - 0.004)
        eager(torch.zeros_like(src), torch.zeros_like(bgr))


def test_input_guard_makes_exported_graphs_refuse_loudly(tmp_path):
    """The input_guard export option: legacy ONNX on onnxruntime (every optimisation level: ORT turns a
    single computed Reshape dimension into -1, so the guard computes two) and OpenVINO, and TorchScript,
    refuse 66x114 and 0-255 inputs naming the guard; valid inputs give the unguarded graph's outputs."""
    import warnings

    import onnxruntime as ort
    import torch

    from model.bgmv2 import MattingRefine, MattingRefineTorchScript

    src, bgr = _good()
    odd = [torch.nn.functional.pad(t, (0, 2, 0, 2), mode="replicate") for t in (src, bgr)]
    torch.manual_seed(0)
    plain = MattingRefine("mobilenetv2", refine_mode="sampling", refine_sample_pixels=1600,
                          refine_patch_crop_method="gather", refine_patch_replace_method="scatter_element").eval()
    guarded = MattingRefine("mobilenetv2", refine_mode="sampling", refine_sample_pixels=1600,
                            refine_patch_crop_method="gather", refine_patch_replace_method="scatter_element",
                            input_guard=True).eval()
    guarded.load_state_dict(plain.state_dict())
    paths = {}
    for name, m in (("plain", plain), ("guard", guarded)):
        paths[name] = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (src, bgr), str(paths[name]), dynamo=False, opset_version=17,
                              input_names=["src", "bgr"], output_names=["pha", "fgr"],
                              dynamic_axes={n: {0: "b", 2: "h", 3: "w"} for n in ("src", "bgr")})
        m.eval()
    feeds = {"src": src.numpy(), "bgr": bgr.numpy()}
    ref = ort.InferenceSession(str(paths["plain"]), providers=["CPUExecutionProvider"]).run(None, feeds)
    # the mutant this option exists for: the plain graph runs the 66x114 input without a word
    ort.InferenceSession(str(paths["plain"]), providers=["CPUExecutionProvider"]).run(
        None, {"src": odd[0].numpy(), "bgr": odd[1].numpy()})
    for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"):
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        sess = ort.InferenceSession(str(paths["guard"]), so, providers=["CPUExecutionProvider"])
        out = sess.run(None, feeds)
        assert np.abs(out[0] - ref[0]).max() < 1e-5, level
        with pytest.raises(Exception, match="input_guard_hw_multiple_of_4"):
            sess.run(None, {"src": odd[0].numpy(), "bgr": odd[1].numpy()})
        with pytest.raises(Exception, match="input_guard_values_in_0_1"):
            sess.run(None, {"src": feeds["src"] * 255, "bgr": feeds["bgr"] * 255})
    try:
        import openvino as ov
    except ImportError:
        ov = None
    if ov is not None:
        req = ov.Core().compile_model(str(paths["guard"]), "CPU").create_infer_request()
        req.infer(feeds)
        with pytest.raises(Exception, match="input_guard_hw_multiple_of_4"):
            req.infer({"src": odd[0].numpy(), "bgr": odd[1].numpy()})
        with pytest.raises(Exception, match="input_guard_values_in_0_1"):
            req.infer({"src": feeds["src"] * 255, "bgr": feeds["bgr"] * 255})
    ts_plain = torch.jit.script(MattingRefineTorchScript(plain))
    ts_guard = torch.jit.script(MattingRefineTorchScript(guarded))
    assert torch.equal(ts_plain(src, bgr)[0], ts_guard(src, bgr)[0])
    ts_plain(src * 255, bgr * 255)  # runs: TorchScript cannot see the range without the option
    with pytest.raises(Exception, match="input_guard: src/bgr values span"):
        ts_guard(src * 255, bgr * 255)
    assert set(guarded.state_dict()) == set(plain.state_dict())  # the option adds no weights


# ------------------------------------------------------------------ the CLI inventory (in-process: fast)
def _img(path, size=(512, 288), mode="RGB", fmt=None):
    Image.new(mode, size, 90).save(path, format=fmt)
    return str(path)


def _cfg(tmp, text):
    p = tmp / "m.yaml"
    p.write_text(text)
    return str(p)


def _yaml_with(tmp, old, new):
    text = (ROOT / "matrix.yaml").read_text()
    assert old in text, old
    return _cfg(tmp, text.replace(old, new, 1))


def _torch_file(tmp, obj, name="w.pth"):
    import torch

    p = tmp / name
    torch.save(obj, p)
    return str(p)


def _results_dir(tmp, jsonl):
    d = tmp / "res"
    d.mkdir()
    (d / "results.jsonl").write_text(jsonl)
    return str(d)


SMOKE = ["run", "--profile", "smoke", "--filter", "exporter=torchscript,refine_mode=full,batch=1", "--no-progress"]
CLI_BAD = [  # (kind, argv maker(tmp) -> list, regex the message must match)
    ("unknown profile", lambda t: ["run", "--profile", "weekly"], r"--profile 'weekly' is not defined"),
    ("unknown filter key", lambda t: ["run", "--filter", "colour=red"], r"unknown key 'colour'"),
    ("filter selects nothing", lambda t: ["run", "--filter", "opset=99"], r"selects no cells"),
    ("jobs 0", lambda t: ["run", "--jobs", "0"], r"--jobs: .*0"),
    ("jobs not a number", lambda t: ["run", "--jobs", "two"], r"--jobs: .*two"),
    ("deadline 0", lambda t: [*SMOKE, "--deadline", "0"], r"--deadline 0: must be > 0"),
    ("deadline negative", lambda t: [*SMOKE, "--deadline", "-5"], r"--deadline -5: must be > 0"),
    ("unknown stage timeout", lambda t: ["run", "--stage-timeout", "compile=5"], r"unknown stage 'compile'"),
    ("stage timeout not a number", lambda t: ["run", "--stage-timeout", "export=soon"], r"'soon' is not a number"),
    ("stage timeout negative", lambda t: ["run", "--stage-timeout", "export=-1"], r"must be > 0 seconds"),
    ("memory limit 0", lambda t: ["run", "--memory-limit-mib", "0"], r"--memory-limit-mib: .*0"),
    ("config missing", lambda t: ["run", "--config", str(t / "none.yaml")], r"none.yaml"),
    ("config binary", lambda t: ["run", "--config", _cfg(t, "\x00\x01\x02: [")], r"m.yaml.*(not valid YAML|special characters)"),
    ("config empty", lambda t: ["run", "--config", _cfg(t, "")], r"m.yaml"),
    ("config a list", lambda t: ["run", "--config", _cfg(t, "- 1\n- 2\n")], r"m.yaml"),
    ("config unknown key", lambda t: ["run", "--config", _yaml_with(t, "version: 1", "version: 1\ncolour: red")],
     r"colour"),
    ("config unknown precision", lambda t: ["run", "--config", _yaml_with(t, "precision: [fp32, fp16]",
                                                                            "precision: [fp32, fp8]")], r"fp8"),
    ("config unsupported opset", lambda t: ["run", "--config", _yaml_with(t, "opset: [11, 12, 13, 16, 17, 18, 20]",
                                                                            "opset: [11, 99]")], r"unsupported opset 99"),
    # the smoke profile's (BGMv2 only); the universe also holds RVM's odd 721x1283, which BGMv2 cells skip
    ("config resolution not multiple of 4", lambda t: ["run", "--config", _yaml_with(
        t, "      resolution: [[288, 512]]\n", "      resolution: [[290, 512]]\n")], r"multiples of 4"),
    ("config unknown runtime", lambda t: ["run", "--config", _yaml_with(t, "runtime: [eager-cpu,", "runtime: [tflite-gpu,")],
     r"unknown runtime 'tflite-gpu'"),
    ("config negative atol", lambda t: ["run", "--config", _yaml_with(t, "fp32: {atol: 1.0e-3", "fp32: {atol: -1.0e-3")],
     r"atol"),
    ("config unknown input probe", lambda t: ["run", "--config", _yaml_with(
        t, "input_probes: [size, dtype, channels, range]", "input_probes: [size, colour]")], r"colour"),
    ("config duplicate axis value", lambda t: ["run", "--config", _yaml_with(t, "batch: [1, 2]", "batch: [1, 1]")],
     r"duplicate value 1"),
    ("config include with an unknown axis", lambda t: ["run", "--config", _yaml_with(
        t, "      - {input_guard: [true], exporter: [onnx, torchscript]", "      - {colour: [red], exporter: [onnx, torchscript]")],
     r"colour"),
    ("--src without --bgr", lambda t: [*SMOKE, "--src", _img(t / "s.png"), "--out", str(t / "o")],
     r"--src and --bgr must be given together"),
    ("--src missing", lambda t: [*SMOKE, "--src", str(t / "none.png"), "--bgr", _img(t / "b.png"), "--out", str(t / "o")],
     r"none.png'?: no such file"),
    ("--src a text file", lambda t: [*SMOKE, "--src", _cfg(t, "hello"), "--bgr", _img(t / "b.png"), "--out", str(t / "o")],
     r"not a readable image"),
    ("--src a truncated PNG", lambda t: [*SMOKE, "--src", _trunc(t), "--bgr", _img(t / "b.png"), "--out", str(t / "o")],
     r"trunc.png"),
    ("--src an empty file", lambda t: [*SMOKE, "--src", _empty_file(t), "--bgr", _img(t / "b.png"), "--out", str(t / "o")],
     r"zero.png"),
    ("src/bgr sizes differ", lambda t: [*SMOKE, "--src", _img(t / "s.png"), "--bgr", _img(t / "b.png", (516, 288)),
                                        "--out", str(t / "o")], r"512x288.*516x288|different sizes"),
    ("size not multiple of 4", lambda t: [*SMOKE, "--src", _img(t / "s.png", (514, 290)),
                                          "--bgr", _img(t / "b.png", (514, 290)), "--out", str(t / "o")], r"--pad"),
    ("too small for sampling", lambda t: ["run", "--profile", "smoke", "--filter", "exporter=torchscript,batch=1",
                                          "--src", _img(t / "s.png", (64, 64)), "--bgr", _img(t / "b.png", (64, 64)),
                                          "--out", str(t / "o")], r"fewer than refine_sample_pixels"),
    ("float image out of range", lambda t: [*SMOKE, "--src", _float_tiff(t, 4.0), "--bgr", _float_tiff(t, 1.0, "b.tiff"),
                                            "--out", str(t / "o")], r"mode F.*expected \[0, 1\]"),
    ("checkpoint missing", lambda t: [*SMOKE, "--checkpoint", str(t / "none.pth")], r"none.pth'?: no such file"),
    ("checkpoint a truncated torch file", lambda t: [*SMOKE, "--checkpoint", _truncated_torch(t), "--out", str(t / "o")],
     r"cannot read checkpoint"),
    ("checkpoint of another model", lambda t: [*SMOKE, "--checkpoint", _torch_file(t, {"fc.weight": _zeros(10, 4)}),
                                               "--out", str(t / "o")], r"missing \d+ keys"),
    ("checkpoint a bare tensor", lambda t: [*SMOKE, "--checkpoint", _torch_file(t, _zeros(3)), "--out", str(t / "o")],
     r"w.pth"),
    ("checkpoint with a wrong shape", lambda t: [*SMOKE, "--checkpoint", _wrong_shape(t), "--out", str(t / "o")],
     r"shape"),
    ("--out under a file", lambda t: [*SMOKE, "--out", str(_file(t) / "sub")], r"not writable|Not a directory"),
    ("--resume without run.json", lambda t: ["run", "--resume", str(t)], r"has no run.json"),
    ("--resume run.json garbage", lambda t: ["run", "--resume", _garbage_run_json(t)], r"run.json: unreadable"),
    ("--resume with another --out", lambda t: ["run", "--resume", str(t), "--out", str(t / "elsewhere")], r"conflicts with"),
    ("--resume and --rerun-failed", lambda t: ["run", "--resume", str(t), "--rerun-failed", str(t)], r"not allowed with"),
    ("report dir without results", lambda t: ["report", str(t)], r"has no results.jsonl"),
    ("report results.jsonl not JSON", lambda t: ["report", _results_dir(t, "{not json\n{also not\n")], r"results.jsonl"),
    ("report benchmark json missing", lambda t: ["report", _results_dir(t, ""), "--benchmark-json", str(t / "b.json")],
     r"b.json'?: no such file"),
    ("merge run.json garbage", lambda t: ["merge", str(t / "merged"), _garbage_run_json(t)], r"run.json' is unreadable"),
    ("--src of image mode LAB", lambda t: [*SMOKE, "--src", _lab(t), "--bgr", _img(t / "b.png"), "--out", str(t / "o")],
     r"has image mode LAB, which is not RGB or gray; accepted modes: RGB"),
    ("verify artifact missing", lambda t: ["verify", str(t / "model.onnx")], r"model.onnx'?: no such file"),
    ("verify artifact a directory", lambda t: ["verify", str(t)], r"it is a directory"),
    ("verify unknown artifact type", lambda t: ["verify", _cfg(t, "x")], r"unknown artifact type '.yaml'"),
    ("verify text as ONNX", lambda t: ["verify", _named(t, "model.onnx", b"not a protobuf")], r"model.onnx"),
    ("verify truncated TorchScript", lambda t: ["verify", _named(t, "model.pt", b"PK\x03\x04garbage")], r"model.pt"),
    ("verify runtime of another format", lambda t: ["verify", _named(t, "model.onnx", b"x"), "--runtime", "torchscript-cpu"],
     r"--runtime 'torchscript-cpu' cannot load a onnx artifact"),
    ("verify --src without --bgr", lambda t: ["verify", _named(t, "model.pt", b"x"), "--src", _img(t / "s.png")],
     r"--src and --bgr must be given together"),
    ("verify bad resolution", lambda t: ["verify", _named(t, "model.pt", b"x"), "--resolution", "290x514"],
     r"--resolution '290x514': H and W must be positive multiples of 4"),
    ("verify resolution not HxW", lambda t: ["verify", _named(t, "model.pt", b"x"), "--resolution", "big"],
     r"--resolution 'big': expected HxW"),
]


def _zeros(*shape):
    import torch

    return torch.zeros(*shape)


def _trunc(t):
    p = t / "trunc.png"
    _img(p)
    p.write_bytes(p.read_bytes()[:60])
    return str(p)


def _empty_file(t):
    p = t / "zero.png"
    p.write_bytes(b"")
    return str(p)


def _float_tiff(t, scale, name="f.tiff"):
    p = t / name
    Image.fromarray((np.linspace(0, 1, 288 * 512, dtype=np.float32).reshape(288, 512) * scale), mode="F").save(p)
    return str(p)


def _truncated_torch(t):
    p = Path(_torch_file(t, {"a": _zeros(1000)}, "t.pth"))
    p.write_bytes(p.read_bytes()[:300])
    return str(p)


def _wrong_shape(t):
    import torch

    from model.bgmv2 import MattingRefine

    sd = MattingRefine("mobilenetv2").state_dict()
    sd["refiner.conv1.weight"] = torch.zeros(24, 42, 1, 1)
    return _torch_file(t, sd)


def _lab(t):
    p = t / "lab.tiff"
    Image.new("LAB", (512, 288), (50, 10, 10)).save(p)
    return str(p)


def _file(t):
    p = t / "a_file"
    p.write_text("x")
    return p


def _garbage_run_json(t):
    (t / "results.jsonl").write_text("")
    (t / "run.json").write_text("{nope")
    return str(t)


def _named(t, name, data):
    p = t / name
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("kind, argv, message", CLI_BAD, ids=[c[0] for c in CLI_BAD])
def test_cli_bad_input_inventory(tmp_path, capsys, kind, argv, message):
    """Every kind: exit 2 with a message naming the value or file, no traceback, nothing half-written."""
    import re

    from harness.__main__ import main

    args = argv(tmp_path)
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (kind, code, err)
    assert "Traceback" not in err, err
    assert re.search(message, err), (kind, err)
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_inventory_has_at_least_50_kinds():
    n = len(CLI_BAD) + len(EAGER_BAD) + 6 + 3  # + checkpoint files, duplicate YAML key, directory --src, 16-bit/float
    assert n >= 50, n


# ------------------------------------------------------------------ image modes of --src/--bgr
MODE_FILES = [  # (PIL mode, file suffix, what Pair.conversion must say; None: refused)
    ("RGB", "png", ""),
    ("RGBA", "png", r"mode RGBA -> RGB, alpha composited over black \(\d+ of \d+ pixels not opaque\)"),
    ("LA", "png", r"mode LA -> RGB, alpha composited over black"),
    ("L", "png", r"mode L -> 8-bit RGB"),
    ("P", "png", r"mode P -> 8-bit RGB"),
    ("I;16", "png", r"16-bit grayscale \(mode I;16\) / 65535"),
    ("I", "tiff", r"16-bit grayscale \(mode I\) / 65535"),
    ("F", "tiff", r"float grayscale \(mode F\) in \[0, 1\]"),
    ("CMYK", "jpeg", r"mode CMYK -> 8-bit RGB"),
    ("1", "png", r"mode 1 -> 8-bit RGB"),
    ("LAB", "tiff", None),
]


def _mode_image(tmp, mode, suffix, name="s"):
    """A 512x288 image in ``mode`` with a gradient (alpha: the top 100 rows transparent)."""
    ramp = np.tile(np.linspace(0, 1, 512), (288, 1))
    if mode in ("I;16", "I"):
        im = Image.fromarray((ramp * 60000).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        im = Image.fromarray(ramp.astype(np.float32), "F")
    else:
        im = Image.fromarray((ramp * 255).astype(np.uint8), "L").convert(mode)
        if mode in ("RGBA", "LA", "PA"):
            a = np.full((288, 512), 255, np.uint8)
            a[:100] = 0
            im.putalpha(Image.fromarray(a, "L"))
    p = tmp / f"{name}_{mode.replace(';', '')}.{suffix}"
    im.save(p)
    assert Image.open(p).mode == mode, (mode, Image.open(p).mode)
    return p


@pytest.mark.parametrize("mode, suffix, note", MODE_FILES, ids=[m[0] for m in MODE_FILES])
def test_each_image_mode_is_converted_and_named_or_refused(tmp_path, mode, suffix, note):
    """Every PIL mode: converted to RGB in [0, 1] with a note saying how, or refused naming the mode and the
    accepted ones (LAB would otherwise have its L, a, b copied into R, G, B)."""
    import re

    src = _mode_image(tmp_path, mode, suffix)
    bgr = _mode_image(tmp_path, "RGB", "png", "b")
    if note is None:
        with pytest.raises(inputs.InputError, match=rf"has image mode {mode}, which is not RGB or gray; accepted "
                                                    r"modes: RGB, RGBA, .*CMYK"):
            inputs.load_user_pair(str(src), str(bgr))
        return
    pair = inputs.load_user_pair(str(src), str(bgr))
    assert tuple(pair.src.shape) == (3, 288, 512) and 0.0 <= float(pair.src.min()) <= float(pair.src.max()) <= 1.0
    assert re.search(note, pair.conversion) if note else pair.conversion == "", pair.conversion
    if mode in ("RGBA", "LA"):  # composited over black: the transparent rows are black
        assert float(pair.src[:, :100].abs().max()) == 0.0 and float(pair.src[:, 100:].max()) > 0.9


def test_image_modes_through_the_cli_converted_in_the_record_or_refused(tmp_path):
    """A real run with an RGBA --src and a CMYK --bgr records both conversions in environment.json; a LAB
    --src exits 2 naming its mode before anything runs."""
    import json

    src, bgr = _mode_image(tmp_path, "RGBA", "png"), _mode_image(tmp_path, "CMYK", "jpeg", "b")
    proc = _run("--src", str(src), "--bgr", str(bgr), "--out", str(tmp_path / "out"), "--deadline", "0.5")
    assert proc.returncode == 0, proc.stderr[-1500:]
    conv = json.loads((tmp_path / "out" / "environment.json").read_text())["inputs"]["conversion"]
    assert "src: mode RGBA -> RGB, alpha composited over black (51200 of 147456 pixels not opaque)" in conv, conv
    assert "bgr: mode CMYK -> 8-bit RGB" in conv, conv
    lab = _mode_image(tmp_path, "LAB", "tiff")
    proc = _run("--src", str(lab), "--bgr", str(bgr), "--out", str(tmp_path / "out2"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert f"--src {str(lab)!r} has image mode LAB, which is not RGB or gray; accepted modes: RGB" in proc.stderr
    assert not (tmp_path / "out2").exists()
