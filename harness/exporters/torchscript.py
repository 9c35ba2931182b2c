"""``torchscript``: ``torch.jit.script`` of the model's TorchScript wrapper, saved with its metadata."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

from ..models import adapter
from ..targets import MODEL_CELL_FIELDS, MODEL_SETTINGS, TORCHSCRIPT_SETTABLE
from . import META_KEY, Artifact, Exporter, ExportRequest, eval_all, register_exporter, zip_read_metadata


@register_exporter
class TorchScriptExporter(Exporter):
    """Scripts the model adapter's TorchScript module (BGMv2: :class:`model.bgmv2.MattingRefineTorchScript`)
    around the model (already in its precision). The adapter's ``hoisted`` fields (BGMv2: ``backbone_scale``,
    ``refine_mode``, ``refine_sample_pixels``, ``refine_threshold``, ``refine_prevent_oversampling``) stay
    settable on the loaded module, so one file serves every refine mode; the rest of the model is baked."""

    name = "torchscript"
    format = "torchscript"
    suffix = "model.pt"
    bakes = tuple(f for f in MODEL_CELL_FIELDS + MODEL_SETTINGS if f not in TORCHSCRIPT_SETTABLE) + ("exporter",)
    settable = TORCHSCRIPT_SETTABLE
    ignores = ("opset", "simplify", "export_resolution")

    def export(self, req: ExportRequest) -> Artifact:
        import torch

        t0 = time.perf_counter()
        wrapper = eval_all(adapter(req.model_name).torchscript_module(eval_all(req.model)))
        for p in wrapper.parameters():
            p.requires_grad_(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation notice
            scripted = torch.jit.script(wrapper)
        if adapter(req.model_name).torchscript_freeze:  # BatchNorm folded, attributes inlined (RVM's own scripts)
            scripted = torch.jit.freeze(scripted)
        extra = {f"{META_KEY}.json": json.dumps(req.meta, sort_keys=True, default=str)} if req.meta else {}
        scripted.save(str(req.path), _extra_files=extra)
        eval_all(req.model)
        return Artifact(Path(req.path), self.format, self.name, time.perf_counter() - t0)

    @classmethod
    def read_metadata(cls, path: Path) -> Optional[Dict[str, Any]]:
        return zip_read_metadata(path)
