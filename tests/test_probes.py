"""The input-contract judge (harness/probes.py) tried with runtimes that misbehave in known ways: each
mutant must be classified as what it is (a silent failure is `garbage`), each near-miss must not be."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import probes
from harness.inputs import load_sample, stack
from harness.report import contract_findings


@pytest.fixture(scope="module")
def pair():
    src, bgr = stack([load_sample("rocket_coffee", (64, 112))])
    return src, bgr


def _matte(src: torch.Tensor, bgr: torch.Tensor) -> torch.Tensor:
    """A local, size-agnostic stand-in for a matting graph: alpha from the colour difference."""
    return (src.float() - bgr.float()).abs().mean(1, keepdim=True).clamp(0, 1)


def honest(src, bgr):
    """Refuses what eager refuses (size, dtype, channels); cannot see the value range."""
    if src.shape[-1] % 4 or src.shape[-2] % 4:
        raise ValueError(f"H and W must be multiples of 4, got {tuple(src.shape[-2:])}")
    if src.dtype not in (torch.float32, torch.float16) or src.shape[1] != 3:
        raise TypeError(f"expected (B,3,H,W) float, got {src.dtype} {tuple(src.shape)}")
    return [_matte(src, bgr).numpy()]


def pads(src, bgr):
    """Pads to multiples of 4 inside, crops back: right answer for any size."""
    h, w = src.shape[-2:]
    s = F.pad(src, (0, (-w) % 4, 0, (-h) % 4))
    b = F.pad(bgr, (0, (-w) % 4, 0, (-h) % 4))
    return [_matte(s, b)[..., :h, :w].numpy()]


def shifted(src, bgr):
    """Runs any size but misaligns the matte by 2 rows when H is not a multiple of 4 (the scatter bug)."""
    m = _matte(src, bgr)
    if src.shape[-2] % 4:
        m = torch.roll(m, 2, dims=-2)
    return [m.numpy()]


def wrong_shape(src, bgr):
    """Rounds the output down to multiples of 4 (what the AOTInductor graph did)."""
    h, w = src.shape[-2] // 4 * 4, src.shape[-1] // 4 * 4
    return [_matte(src[..., :h, :w], bgr[..., :h, :w]).numpy()]


def casting(src, bgr):
    """Converts any float dtype to float32 silently (OpenVINO's behaviour): harmless."""
    return [_matte(src.float()[:, :3], bgr.float()[:, :3]).numpy()] if src.shape[1] == 3 else honest(src, bgr)


def reinterpreting(src, bgr):
    """Reads float64 memory as float32 (no dtype check): garbage values of the right shape."""
    if src.dtype == torch.float64:
        src = torch.from_numpy(src.numpy().view(np.float32)[..., : src.shape[-1]].copy())
        bgr = torch.from_numpy(bgr.numpy().view(np.float32)[..., : bgr.shape[-1]].copy())
        src, bgr = src.nan_to_num(0.0).clamp(-1e3, 1e3), bgr.nan_to_num(0.0).clamp(-1e3, 1e3)
    return [_matte(src[:, :3], bgr[:, :3]).numpy()]


def normalising(src, bgr):
    """Divides by the maximum inside: 0-255 and [0, 1] give the same matte (not garbage)."""
    return [_matte(src / src.max().clamp(min=1), bgr / bgr.max().clamp(min=1)).numpy()]


def _one(run, pair, name):
    src, bgr = pair
    outs = run(src, bgr)
    (res,) = probes.run_probes(run, src, bgr, outs, [name])
    return res


@pytest.mark.parametrize("run, expected", [(honest, "refuses"), (pads, "pads"), (shifted, "garbage"),
                                           (wrong_shape, "garbage")])
def test_size_probe(pair, run, expected):
    res = _one(run, pair, "size")
    assert res.outcome == expected, res
    assert res.detail.startswith("66x114")


def test_size_probe_tolerates_noise_but_not_a_few_percent(pair):
    """Near-miss: fp32 noise (1e-4 everywhere) still `pads`; mutant: 3 % of pixels off by 0.1 is garbage."""
    def noisy(src, bgr):
        return [pads(src, bgr)[0] + 1e-4]

    assert _one(noisy, pair, "size").outcome == "pads"

    def few_wrong(src, bgr):
        o = pads(src, bgr)[0]
        if src.shape[-2] % 4:
            o = o.copy()
            o[..., :2, :] += 0.1  # 2 of 66 rows: 3 % of the pixels
        return [o]

    res = _one(few_wrong, pair, "size")
    assert res.outcome == "garbage" and "on 3.0 % of pixels" in res.detail


@pytest.mark.parametrize("run, expected", [(honest, "refuses"), (casting, "converts"), (reinterpreting, "garbage")])
def test_dtype_probe(pair, run, expected):
    res = _one(run, pair, "dtype")
    assert res.outcome == expected, res
    assert res.detail.startswith("float64")


def test_dtype_probe_feeds_float32_to_an_fp16_artifact(pair):
    src, bgr = (t.half() for t in pair)
    seen = []

    def run(s, b):
        seen.append(s.dtype)
        return honest(s, b)

    probes.run_probes(run, src, bgr, run(src, bgr), ["dtype"])
    assert seen == [torch.float16, torch.float32]


@pytest.mark.parametrize("run, expected", [(honest, "refuses"), (casting, "refuses"), (reinterpreting, "garbage")])
def test_channels_probe(pair, run, expected):
    assert _one(run, pair, "channels").outcome == expected


@pytest.mark.parametrize("run, expected", [(honest, "garbage"), (normalising, "converts")])
def test_range_probe(pair, run, expected):
    res = _one(run, pair, "range")
    assert res.outcome == expected, res


def test_nan_outputs_are_garbage(pair):
    def nan(src, bgr):
        o = honest(src, bgr)[0]
        return [o * np.nan] if src.max() > 1 else [o]

    assert _one(nan, pair, "range").outcome == "garbage"


def test_record_fields_and_a_probe_that_kills_the_worker():
    found = [probes.ProbeResult("size", "garbage", "290x514 ..."), probes.ProbeResult("dtype", "refuses", "x")]
    rec = {"status": "pass", "probing": "channels", **probes.record_fields(found)}
    assert rec["input_contract"] == "size garbage · dtype refuses · channels not run · range not run"
    assert rec["silent_failures"] == 1
    done = probes.mark_abnormal(rec, "crash", "crash: worker died with SIGSEGV")
    assert done["input_contract"] == "size garbage · dtype refuses · channels crash · range not run"
    assert done["status"] == "pass" and "probing" not in done
    assert done["probe_details"]["channels"].startswith("crash: worker died")
    with pytest.raises(ValueError, match="unknown input probe 'colour'"):
        probes.run_probes(honest, torch.zeros(1), torch.zeros(1), [], ["colour"])


def test_torchscript_tracebacks_are_reduced_to_the_error():
    e = RuntimeError("The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript, "
                     "serialized code (most recent call last):\n  File \"code/x.py\", line 3\n    _0 = torch.add(\n"
                     "builtins.ValueError: height and width must be multiples of 4, got H=290 W=514")
    assert probes._first_line(e) == ("RuntimeError: builtins.ValueError: height and width must be multiples of 4, "
                                     "got H=290 W=514")


def _rec(cid, size="refuses", rng="refuses", **kw):
    rec = dict(cell_id=cid, exporter="onnx", replace_method="scatter_nd", refine_mode="sampling", crop_method="gather",
               runtime="onnxruntime-cpu", precision="fp32", simplify=False, input_guard=False, opset=17)
    rec.update(kw)
    outcome = {"size": size, "range": rng}
    rec.update(probes.record_fields([probes.ProbeResult(p, outcome.get(p, "refuses"), f"{p} detail")
                                     for p in probes.PROBES]))
    return rec


def test_findings_name_the_configurations_that_fail_silently():
    recs = [
        _rec("a", size="garbage", replace_method="scatter_element"),
        _rec("b", size="garbage", replace_method="n/a", refine_mode="full"),
        _rec("c"),
        _rec("a-guard", replace_method="scatter_element", input_guard=True),
        _rec("d", rng="garbage", exporter="torchscript", runtime="torchscript-cpu"),
    ]
    lines = contract_findings(recs)
    size = next(line for line in lines if line.startswith("Input contract, size"))
    assert "2 of 5 probed cells return wrong alpha" in size
    assert "onnx: replace_method=n/a|scatter_element, input_guard=False (2 of 4)" in size, size
    rng = next(line for line in lines if line.startswith("Input contract, range"))
    assert "torchscript: every probed configuration (1 of 1)" in rng
    assert any(line.startswith("input_guard export option on 1 cells") and "size garbage → refuses (1)" in line
               for line in lines), lines
