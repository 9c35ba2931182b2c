"""``onnx-dynamo``: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), opsets 18+."""

from __future__ import annotations

import time
from pathlib import Path

from . import (Artifact, ExportRequest, StageError, eval_all, export_cause, quiet_export,
               register_exporter)
from ._onnx import OnnxExporter

DYNAMO_MIN_OPSET = 18  # it builds opset 18+ graphs; lower requests are down-converted (not a cell of the matrix)


@register_exporter
class OnnxDynamoExporter(OnnxExporter):
    """Dynamic batch and H, W as multiples of 4 (:func:`harness.exporters.export_dynamic_shapes`). A failure
    is re-raised as StageError naming its root cause (e.g. the data-dependent guard on the patch count)."""

    name = "onnx-dynamo"
    opsets = tuple(range(DYNAMO_MIN_OPSET, 21))
    packages = ("onnx", "onnxscript", "onnxsim")
    needs = ("onnx", "onnxscript")

    def export(self, req: ExportRequest) -> Artifact:
        import torch

        eval_all(req.model)
        shapes = req.shapes()
        t0 = time.perf_counter()
        try:
            quiet_export(req.path, lambda: torch.onnx.export(
                req.model, req.example, str(req.path), dynamo=True, opset_version=req.opset,
                input_names=list(req.input_names), output_names=list(req.output_names), dynamic_shapes=shapes,
                external_data=False, verbose=False))
        except Exception as e:  # noqa: BLE001 - re-raised with its cause in words
            raise StageError(export_cause(e, req.model_name)) from None
        finally:
            eval_all(req.model)
        return Artifact(Path(req.path), "onnx", "onnx-dynamo", time.perf_counter() - t0, {"opset": req.opset})
