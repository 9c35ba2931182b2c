"""The static patch selector (``refine_patch_select="static"``, issue 14) against the official one: the
same cells and bit-identical outputs on the shipped photos for every crop x replace method, sampling and
thresholding, batch 1 and 2; chained TopK equals one TopK at the paper's K (5,000 and 20,000); the edge
cases of the spec; and an exported graph without NonZero that TensorRT could build."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from harness.inputs import load_sample, stack
from model.bgmv2 import MattingRefine
from model.bgmv2.calibration import calibrate
from model.bgmv2.refiner import Refiner, topk_chained


@pytest.fixture(scope="module")
def pair():
    return stack([load_sample(n, (288, 512)) for n in ("rocket_coffee", "hubble_astronaut")])


@pytest.fixture(scope="module")
def weights(pair):
    torch.manual_seed(0)
    m = MattingRefine("mobilenetv2")
    calibrate(m, [pair])
    return m.state_dict()


def _model(weights, select, **kw):
    m = MattingRefine("mobilenetv2", refine_patch_select=select, **kw)
    m.load_state_dict(weights)
    return m.eval()


@pytest.mark.parametrize("mode, crop, replace", list(itertools.product(
    ["sampling", "thresholding"], ["unfold", "roi_align", "gather"], ["scatter_nd", "scatter_element"])))
def test_static_equals_official_bit_for_bit(pair, weights, mode, crop, replace):
    """refine_max_patches 4,096 (above both photos' 1,163 and 3,947 cells over the threshold) in TopK steps
    of 3,840: the thresholding case also exercises chained TopK."""
    src, bgr = pair
    kw = dict(refine_mode=mode, refine_sample_pixels=32000, refine_patch_crop_method=crop,
              refine_patch_replace_method=replace, refine_max_patches=4096, refine_topk_step=3840)
    for batch in (1, 2):
        with torch.inference_mode():
            official = _model(weights, "nonzero", **kw)(src[:batch], bgr[:batch])
            static = _model(weights, "static", **kw)(src[:batch], bgr[:batch])
        for name, a, b in zip(("pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm"), official, static):
            assert torch.equal(a, b), (mode, crop, replace, batch, name, (a - b).abs().max())
        assert official[5].sum() > 1000  # the selection is not empty


def test_thresholding_cap_truncates_and_says_so(pair, weights):
    """The second photo has 3,947 cells above the threshold: with the default cap of 3,840 the static
    output differs from the official one (the harness then fails the cell, naming the truncation)."""
    src, bgr = pair
    with torch.inference_mode():
        official = _model(weights, "nonzero", refine_mode="thresholding")(src, bgr)
        static = _model(weights, "static", refine_mode="thresholding")(src, bgr)
    counts = official[5].flatten(1).sum(1).tolist()
    assert counts[1] > 3840 >= counts[0]
    assert torch.equal(official[0][0], static[0][0]) and not torch.equal(official[0][1], static[0][1])
    assert static[5][1].sum() == 3840


def test_prevent_oversampling_keeps_zero_error_cells_upsampled():
    """Sampling asks for more cells than have a non-zero error: the official path drops the zero-error
    cells (NonZero); the static one computes them and writes back the upsampled values (masked replace)."""
    torch.manual_seed(0)
    B, H, W = 2, 64, 96
    src, bgr = torch.rand(B, 3, H, W), torch.rand(B, 3, H, W)
    pha, fgr, hid = torch.rand(B, 1, H // 4, W // 4), torch.randn(B, 3, H // 4, W // 4), torch.rand(B, 32, H // 4, W // 4)
    err = torch.rand(B, 1, H // 4, W // 4)
    err[err < 0.6] = 0.0  # ~60 % of the cells have error exactly 0
    K = (H // 4) * (W // 4) * 3 // 4  # more than the ~40 % non-zero cells
    outs = {}
    for sel in ("nonzero", "static"):
        torch.manual_seed(1)
        r = Refiner("sampling", K * 16, patch_crop_method="gather", patch_replace_method="scatter_element",
                    patch_select=sel).eval()
        with torch.inference_mode():
            outs[sel] = r(src, bgr, pha, fgr, err, hid)
    for a, b in zip(outs["nonzero"], outs["static"]):
        assert torch.equal(a, b)
    assert int(outs["static"][2].sum()) == int((err > 0).sum()) < B * K


def test_nothing_above_the_threshold_is_the_plain_upsample(pair, weights):
    src, bgr = pair
    with torch.inference_mode():
        official = _model(weights, "nonzero", refine_mode="thresholding", refine_threshold=1.0)(src, bgr)
        static = _model(weights, "static", refine_mode="thresholding", refine_threshold=1.0)(src, bgr)
    assert static[5].sum() == 0
    for a, b in zip(official, static):
        assert torch.equal(a, b)


def test_k_larger_than_the_cells_is_refused_up_front(pair, weights):
    src, bgr = (t[:1, :, :64, :64] for t in pair)  # 256 quarter-resolution cells
    with pytest.raises(ValueError, match=r"refine_max_patches=3840 exceeds the 256 quarter-resolution cells"):
        _model(weights, "static", refine_mode="thresholding")(src, bgr)
    with pytest.raises(ValueError, match=r"refine_sample_pixels=32000 selects 2000 patches but a 64x64 input"):
        _model(weights, "static", refine_mode="sampling", refine_sample_pixels=32000)(src, bgr)
    with pytest.raises(ValueError, match="refine_patch_select='topk'"):
        MattingRefine("mobilenetv2", refine_patch_select="topk")


@pytest.mark.parametrize("k, cells", [(5000, 270 * 480), (20000, 540 * 960)])
def test_chained_topk_equals_one_topk_at_the_paper_sizes(k, cells):
    """HD (80,000 px -> K 5,000 of 129,600 cells) and 4K (320,000 px -> K 20,000 of 518,400): the union of
    TopK steps of <= 3,840 is exactly the top-K set, with the same values."""
    g = torch.Generator().manual_seed(k)
    err = torch.rand(2, cells, generator=g)
    v1, t1 = err.topk(k, dim=1)
    v2, t2 = topk_chained(err, k, 3840)
    assert t2.shape == (2, k)
    for b in range(2):
        assert set(t1[b].tolist()) == set(t2[b].tolist())
        assert torch.equal(v1[b].sort().values, v2[b].sort().values)
    # a near-miss that must differ: one step fewer leaves cells out
    _, t3 = topk_chained(err, k - 3840, 3840)
    assert len(set(t1[0].tolist()) - set(t3[0].tolist())) == 3840


def test_static_onnx_graph_has_no_nonzero_and_matches_the_official_model(tmp_path, pair, weights):
    """Legacy ONNX export of the static sampling model at 256x448, run by onnxruntime at 288x512 against
    the official eager model: no NonZero, TopK K a constant <= 3840, TensorRT-ready by the static analysis;
    the official graph is not (NonZero)."""
    import onnxruntime as ort

    from harness.exporters import export_model
    from harness.onnx_analysis import analyze

    src, bgr = pair
    example = stack([load_sample("rocket_coffee", (256, 448))])
    kw = dict(refine_mode="sampling", refine_sample_pixels=32000, refine_patch_crop_method="roi_align",
              refine_patch_replace_method="scatter_nd")
    reports = {}
    for sel in ("nonzero", "static"):
        path = tmp_path / f"{sel}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_model("onnx", _model(weights, sel, **kw), path, example, 17)
        reports[sel] = analyze(str(path))
    assert reports["nonzero"].readiness["tensorrt"][0] is False
    rec = reports["static"].as_record()
    assert "NonZero" not in rec["data_dependent_ops"] and rec["topk_k"] == "2000"
    assert reports["static"].readiness["tensorrt"] == (True, []), rec["ready_tensorrt_why"]
    sess = ort.InferenceSession(str(tmp_path / "static.onnx"), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"src": src.numpy(), "bgr": bgr.numpy()})
    with torch.inference_mode():
        official = _model(weights, "nonzero", **kw)(src, bgr)
    assert np.abs(outs[0] - official[0].numpy()).max() < 1e-3
    assert np.array_equal(outs[5], official[5].numpy())  # the same refined cells


def test_report_findings_compare_the_selectors():
    from harness.models.bgmv2 import static_findings

    def rec(cid, sel, exporter, status, stage="done", p50=None, trt=None, key=None):
        return dict(cell_id=cid, refine_mode="sampling", refine_patch_select=sel, exporter=exporter, status=status,
                    stage=stage, p50_ms=p50, runtime="onnxruntime-cpu", artifact_key=key or cid, ready_tensorrt=trt,
                    ready_openvino=True, ready_coreml=False, ready_tflite=False,
                    ready_coreml_why="ScatterNDx1: unsupported", ready_tflite_why="TopKx1: unsupported")
    recs = [rec("a", "nonzero", "onnx-dynamo", "xfail", "export"), rec("a-static", "static", "onnx-dynamo", "pass", p50=30.0, trt=True),
            rec("b", "nonzero", "onnx", "pass", p50=20.0, trt=False), rec("b-static", "static", "onnx", "pass", p50=22.0, trt=True)]
    lines = static_findings(recs)
    assert lines[0].endswith("onnx 1/1 → 1/1; onnx-dynamo 0/1 → 1/1"), lines
    assert "refine_patch_select=nonzero: of 1 sampling/thresholding ONNX graphs, 0 tensorrt-ready" in lines[1]
    assert any("refine_patch_select=static: of 2 sampling/thresholding ONNX graphs, 2 tensorrt-ready" in x for x in lines)
    assert any("torch.export (dynamo ONNX, AOTInductor) gets through on 0 of 1" in x for x in lines)
    assert any("torch.export (dynamo ONNX, AOTInductor) gets through on 1 of 1" in x for x in lines)
    assert "Still blocking coreml in static graphs (op: graphs): ScatterND 2" in lines
    assert "Still blocking tflite in static graphs (op: graphs): TopK 2" in lines
    assert lines[-1] == "p50 static / nonzero (median over twin cells): onnxruntime-cpu sampling 1.10x (n=1)"
