"""A second model family for the matrix, written outside the core: proof that a model is a plug-in.

``TinyMatte(width)``: ``src (B, 3, H, W)`` RGB in [0, 1] -> ``pha (B, 1, H, W)`` = sigmoid(gain * conv3x3(
relu(conv3x3(src)))) in [0, 1] and ``fgr (B, 3, H, W)`` = ``src * pha``. One model axis (``toy_width``: the
hidden channels), one setting (``toy_gain``), one input instead of BGMv2's two, two outputs instead of six,
the default elementwise judge plus a parity metric of its own (``toy_mean_abs_pha``: mean |pha - eager fp32|,
recorded next to the judge's fields), no input probes, and a report section and finding of its own. Loaded
with ``MATRIX_PLUGINS=tests.plugins.toymatte``. Each item of docs/architecture.md's "add a model" checklist
that a plug-in can exercise is exercised here (tests/test_models.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from pydantic import BaseModel, ConfigDict, Field

from harness.models import Inputs, ModelAdapter, ReportSection, SectionCell, register_model
from harness.verdict import Verdict


class ToyAxes(BaseModel):
    """The toy model's axis: hidden channels of its first convolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    toy_width: List[int] = [4]


class ToySettings(BaseModel):
    """The toy model's setting: the logit gain before the sigmoid (baked into every artifact)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    toy_gain: float = Field(1.0, gt=0)


def _module(width: int, gain: float) -> Any:
    import torch
    from torch import nn

    class TinyMatte(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, 1, 3, padding=1)
            self.gain = gain

        def forward(self, src: torch.Tensor):
            pha = torch.sigmoid(self.conv2(torch.relu(self.conv1(src))) * self.gain)
            return pha, src * pha

    return TinyMatte()


class ToyMatte(ModelAdapter):
    """Adapter of :class:`TinyMatte`: weights per width, inputs from the shipped photos' ``src``."""

    name = "toymatte"
    input_names = ("src",)
    output_names = ("pha", "fgr")
    dynamic_axes = {"src": {0: "batch", 2: "height", 3: "width"}, "pha": {0: "batch", 2: "height", 3: "width"},
                    "fgr": {0: "batch", 2: "height", 3: "width"}}
    axes = ToyAxes
    settings = ToySettings
    code_dir = ("tests/plugins/toymatte.py",)
    calibration_recipe = "tests/plugins/toymatte.py: seeded torch init"
    grid_row_axes = ("toy_width",)

    def weights_group(self, cell: Any) -> str:
        return f"toymatte-w{cell.toy_width}"

    def _width(self, group: str) -> int:
        return int(group.rsplit("-w", 1)[1])

    def model_kwargs(self, cell: Any, s: Any) -> Dict[str, Any]:
        return {"width": int(cell.toy_width), "gain": float(s.toy_gain)}

    def construct(self, kwargs: Dict[str, Any]) -> Any:
        return _module(**kwargs)

    def blank_model(self, group: str, s: Any) -> Any:
        return _module(self._width(group), 1.0)

    def load_state(self, group: str, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        m = _module(self._width(group), 1.0)
        m.load_state_dict(state_dict, strict=True)
        return m.state_dict()

    def calibrated_state(self, group: str, s: Any, samples: List[str]) -> Dict[str, Any]:
        return self.blank_model(group, s).state_dict()

    def input_files(self, res, batch, samples) -> List[Path]:
        from harness import inputs as data_mod

        names = [samples[k % len(samples)] for k in range(batch)]
        return [data_mod.SAMPLES_DIR / f"{n}_small_src.png" for n in names]

    def validation_inputs(self, res, batch, samples) -> Inputs:
        import torch

        from harness import inputs as data_mod

        samples = list(samples) or list(data_mod.SAMPLE_NAMES)
        pairs = [data_mod.load_sample(samples[k % len(samples)], res) for k in range(batch)]
        return Inputs([p.name for p in pairs], {"src": torch.stack([p.src for p in pairs])})

    def user_inputs(self, user, batch, pad) -> Inputs:
        return Inputs([user.name] * batch, {"src": user.src.unsqueeze(0).repeat(batch, 1, 1, 1)})

    # a parity metric of the model's own: declared with the judge's fields, computed next to its verdict
    def record_fields(self) -> Dict[str, Any]:
        return {**super().record_fields(), "toy_mean_abs_pha": float}

    def judge(self, outs, ref32, ref_same, tol, cell, s, crop_to=None) -> Verdict:
        import numpy as np

        v = super().judge(outs, ref32, ref_same, tol, cell, s, crop_to)
        pha = np.asarray(outs[0], dtype=np.float64)
        mean = float(np.mean(np.abs(pha - ref32[0]))) if pha.shape == np.shape(ref32[0]) else float("nan")
        return Verdict(v.passed, v.reason, v.best, v.results, {**v.record, "toy_mean_abs_pha": mean})

    # the model's own report content
    def report_findings(self, records: List[Dict[str, Any]]) -> List[str]:
        mine = self.own_records(records)
        if not mine:
            return []
        ok = sum(r.get("status") == "pass" for r in mine)
        return [f"TinyMatte: {ok} of {len(mine)} cells match eager PyTorch"]

    def report_sections(self, records: List[Dict[str, Any]]) -> List[ReportSection]:
        rows = [(r["cell_id"], SectionCell(r.get("status", ""), r.get("status", "")), r.get("toy_mean_abs_pha"))
                for r in self.own_records(records) if r.get("toy_mean_abs_pha") is not None]
        if not rows:
            return []
        return [ReportSection(id="toymatte-mean-abs", title="TinyMatte: mean |pha - eager|",
                              headers=("cell", "status", "toy_mean_abs_pha"), rows=tuple(rows))]


register_model(ToyMatte())
