"""The model contract: state_dict keys, parameter counts, refiner equivalences, validation, TorchScript."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.bgmv2 import MattingBase, MattingRefine, MattingRefineTorchScript

from .conftest import make_model

DATA = Path(__file__).parent / "data"


def _spec_keys(backbone: str):
    rows = []
    for line in (DATA / f"bgmv2_keys_{backbone}.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, shape, dtype))
    return rows


@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet50"])
def test_state_dict_matches_official_key_list(backbone):
    sd = MattingRefine(backbone).state_dict()
    got = [(k, str(tuple(v.shape)), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    assert got == _spec_keys(backbone)


@pytest.mark.parametrize(
    "backbone,entries,params",
    [("mobilenetv2", 382, 5_006_839), ("resnet50", 394, 40_247_703), ("resnet101", 700, 59_239_831)],
)
def test_entry_and_parameter_counts_match_paper(backbone, entries, params):
    m = MattingRefine(backbone)
    assert len(m.state_dict()) == entries
    assert sum(p.numel() for p in m.parameters()) == params  # paper Table 4
    base = MattingBase(backbone)
    assert len(base.state_dict()) == entries - 20
    assert sum(p.numel() for p in base.parameters()) == params - 15_444


def test_output_shapes_and_ranges(weights, pair_b2):
    src, bgr = pair_b2
    with torch.no_grad():
        pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = make_model(weights)(src, bgr)
    assert pha.shape == (2, 1, 288, 512) and fgr.shape == (2, 3, 288, 512)
    assert pha_sm.shape == (2, 1, 72, 128) and fgr_sm.shape == (2, 3, 72, 128) and err_sm.shape == (2, 1, 72, 128)
    assert ref_sm.shape == (2, 1, 72, 128)
    for t in (pha, fgr, pha_sm, fgr_sm, err_sm):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert set(ref_sm.unique().tolist()) <= {0.0, 1.0}
    assert int(ref_sm.sum()) <= 2 * 32_000 // 16


def _outputs(weights, src, bgr, **kw):
    with torch.no_grad():
        return make_model(weights, **kw)(src, bgr)


@pytest.mark.parametrize("mode", ["sampling", "thresholding"])
@pytest.mark.parametrize("kernel", [3, 1])
def test_all_crop_replace_combinations_agree_for_batch_1_and_2(weights, pair_b2, mode, kernel):
    src, bgr = pair_b2
    if kernel == 1:  # k=1 changes the refiner's weight shapes: use its own seeded weights
        w = {k: v for k, v in weights.items() if not k.startswith("refiner.")}
        torch.manual_seed(1)
        fresh = MattingRefine("mobilenetv2", refine_kernel_size=1).state_dict()
        w.update({k: v for k, v in fresh.items() if k.startswith("refiner.")})
        weights = w
    for batch in (1, 2):
        s, b = src[:batch], bgr[:batch]
        base = _outputs(weights, s, b, refine_mode=mode, refine_kernel_size=kernel)
        assert int(base[5].sum()) > 0, "no patches refined: the comparison would be vacuous"
        for crop, rep in itertools.product(["unfold", "roi_align", "gather"], ["scatter_nd", "scatter_element"]):
            out = _outputs(weights, s, b, refine_mode=mode, refine_kernel_size=kernel,
                           refine_patch_crop_method=crop, refine_patch_replace_method=rep)
            for name, x, y in zip(["pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm"], out, base):
                assert float((x - y).abs().max()) <= 1e-6, (batch, crop, rep, name)


@pytest.mark.parametrize("crop,rep", [("gather", "scatter_element"), ("gather", "scatter_nd"),
                                      ("unfold", "scatter_element"), ("roi_align", "scatter_nd")])
def test_batch_2_equals_each_image_alone(weights, pair_b2, crop, rep):
    """The official gather/scatter_element use batch stride H*W instead of C*H*W (spec §2.8):
    image 1 of a batch read and wrote image 0's memory. Each image must match its batch-1 run."""
    src, bgr = pair_b2
    kw = dict(refine_patch_crop_method=crop, refine_patch_replace_method=rep)
    both = _outputs(weights, src, bgr, **kw)
    for k in range(2):
        alone = _outputs(weights, src[k:k + 1], bgr[k:k + 1], **kw)
        for x, y in zip(both, alone):
            assert float((x[k:k + 1] - y).abs().max()) <= 1e-5


@pytest.mark.parametrize("kernel", [3, 1])
def test_full_mode_equals_sampling_every_cell(weights, pair_b2, kernel):
    src, bgr = pair_b2
    if kernel == 1:
        torch.manual_seed(1)
        fresh = MattingRefine("mobilenetv2", refine_kernel_size=1).state_dict()
        weights = {**weights, **{k: v for k, v in fresh.items() if k.startswith("refiner.")}}
    H, W = src.shape[2:]
    full = _outputs(weights, src, bgr, refine_mode="full", refine_kernel_size=kernel)
    every = _outputs(weights, src, bgr, refine_mode="sampling", refine_sample_pixels=H * W,
                     refine_prevent_oversampling=False, refine_kernel_size=kernel)
    assert int(every[5].sum()) == 2 * (H // 4) * (W // 4)
    for x, y in zip(full, every):
        assert float((x - y).abs().max()) <= 1e-5


def test_no_patches_equals_bilinear_upsample(weights, pair_b2):
    src, bgr = pair_b2
    pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm = _outputs(weights, src, bgr, refine_mode="thresholding",
                                                        refine_threshold=1.0)
    assert int(ref_sm.sum()) == 0
    up = F.interpolate(pha_sm, size=src.shape[2:], mode="bilinear", align_corners=False)
    assert float((pha - up.clamp(0, 1)).abs().max()) <= 1e-6


def test_prevent_oversampling_drops_zero_error_cells(weights, pair_b2):
    src, bgr = pair_b2
    H, W = src.shape[2:]
    out = _outputs(weights, src, bgr, refine_sample_pixels=H * W)
    err_q = out[4]  # s=0.25: err_sm is already at quarter resolution
    assert int(out[5].sum()) == int((err_q > 0).sum()) < 2 * (H // 4) * (W // 4)


def test_fp16_outputs_are_finite_and_close(weights, pair_b2):
    src, bgr = pair_b2
    m16 = make_model(weights, refine_mode="full").half()
    with torch.no_grad():
        o16 = m16(src.half(), bgr.half())
    o32 = _outputs(weights, src, bgr, refine_mode="full")
    for x, y in zip(o16, o32):
        assert x.dtype == torch.float16 and bool(torch.isfinite(x).all())
        assert float((x.float() - y).abs().mean()) < 0.02


def test_fp16_roi_align_is_exact_beyond_1024_px(weights):
    """Official fp16 roi_align loses the -0.5 box offsets above x=1024 (spec §6); ours must not."""
    src = torch.rand(1, 3, 64, 1600)
    bgr = torch.rand(1, 3, 64, 1600)
    outs = {}
    for crop in ("unfold", "roi_align"):
        m = make_model(weights, refine_mode="thresholding", refine_threshold=0.0,
                       refine_patch_crop_method=crop).half()
        with torch.no_grad():
            outs[crop] = m(src.half(), bgr.half())
    assert int(outs["unfold"][5][..., 300:].sum()) > 0  # patches exist at x >= 1200 px
    for x, y in zip(outs["roi_align"], outs["unfold"]):
        assert float((x.float() - y.float()).abs().max()) == 0.0


@pytest.mark.parametrize(
    "kwargs,shape,message",
    [
        ({}, ((1, 3, 64, 64), (1, 3, 64, 68)), "same shape"),
        ({}, ((1, 3, 66, 64), (1, 3, 66, 64)), "multiples of 4"),
        ({"refine_sample_pixels": 80_000}, ((1, 3, 64, 64), (1, 3, 64, 64)), "quarter-resolution cells"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(weights, kwargs, shape, message):
    m = make_model(weights, **kwargs)
    with pytest.raises(ValueError, match=message):
        m(torch.rand(*shape[0]), torch.rand(*shape[1]))


@pytest.mark.parametrize(
    "kwargs,message",
    [({"backbone_scale": 0.6}, "backbone_scale"), ({"refine_mode": "fast"}, "refine_mode"),
     ({"refine_patch_crop_method": "slice"}, "crop_method"), ({"refine_kernel_size": 5}, "kernel_size")],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MattingRefine("mobilenetv2", **kwargs)
    with pytest.raises(ValueError, match="backbone"):
        MattingRefine("vgg16")


def test_torchscript_wrapper_settings_change_after_load(weights, pair_b2, tmp_path):
    src, bgr = pair_b2
    model = make_model(weights, refine_patch_crop_method="roi_align", refine_patch_replace_method="scatter_element")
    ts = torch.jit.script(MattingRefineTorchScript(model))
    assert "prim::SetAttr" not in str(ts.inlined_graph)
    ts.save(str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    settings = [
        dict(refine_mode="thresholding", refine_threshold=0.2),
        dict(refine_mode="full", backbone_scale=0.125),
        dict(refine_mode="sampling", refine_sample_pixels=16_000, refine_prevent_oversampling=False),
    ]
    for s in settings:
        s = {"backbone_scale": 0.25, "refine_threshold": 0.1, "refine_sample_pixels": 32_000,
             "refine_prevent_oversampling": True, **s}
        for k, v in s.items():
            setattr(loaded, k, v)
        eager = make_model(weights, refine_patch_crop_method="roi_align",
                           refine_patch_replace_method="scatter_element", **s)
        with torch.no_grad():
            a, b = loaded(src, bgr), eager(src, bgr)
        for x, y in zip(a, b):
            assert float((x - y).abs().max()) <= 1e-6
    with pytest.raises(torch.jit.Error, match="multiples of 4"):
        loaded(torch.rand(1, 3, 66, 64), torch.rand(1, 3, 66, 64))
