"""``onnx``: the legacy TorchScript-tracing exporter, ``torch.onnx.export(dynamo=False)``, opsets 11-20."""

from __future__ import annotations

import time
from pathlib import Path

from . import Artifact, ExportRequest, eval_all, quiet_export, register_exporter
from ._onnx import OnnxExporter


@register_exporter
class OnnxLegacyExporter(OnnxExporter):
    """Dynamic batch/H/W from the model adapter's ``dynamic_axes``. The traced graph bakes the refine mode
    and, in sampling mode, ``k = refine_sample_pixels // 16`` for TopK. Recorded as ``onnx-legacy``."""

    name = "onnx"
    opsets = tuple(range(11, 21))
    packages = ("onnx", "onnxsim")

    def export(self, req: ExportRequest) -> Artifact:
        import torch

        eval_all(req.model)
        t0 = time.perf_counter()
        try:
            quiet_export(req.path, lambda: torch.onnx.export(
                req.model, req.example, str(req.path), dynamo=False, opset_version=req.opset,
                input_names=list(req.input_names), output_names=list(req.output_names),
                dynamic_axes=req.dynamic_axes, do_constant_folding=True))
        finally:
            eval_all(req.model)  # the legacy exporter can leave modules in train mode
        return Artifact(Path(req.path), "onnx", "onnx-legacy", time.perf_counter() - t0, {"opset": req.opset})
