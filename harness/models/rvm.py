"""RobustVideoMatting's adapter: recurrent I/O, the runtime-ratio and baked-ratio export contracts, 10-frame
parity with state feedback.

One cell runs :data:`FRAMES` (10) frames of a real-photo video (:func:`frame_sequence`)
through its artifact, feeding each frame's ``r1o..r4o`` back as the next frame's ``r1i..r4i`` (the candidate's
own states), and compares every frame's six outputs with eager PyTorch (the master model, ``None`` initial
states, float ratio; spec rvm-model.md §1.7) run the same way on its own states.

Artifact I/O (spec §3.1 and §4):

- inputs ``src`` ``(B, 3, H, W)`` RGB in [0, 1] in the model dtype; ``r1i..r4i`` ``(B, C_k, h_k, w_k)`` in the
  model dtype, zeros on the first frame (full size, or ``[1, 1, 1, 1]``: the export broadcasts them);
  ``downsample_ratio`` float32 ``[1]`` (always fp32) when ``ratio_mode`` is ``input`` (the official onnx-branch
  way); absent when it is ``baked`` (the TensorRT recipe: the ratio is a constant of the graph);
- outputs ``fgr`` ``(B, 3, H, W)``, ``pha`` ``(B, 1, H, W)`` in [0, 1], ``r1o..r4o`` (states in [-1, 1]).

State sizes: ``h = floor(H * ratio)``, then ceil-halved k times for ``r_k`` (spec §1.4). ``ratio`` must be < 1:
at ratio 1 eager master skips the refiner while every export runs it (0.18 apart, spec §5 A).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Annotated

from .. import inputs as data_mod
from ..inputs import InputError
from ..values import as_list
from ..verdict import Verdict, elementwise_verdict
from . import Inputs, ModelAdapter, ReportSection, SectionCell, register_model

STATE_NAMES = ("r1", "r2", "r3", "r4")
OUTPUT_NAMES = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
REFINERS = {"dgf": "deep_guided_filter", "fgf": "fast_guided_filter"}
ONNX_EXPORTERS = ("onnx", "onnx-dynamo")
EXPORTERS = ("eager", "torchscript") + ONNX_EXPORTERS  # the exporters RVM cells are made for
# the drift rule: frame-T error above DRIFT_FACTOR x frame-1 error by more than DRIFT_ATOL_FRACTION x atol
DRIFT_FACTOR = 2.0
DRIFT_ATOL_FRACTION = 0.1


class RVMAxes(BaseModel):
    """RVM's axes (``matrix.yaml`` ``axes:``), in cell-id order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rvm_variant: List[Literal["mobilenetv3", "resnet50"]] = ["mobilenetv3"]
    # dgf = DeepGuidedFilterRefiner (the released checkpoints), fgf = FastGuidedFilterRefiner (no weights)
    rvm_refiner: List[Literal["dgf", "fgf"]] = ["dgf"]
    # src_sm = resize(src, scale_factor=ratio); < 1 (at 1 eager skips the refiner, exports do not)
    downsample_ratio: List[Annotated[float, Field(gt=0, lt=1)]] = [0.5]
    # input: float32 [1] graph input (official onnx branch); baked: a constant, no such input (TensorRT recipe)
    ratio_mode: List[Literal["input", "baked"]] = ["input"]
    # ONNX dim_param names: unique per tensor (TensorRT recipe) or shared height/width/channels (official)
    dim_names: List[Literal["unique", "shared"]] = ["unique"]


# recurrent frames per cell: 10 consecutive calls (TorchScript's profiling executor optimises after the first
# few, so later frames run the optimised graph) and enough steps for a diverging state to show
FRAMES = 10


def state_channels(variant: str) -> Tuple[int, int, int, int]:
    """Channels of r1..r4 (spec §1.4): mobilenetv3 16/20/40/64, resnet50 16/32/64/128."""
    return (16, 20, 40, 64) if variant == "mobilenetv3" else (16, 32, 64, 128)


def state_hw(height: int, width: int, ratio: float) -> List[Tuple[int, int]]:
    """``(h_k, w_k)`` of r1..r4: ``floor(H * ratio)`` (``F.interpolate``'s output size with a given scale), then
    iterated ceil-halving (spec §1.4; checked against a forward in tests/test_rvm_model.py)."""
    h, w = math.floor(height * ratio), math.floor(width * ratio)
    out = []
    for _ in range(4):
        h, w = (h + 1) // 2, (w + 1) // 2
        out.append((h, w))
    return out


def dynamic_axes(dim_names: str, ratio_mode: str) -> Dict[str, Dict[int, str]]:
    """ONNX ``dynamic_axes``: ``shared`` is the official export's (``batch_size``/``height``/``width`` on every
    tensor, ``channels`` on r1i..r4i: equal names declare equal sizes, which TensorRT enforces); ``unique`` is the
    TensorRT recipe's (spec §4: ``src`` 0, ``fgr`` 1, ``pha`` 2, ``r1i..r4i`` 3..6, ``r1o..r4o`` 7..10)."""
    if dim_names == "shared":
        img = {0: "batch_size", 2: "height", 3: "width"}
        out = {n: dict(img) for n in ("src", "fgr", "pha", "r1o", "r2o", "r3o", "r4o")}
        out.update({f"{s}i": {0: "batch_size", 1: "channels", 2: "height", 3: "width"} for s in STATE_NAMES})
        return out
    out = {"src": {0: "batch_size0", 2: "height0", 3: "width0"}, "fgr": {0: "batch_size1", 2: "height1", 3: "width1"},
           "pha": {0: "batch_size2", 2: "height2", 3: "width2"}}
    for k, s in enumerate(STATE_NAMES):
        n = 3 + k
        out[f"{s}i"] = {0: f"batch_size{n}", 1: f"channels{n}", 2: f"height{n}", 3: f"width{n}"}
        n = 7 + k
        out[f"{s}o"] = {0: f"batch_size{n}", 2: f"height{n}", 3: f"width{n}"}
    return out


def frame_sequence(name: str, hw: Tuple[int, int], frames: int) -> Any:
    """``frames`` video frames ``(T, 3, H, W)`` float32 in [0, 1] made from shipped sample ``name`` (HD files):
    its foreground (``src`` where its ground-truth alpha is) moves 24 px per frame to the right over its
    background while the camera pans left to right and zooms in (window from 90 % to 75 % of the picture),
    so both the subject and the background move. A portrait ``hw`` takes a portrait window. Deterministic."""
    import torch
    import torch.nn.functional as F

    pair = data_mod.load_sample(name, data_mod._SHIPPED["hd"])
    src, bgr, pha = pair.src, pair.bgr, pair.pha
    full_h, full_w = src.shape[1:]
    H, W = hw
    out = []
    for t in range(frames):
        u = t / max(frames - 1, 1)
        dx = 24 * t
        fg = torch.zeros_like(src)
        a = torch.zeros_like(pha)
        fg[:, :, dx:] = src[:, :, :full_w - dx]
        a[:, :, dx:] = pha[:, :, :full_w - dx]
        comp = a * fg + (1 - a) * bgr
        zoom = 0.9 - 0.15 * u
        ch = full_h * zoom
        cw = ch * W / H
        if cw > full_w * zoom:  # very wide target: limit by width
            cw = full_w * zoom
            ch = cw * H / W
        ch, cw = max(int(round(ch)), 2), max(int(round(cw)), 2)
        x0 = int(round((full_w - cw) * (0.2 + 0.6 * u)))
        y0 = (full_h - ch) // 2
        crop = comp[:, y0:y0 + ch, x0:x0 + cw].unsqueeze(0)
        out.append(F.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False, antialias=True)[0])
    return torch.stack(out).clamp_(0, 1)


class RVM(ModelAdapter):
    """``MattingNetwork`` (model/rvm) behind the export I/O of :mod:`model.rvm.export`."""

    name = "rvm"
    label = "RVM"
    torchscript_tensor_io = True  # forward(src, r1i..r4i, downsample_ratio) -> (fgr, pha, r1o..r4o)
    input_names = ("src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio")
    output_names = OUTPUT_NAMES
    dynamic_axes = dynamic_axes("unique", "input")
    axes = RVMAxes
    code_dir = ("model/rvm", "harness/models/rvm.py")
    size_multiple = 1
    calibration_recipe = "model/rvm/calibration.py: seeded init, BatchNorm stats and heads calibrated on shipped photos"
    # one grid per variant x exporter x runtime (x resolution, batch); rows refiner x ratio x ratio mode x dim
    # naming x onnxsim, columns opset x precision
    grid_group_axes = ("rvm_variant",)
    grid_row_axes = ("rvm_refiner", "downsample_ratio", "ratio_mode", "dim_names", "simplify")
    semantic_axis = "downsample_ratio"
    grid_headers = {"rvm_refiner": "refiner", "downsample_ratio": "ratio", "ratio_mode": "ratio mode",
                    "dim_names": "dims", "simplify": "onnxsim"}
    probe_inputs = ()
    export_hints = {"data-dependent|SymFloat": "the runtime downsample_ratio is read with .item(), an unbacked "
                                               "SymFloat under torch.export (spec rvm-model.md section 5 C.1); bake "
                                               "the ratio (ratio_mode: baked) for the dynamo exporter"}

    # ------------------------------------------------------------------ cells
    def combinations(self, axes: Dict[str, List[Any]]) -> Iterator[Dict[str, Any]]:
        seen = set()
        for knobs in super().combinations(axes):
            knobs["downsample_ratio"] = float(knobs["downsample_ratio"])
            key = tuple(knobs.values())
            if key not in seen:
                seen.add(key)
                yield knobs

    def allows(self, knobs: Dict[str, Any], exporter: str, runtime: str) -> bool:
        """RVM cells for :data:`EXPORTERS` only. Dim names exist in ONNX only, and only ONNX graphs can bake the
        ratio away: other exporters' cells are ``ratio_mode: input``, ``dim_names: unique`` (not in their ids)."""
        if exporter not in EXPORTERS:  # AOTInductor / ExecuTorch: not wired for RVM's recurrent I/O yet
            return False
        if exporter in ONNX_EXPORTERS:
            return True
        return knobs["ratio_mode"] == "input" and knobs["dim_names"] == "unique"

    def cell_id(self, cell: Any) -> str:
        """E.g. ``rvm-mobilenetv3-dgf-r0.5-baked-unique-onnx-sim-op12-fp32-onnxruntime-cpu-288x512-b1``."""
        own = f"{cell.rvm_variant}-{cell.rvm_refiner}-r{float(cell.downsample_ratio):g}"
        if cell.exporter in ONNX_EXPORTERS:
            own += f"-{cell.ratio_mode}-{cell.dim_names}"
        return f"rvm-{own}-{self.common_id(cell)}"

    def check_profile(self, settings: Dict[str, Any], axes: Dict[str, Any], where: str) -> None:
        """``src_sm`` must be at least 32 px on each side at every resolution and ratio (the network's stride is
        16 and the decoder needs two stride-16 cells to upsample from)."""
        for r in axes["downsample_ratio"]:
            for hw in [settings["export_resolution"]] + list(axes["resolution"]):
                small = min(math.floor(hw[0] * r), math.floor(hw[1] * r))
                if small < 32:
                    raise ValueError(f"{where}: downsample_ratio {r} makes src_sm {math.floor(hw[0] * r)}x"
                                     f"{math.floor(hw[1] * r)} at resolution {list(hw)}; RVM needs >= 32 px per side "
                                     f"(stride 16): use a larger ratio or resolution")


    def record_fields(self) -> Dict[str, Any]:
        """The elementwise judge's fields plus the recurrent ones: per-frame max abs error (``frame_err_*``,
        one value per frame), the drift verdict and the ``[1,1,1,1]`` zero-state check."""
        fields = super().record_fields()
        fields.update(frame_err_pha=List[float], frame_err_fgr=List[float], frame_err_state=List[float],
                      frame_err_max=List[float], drift=str, tiny_state=str, frames=int, dim_collisions=str,
                      trt_profile=str, trtexec=str)
        return fields

    def analyze_artifact(self, cell: Any, path: Path, observed: Dict[str, Tuple[int, ...]]) -> Dict[str, Any]:
        """TensorRT-style checks of the graph's I/O (spec §4) and, for a baked graph, its optimisation profile.

        ``dim_collisions``: dim_param names ``src`` shares with a state input/output, and names shared by state
        inputs of different channel counts (TensorRT takes equal names as equal sizes: no profile can satisfy
        them). For ``ratio_mode: baked`` writes ``tensorrt_profile.json`` (min/opt/max per input at the cell's
        resolution: ``src`` fixed, ``r*i`` from ``[1, 1, 1, 1]`` (first-frame zeros) to the full state shape,
        as FastDeploy's recipe) and ``trtexec.sh`` (the equivalent ``trtexec`` build) next to the artifact."""
        import json

        import onnx

        g = onnx.load(str(path), load_external_data=False).graph
        dims = {vi.name: [d.dim_param for d in vi.type.tensor_type.shape.dim] for vi in list(g.input) + list(g.output)}
        clashes = []
        src_names = {d for d in dims.get("src", []) if d}
        for name, ds in dims.items():
            if name != "src" and name[:1] == "r":
                shared = sorted(src_names & {d for d in ds if d})
                if shared:
                    clashes.append(f"src~{name}:{'/'.join(shared)}")
        chans = {}
        for s_ in STATE_NAMES:
            ds = dims.get(f"{s_}i", [])
            if len(ds) > 1 and ds[1]:
                chans.setdefault(ds[1], []).append(f"{s_}i")
        clashes += [f"{'/'.join(v)}:{k}" for k, v in chans.items() if len(v) > 1]
        out: Dict[str, Any] = {"dim_collisions": ", ".join(clashes) or "none"}
        if cell.ratio_mode != "baked":
            return out
        def fmt(shape):
            return "x".join(str(int(x)) for x in shape)

        prof = {"src": {k: list(observed["src"]) for k in ("min", "opt", "max")}}
        for s_ in STATE_NAMES:
            full = list(observed[f"{s_}i"])
            prof[f"{s_}i"] = {"min": [1, 1, 1, 1], "opt": full, "max": full}
        flags = " ".join(f"--{k}Shapes=" + ",".join(f"{n}:{fmt(p[k])}" for n, p in prof.items()) for k in ("min", "opt", "max"))
        cmd = (f"trtexec --onnx={path.name} {flags}" + (" --fp16" if cell.precision == "fp16" else "")
               + f" --saveEngine={path.stem}.engine")
        (path.parent / "tensorrt_profile.json").write_text(json.dumps(prof, indent=1))
        (path.parent / "trtexec.sh").write_text("#!/bin/sh\n# TensorRT build of this graph with the profile of "
                                                 "tensorrt_profile.json (FastDeploy's RVM recipe)\n" + cmd + "\n")
        out.update(trt_profile=json.dumps(prof, separators=(",", ":")), trtexec=cmd)
        return out

    def single_outputs(self, outs: List[Any], cell: Any) -> List[Any]:
        """The first frame's outputs (what one call of the graph returns)."""
        return [o[0] for o in outs]

    # ------------------------------------------------------------------ weights
    def weights_group(self, cell: Any) -> str:
        """One set of weights per variant (the FGF model loads the DGF weights minus ``refiner.*``)."""
        return f"rvm-{cell.rvm_variant}"

    def _variant(self, group: str) -> str:
        return group.split("-", 1)[1]

    def model_parts(self, cell: Any, s: Any, precision: str) -> Dict[str, Any]:
        return {"variant": cell.rvm_variant, "refiner": cell.rvm_refiner, "ratio": float(cell.downsample_ratio),
                "ratio_mode": cell.ratio_mode, "precision": precision, "frames": FRAMES}

    def calibration_parts(self, group: str, s: Any) -> Dict[str, Any]:
        return {"variant": self._variant(group)}

    def blank_model(self, group: str, s: Any) -> Any:
        from model.rvm import MattingNetwork

        return MattingNetwork(self._variant(group), "deep_guided_filter")

    def load_state(self, group: str, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """Strict load into the DGF ``MattingNetwork`` of the group's variant (raises CheckpointError naming
        missing, unexpected or mis-shaped keys or non-finite values; another model's weights are refused first,
        by :meth:`refuse_foreign`)."""
        from model.rvm import MattingNetwork, load_checkpoint

        self.refuse_foreign(group, state_dict)
        m = MattingNetwork(self._variant(group), "deep_guided_filter")
        load_checkpoint(m, state_dict)
        return m.state_dict()

    def cell_state(self, cell: Any, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """The FastGuidedFilter model loads the DGF weights minus ``refiner.*`` (what upstream's scripts do with
        ``strict=False``; spec §1.1)."""
        if cell.rvm_refiner == "fgf":
            return {k: v for k, v in state_dict.items() if not k.startswith("refiner.")}
        return state_dict

    def checkpoint_kind(self, state_dict: Dict[str, Any]) -> str:
        """``MattingNetwork(variant='mobilenetv3')`` (or resnet50) for RVM weights, else ``"unknown"``."""
        from model.rvm.checkpoint import guess_variant

        variant = guess_variant(state_dict)
        return f"MattingNetwork(variant={variant!r})" if variant else "unknown"

    def group_kind(self, group: str) -> str:
        return f"MattingNetwork(variant={self._variant(group)!r})"

    def calibrated_state(self, group: str, s: Any, samples: List[str]) -> Dict[str, Any]:
        """Seeded init calibrated (:func:`model.rvm.calibration.calibrate`) on the first 4 frames of each shipped
        sample's video at 192x320 (samples batched, states fed forward), then their mirror images."""
        import torch

        from model.rvm.calibration import calibrate

        m = self.blank_model(group, s)
        seq = torch.stack([frame_sequence(n, (192, 320), 4) for n in (samples or list(data_mod.SAMPLE_NAMES))], dim=1)
        calibrate(m, list(seq) + list(seq.flip(-1)))  # a clip of 4 frames x samples, then its mirror image
        return m.state_dict()

    def model_kwargs(self, cell: Any, s: Any) -> Dict[str, Any]:
        return {"variant": cell.rvm_variant, "refiner": REFINERS[cell.rvm_refiner],
                "downsample_ratio": float(cell.downsample_ratio),
                "ratio_input": cell.ratio_mode == "input"}

    def construct(self, kwargs: Dict[str, Any]) -> Any:
        """:class:`model.rvm.export.MattingNetworkExport`: master's weights and maths behind the export I/O."""
        from model.rvm.export import MattingNetworkExport

        return MattingNetworkExport(**kwargs)

    def torchscript_module(self, model: Any) -> Any:
        """:class:`model.rvm.export.MattingNetworkScript`: master's forward (float ratio), scripted and frozen."""
        from model.rvm.export import MattingNetworkScript

        return MattingNetworkScript(model)

    torchscript_freeze = True

    def official(self, cell: Any) -> Any:
        """The reference is master's eager forward, the same for every ratio mode and dim naming."""
        import dataclasses

        return dataclasses.replace(cell, ratio_mode="input", dim_names="unique")

    # ------------------------------------------------------------------ I/O
    def io(self, cell: Any) -> Tuple[Tuple[str, ...], Tuple[str, ...], Dict[str, Dict[int, str]]]:
        ins = self.input_names if cell is None or cell.ratio_mode == "input" else self.input_names[:-1]
        dims = dynamic_axes(cell.dim_names if cell is not None else "unique", cell.ratio_mode if cell else "input")
        return ins, self.output_names, {n: d for n, d in dims.items() if n in ins or n in self.output_names}

    def dynamic_shapes(self, cell: Any, max_batch: int = 64, max_hw: Tuple[int, int] = (8192, 8192)) -> Dict[str, Any]:
        """``torch.export`` shapes: batch shared by every input (it is one batch), ``src`` H and W free from 64 px,
        each state's H and W its own dimension (states are broadcast to the network's sizes)."""
        import torch

        D = torch.export.Dim
        batch = D("batch", min=1, max=max_batch)
        out: Dict[str, Any] = {"src": {0: batch, 2: D("height", min=64, max=max_hw[0]), 3: D("width", min=64, max=max_hw[1])}}
        for k, s in enumerate(STATE_NAMES):
            out[f"{s}i"] = {0: batch, 2: D(f"height{k + 1}", min=2, max=max_hw[0]), 3: D(f"width{k + 1}", min=2, max=max_hw[1])}
        if cell.ratio_mode == "input":
            out["downsample_ratio"] = None
        return out

    def cast(self, feeds: Dict[str, Any], precision: str) -> Dict[str, Any]:
        """Every floating tensor in the precision's dtype except ``downsample_ratio`` (always float32)."""
        import torch

        dt = {"fp32": torch.float32, "fp16": torch.float16}[precision]
        return {k: v if k == "downsample_ratio" or not v.is_floating_point() else v.to(dt) for k, v in feeds.items()}

    def zero_states(self, cell: Any, src: Any, tiny: bool = False) -> List[Any]:
        """First-frame states: zeros of the full state shapes for ``src`` ``(B, 3, H, W)`` (or ``[1, 1, 1, 1]``)
        in ``src``'s dtype."""
        import torch

        B, _, H, W = src.shape
        if tiny:
            return [torch.zeros(1, 1, 1, 1, dtype=src.dtype) for _ in STATE_NAMES]
        return [torch.zeros(B, c, h, w, dtype=src.dtype)
                for c, (h, w) in zip(state_channels(cell.rvm_variant), state_hw(H, W, float(cell.downsample_ratio)))]

    def frame_feeds(self, cell: Any, src: Any, states: List[Any]) -> Dict[str, Any]:
        """One call's named feeds: frame ``src`` ``(B, 3, H, W)``, the states and (ratio input) the float32 ratio."""
        import torch

        feeds = {"src": src, **{f"{s}i": t for s, t in zip(STATE_NAMES, states)}}
        if cell.ratio_mode == "input":
            feeds["downsample_ratio"] = torch.tensor([float(cell.downsample_ratio)], dtype=torch.float32)
        return feeds

    def single_call(self, feeds: Dict[str, Any], cell: Any) -> Dict[str, Any]:
        """The first frame's feeds (full-size zero states): what latency and the graph analysis use."""
        src = feeds["src"][0]
        return self.frame_feeds(cell, src, self.zero_states(cell, src))

    def example_inputs(self, res: Tuple[int, int], batch: int, cell: Any = None) -> Inputs:
        """Export example: one frame of the first sample's video at ``res``, zero states (``[1, 1, 1, 1]`` for the
        legacy exporter, as the official script does; full size for torch.export, which specialises on 1s) and
        the ratio (``ratio_mode: input``)."""
        seq = self.validation_inputs(res, batch, [])
        src = seq.feeds["src"][0]
        tiny = cell is not None and cell.exporter == "onnx"
        feeds = self.frame_feeds(cell, src, self.zero_states(cell, src, tiny=tiny))
        return Inputs(seq.names, feeds)

    def input_files(self, res, batch, samples) -> List[Path]:
        samples = list(samples) or list(data_mod.SAMPLE_NAMES)
        names = [samples[k % len(samples)] for k in range(batch)]
        return [p for n in names for p in sorted(data_mod.SAMPLES_DIR.glob(f"{n}_hd_*"))]

    def validation_inputs(self, res, batch, samples) -> Inputs:
        """``src`` ``(T, B, 3, H, W)`` float32 in [0, 1]: batch item k is the video of sample ``k``
        (:func:`frame_sequence`), so a batch holds different content."""
        import torch

        samples = list(samples) or list(data_mod.SAMPLE_NAMES)
        names = [samples[k % len(samples)] for k in range(batch)]
        clips = [frame_sequence(n, tuple(res), FRAMES) for n in names]
        return Inputs(names, {"src": torch.stack(clips, dim=1)})

    def user_inputs(self, user, batch, pad) -> Inputs:
        raise InputError("--src/--bgr are image pairs for BGMv2; RVM cells run on the shipped videos only")

    # ------------------------------------------------------------------ running frames
    def call(self, model: Any, feeds: Dict[str, Any], cell: Any = None) -> List[Any]:
        """Eager master (``MattingNetwork.forward``: ``None`` initial states, float ratio) over the frames of
        ``feeds["src"]`` ``(T, B, 3, H, W)``, its own states fed back; outputs stacked ``(T, ...)``."""
        import torch

        from model.rvm import MattingNetwork

        ratio = float(cell.downsample_ratio)

        def step(src, states):
            st = [None] * 4 if states is None else [torch.as_tensor(s) for s in states]
            with torch.inference_mode():
                out = MattingNetwork.forward(model, src, *st, downsample_ratio=ratio)
            return [o.float().cpu().numpy() if o.dtype != torch.float32 else o.cpu().numpy() for o in out]

        return [torch.from_numpy(o) for o in self._loop_states(step, feeds["src"], model_dtype=feeds["src"].dtype)]

    def _loop_states(self, step, src_seq: Any, model_dtype: Any) -> List[Any]:
        """Like :meth:`_loop` with the states kept in ``model_dtype`` as torch tensors between frames."""
        import torch

        per, states = [], None
        for t in range(src_seq.shape[0]):
            outs = step(src_seq[t], states)
            per.append(outs)
            states = [torch.from_numpy(np.ascontiguousarray(o)).to(model_dtype) for o in outs[2:]]
        return [np.stack([p[k] for p in per]) for k in range(len(OUTPUT_NAMES))]

    def run_candidate(self, runtime: Any, feeds: Dict[str, Any], cell: Any) -> List[Any]:
        """The artifact over the frames, full-size zero states first, its own ``r*o`` fed back as ``r*i``;
        outputs stacked ``(T, ...)`` (numpy). Also runs frame 1 with ``[1, 1, 1, 1]`` zero states where the graph
        broadcasts states (ONNX; before the frames), recording whether the outputs are identical
        (``self.last_tiny_state``)."""
        import torch

        self.last_tiny_state = "n/a"
        src_seq = feeds["src"]
        dtype = src_seq.dtype

        def step(src, states):
            st = self.zero_states(cell, src) if states is None else states
            outs = as_list(runtime.run(self.frame_feeds(cell, src, st)), OUTPUT_NAMES)
            return [np.asarray(o) for o in outs]

        tiny = self._tiny_run(runtime, cell, src_seq[0])  # first, so the frames are the last shapes a runtime saw
        per, states = [], None
        for t in range(src_seq.shape[0]):
            outs = step(src_seq[t], states)
            per.append(outs)
            states = [torch.from_numpy(np.ascontiguousarray(o)).to(dtype) for o in outs[2:]]
        self.last_tiny_state = self._tiny_state(tiny, per[0])
        return [np.stack([np.asarray(p[k], dtype=np.float32) for p in per]) for k in range(len(OUTPUT_NAMES))]

    def _tiny_run(self, runtime: Any, cell: Any, src: Any) -> Any:
        """Frame 1 with ``[1, 1, 1, 1]`` zero states (ONNX exports only: they broadcast states): its outputs, the
        error text where the graph refuses them, or None for other exporters."""
        if cell.exporter not in ONNX_EXPORTERS:
            return None
        try:
            return as_list(runtime.run(self.frame_feeds(cell, src, self.zero_states(cell, src, tiny=True))), OUTPUT_NAMES)
        except Exception as e:  # noqa: BLE001 - recorded
            return f"refused: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"

    @staticmethod
    def _tiny_state(outs: Any, first: List[Any]) -> str:
        """``identical`` / ``differs: max abs X`` / ``refused: <error>`` / ``n/a``: frame 1 with ``[1, 1, 1, 1]``
        zero states (:meth:`_tiny_run`) against full-size zero states."""
        if outs is None or isinstance(outs, str):
            return outs or "n/a"
        diff = max(float(np.max(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))))
                   for a, b in zip(outs, first))
        return "identical" if diff == 0 else f"differs: max abs {diff:.3g}"

    # ------------------------------------------------------------------ judge
    def judge(self, outs: List[Any], ref32: List[Any], ref_same: Optional[List[Any]], tol: Any, cell: Any, s: Any,
              crop_to: Optional[Tuple[int, int]] = None) -> Any:
        """Elementwise over all frames (:func:`harness.verdict.elementwise_verdict`), plus the per-frame error
        curve against the reference that decided, and drift: the last frame's max abs error over the six outputs
        above 2x the first frame's by more than 0.1 x atol fails the cell (states that diverge frame by frame).
        A ``[1, 1, 1, 1]`` zero state that gives other outputs than full-size zeros fails it too."""
        v = elementwise_verdict(outs, ref32, ref_same, tol, self.output_names, cell.precision)
        ref = ref32 if v.record.get("parity_ref") == "fp32" or ref_same is None else ref_same
        per = [np.abs(np.asarray(o, dtype=np.float64) - np.asarray(r, dtype=np.float64)).reshape(o.shape[0], -1).max(axis=1)
               if o.shape == r.shape else np.full(o.shape[0], np.inf) for o, r in zip(outs, ref)]
        rec = dict(v.record)
        curve_max = np.max(np.stack(per), axis=0)
        rec.update(frame_err_fgr=[float(x) for x in per[0]], frame_err_pha=[float(x) for x in per[1]],
                   frame_err_state=[float(x) for x in np.max(np.stack(per[2:]), axis=0)],
                   frame_err_max=[float(x) for x in curve_max], frames=int(outs[0].shape[0]))
        first, last = float(curve_max[0]), float(curve_max[-1])
        excess = last - DRIFT_FACTOR * first
        drifting = not math.isfinite(last) or excess > DRIFT_ATOL_FRACTION * tol.atol
        rec["drift"] = (f"drift: frame {len(curve_max)} max abs {last:.3g} > {DRIFT_FACTOR:g} x frame 1's {first:.3g} "
                        f"+ {DRIFT_ATOL_FRACTION:g} x atol" if drifting else
                        f"none (frame 1 {first:.3g}, frame {len(curve_max)} {last:.3g})")
        tiny = getattr(self, "last_tiny_state", "n/a")
        rec["tiny_state"] = tiny
        reasons = [v.reason] if not v.passed else []
        if drifting:
            reasons.append(rec["drift"])
        if tiny.startswith("differs"):
            reasons.append(f"[1,1,1,1] zero states give other outputs than full-size zero states ({tiny})")
        passed = not reasons
        return Verdict(passed, "; ".join(reasons), None, [], rec)

    # ------------------------------------------------------------------ report
    def report_findings(self, records: List[Dict[str, Any]]) -> List[str]:
        """The recurrent and TensorRT findings (:func:`recurrent_findings`) of this model's records."""
        return recurrent_findings(self.own_records(records))

    def report_sections(self, records: List[Dict[str, Any]]) -> List[ReportSection]:
        """"RVM: recurrent parity and TensorRT readiness": one row per cell that ran its frames
        (:func:`recurrent_rows`) under the per-frame error curves (:func:`recurrent_plot`); none without such
        cells."""
        ran = [r for r in self.own_records(records) if r.get("frame_err_max")]
        if not ran:
            return []
        table = []
        for row in recurrent_rows(ran):
            trt = "—" if row["trt"] is None else ("ready" if row["trt"] else f"no: {row['trt_why']}")
            table.append((row["cell_id"], SectionCell(row["status"], status=row["status"]), _g2(row["first"]),
                          _g2(row["last"]), row["drift"], row["tiny_state"], trt, row["collisions"]))
        return [ReportSection(
            id="recurrent", title="RVM: recurrent parity and TensorRT readiness",
            intro_html=RECURRENT_INTRO,
            headers=("cell", "status", "frame 1", f"frame {FRAMES}", "drift", "[1,1,1,1] state", "TensorRT",
                     "dim collisions"),
            rows=tuple(table), figure=lambda plt: recurrent_plot(plt, ran), figure_alt="RVM per-frame error")]


RECURRENT_INTRO = (
    "<p>Each RVM cell runs 10 frames of a real-photo video; every frame's six outputs (fgr, pha, r1o..r4o) are compared\n"
    "with eager PyTorch, the candidate's own states fed back. <b>drift</b>: the last frame's error above 2x the first's\n"
    "by more than 0.1 x atol fails the cell. <b>[1,1,1,1] state</b>: frame 1 with <code>[1,1,1,1]</code> zero states\n"
    "(the official first-frame input) must equal full-size zeros. <b>TensorRT</b>: static checks of the graph (a\n"
    "Resize whose scales come from a graph input is a shape tensor TensorRT refuses; one dim name on tensors of\n"
    "different sizes cannot get a profile); baked graphs come with <code>tensorrt_profile.json</code> and\n"
    "<code>trtexec.sh</code> in their artifact folder.</p>")


def _g2(v: Any) -> str:
    """An error in 2 significant digits (``inf`` kept: a shape mismatch); "" for a missing or NaN value."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2g}"


def recurrent_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per RVM record that ran its frames: the config, verdict, per-frame error curve (max abs over the
    six outputs: ``first``, ``last``, ``worst``), drift, the ``[1,1,1,1]`` state check and the TensorRT-style
    readiness of its graph; by cell id."""
    rows = []
    for r in records:
        if r.get("model") != "rvm" or not r.get("frame_err_max"):
            continue
        curve = r["frame_err_max"]
        onnx = str(r.get("exporter", "")).startswith("onnx")
        rows.append({"cell_id": r["cell_id"], "status": r["status"], "exporter": r.get("exporter"),
                     "runtime": r.get("runtime"), "precision": r.get("precision"), "opset": r.get("opset"),
                     "ratio": r.get("downsample_ratio"), "ratio_mode": r.get("ratio_mode") if onnx else "",
                     "dims": r.get("dim_names") if onnx else "",
                     "simplify": r.get("simplify"), "first": curve[0], "last": curve[-1], "worst": max(curve),
                     "drift": r.get("drift", ""), "tiny_state": r.get("tiny_state", ""),
                     "trt": r.get("ready_tensorrt"), "trt_why": r.get("ready_tensorrt_why", ""),
                     "collisions": r.get("dim_collisions", ""), "trtexec": r.get("trtexec", "")})
    return sorted(rows, key=lambda x: x["cell_id"])


def recurrent_findings(records: List[Dict[str, Any]]) -> List[str]:
    """The RVM question in one line per answer: which ONNX exports match eager over the recurrent frames *and*
    pass the TensorRT-style static checks (no Resize scales from a graph input, no dim name standing for two
    sizes), and why the others do not."""
    onnx = [r for r in records if r.get("model") == "rvm" and str(r.get("exporter", "")).startswith("onnx")]
    if not onnx:
        return []

    def cfg(r: Dict[str, Any]) -> str:
        return (f"{r['exporter']}{'+onnxsim' if r.get('simplify') else ''} op{r.get('opset')} {r.get('precision')} "
                f"ratio {r.get('ratio_mode')} ({r.get('downsample_ratio')}) dims {r.get('dim_names')}")

    good = sorted({cfg(r) for r in onnx if r["status"] in ("pass", "xpass") and r.get("ready_tensorrt")})
    out = []
    if good:
        out.append(f"RVM on TensorRT-style constraints: {len(good)} ONNX configs match eager over 10 frames and pass "
                   f"the static checks, e.g. {'; '.join(good[:3])}")
    else:
        out.append("RVM on TensorRT-style constraints: no ONNX config both matches eager and passes the static checks")
    why: Dict[str, int] = {}
    for r in onnx:
        if r["status"] in ("pass", "xpass") and r.get("ready_tensorrt") is False:
            text = str(r.get("ready_tensorrt_why", ""))
            keys = [k for k, found in (
                ("a runtime downsample_ratio input feeds Resize scales (a float shape tensor)", "Resize scales" in text),
                ("one dim name stands for different sizes (shared names)", "stands for different sizes" in text)) if found]
            for key in keys or [text.split(" (")[0][:120]]:
                why[key] = why.get(key, 0) + 1
    for k, n in sorted(why.items(), key=lambda kv: -kv[1]):
        out.append(f"RVM: {n} passing ONNX cells are not TensorRT-ready: {k}")
    return out


def recurrent_plot(plt: Any, records: List[Dict[str, Any]]) -> Any:
    """RVM's per-frame error curves (max abs over the six outputs vs eager, log scale), one line per exported
    config (runtimes of one artifact overlap), fp32 and fp16 side by side; None without RVM records that ran
    their frames."""
    rows = [r for r in records if r.get("model") == "rvm" and r.get("frame_err_max")]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, prec in zip(axes, ("fp32", "fp16")):
        sel = [r for r in rows if r.get("precision") == prec]
        for r in sel[:40]:
            ys = [max(v, 1e-9) for v in r["frame_err_max"]]
            ax.plot(range(1, len(ys) + 1), ys, color="tab:green" if r["status"] in ("pass", "xpass") else "tab:red",
                    alpha=0.5, linewidth=1)
        ax.set_title(f"RVM {prec}: {len(sel)} cells")
        ax.set_xlabel("frame (states fed back)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("max abs error vs eager")
    fig.tight_layout()
    return fig


ADAPTER = register_model(RVM())
