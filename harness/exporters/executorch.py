"""``executorch``: ``torch.export`` -> edge dialect lowered to XNNPACK -> ExecuTorch program (``.pte``).

The edge target people ask for next (phones, embedded Linux). The program runs in ExecuTorch's runtime
(:mod:`harness.runtimes.executorch`); operators XNNPACK does not take stay on ExecuTorch's portable kernels
(``portable_ops`` in the record: nearest/bilinear upsampling with symbolic sizes, the static selector's
TopK/gather/scatter).

Shapes: batch 1..2 and H, W multiples of 4 up to 1088 x 1920 are dynamic (the matrix validates at another
size than it exports at). ExecuTorch plans activation memory for the upper bounds, so the bounds are kept
near the sizes users run, not the 8192 the other torch.export exporters allow. With symbolic sizes the
edge verifier rejects ``torch.sym_float`` (from ``F.interpolate(scale_factor=..., recompute_scale_factor=True)``;
``to_executorch`` replaces it with its own primitive later), so the IR validity check is off
(``EdgeCompileConfig(_check_ir_validity=False)``, recorded as ``edge_ir_check: false``).
Measured with executorch 1.5.1 / torch 2.14.1 on 2 CPU cores: lowering takes about a minute.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..targets import MODEL_CELL_FIELDS, MODEL_SETTINGS
from . import (Artifact, Exporter, ExportRequest, StageError, eval_all, export_cause,
               module_version, quiet_export, register_exporter)

MAX_BATCH = 2
MAX_HW = (1088, 1920)


@register_exporter
class ExecuTorchExporter(Exporter):
    """XNNPACK-delegated ``.pte``; the example has batch 2 (batch 1 would be specialised to a constant).
    ``meta["record"]`` carries ``torch_export_s``, ``lower_s`` and the delegation counts. A failure is
    StageError naming the root cause (e.g. the data-dependent patch count of the official selector)."""

    name = "executorch"
    format = "pte"
    suffix = "model.pte"
    bakes = MODEL_CELL_FIELDS + MODEL_SETTINGS + ("exporter", "export_resolution")
    ignores = ("opset", "simplify")
    packages = ("executorch",)
    example_batch = 2
    record_fields = {"torch_export_s": float, "lower_s": float, "delegated_ops": int, "portable_ops": int,
                     "delegated_subgraphs": int, "portable_top": str, "delegation_error": str, "edge_ir_check": bool}

    @classmethod
    def unavailable(cls, simplify: bool = False) -> Optional[str]:
        if module_version("executorch") is None:
            return "executorch is not installed (pip install 'matting-export-matrix[executorch]')"
        return None

    def export(self, req: ExportRequest) -> Artifact:
        eval_all(req.model)
        t0 = time.perf_counter()
        facts: Dict[str, Any] = {}
        try:
            quiet_export(req.path, lambda: self._build(req, facts))
        except Exception as e:  # noqa: BLE001 - re-raised with its cause in words
            raise StageError(export_cause(e, req.model_name)) from None
        finally:
            eval_all(req.model)
        facts["edge_ir_check"] = False
        return Artifact(Path(req.path), self.format, self.name, time.perf_counter() - t0, {"record": facts})

    @staticmethod
    def _build(req: ExportRequest, facts: Dict[str, Any]) -> None:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

        t0 = time.perf_counter()
        with torch.no_grad():
            shapes = req.shapes(MAX_BATCH, MAX_HW)
            program = torch.export.export(req.model, req.example, dynamic_shapes=shapes)
        t1 = time.perf_counter()
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
        facts.update(torch_export_s=round(t1 - t0, 3), **_delegation(edge))
        Path(req.path).write_bytes(edge.to_executorch().buffer)
        facts["lower_s"] = round(time.perf_counter() - t1, 3)

    def write_metadata(self, path: Path, meta: Dict[str, Any]) -> None:
        """A ``.pte`` is a flatbuffer without a free-form field: the metadata goes to ``model.json`` beside it."""
        Path(path).with_suffix(".json").write_text(json.dumps({"meta": meta}, sort_keys=True, default=str))

    @classmethod
    def read_metadata(cls, path: Path) -> Optional[Dict[str, Any]]:
        side = Path(path).with_suffix(".json")
        return json.loads(side.read_text()).get("meta") if side.is_file() else None


def _delegation(edge: Any) -> Dict[str, Any]:
    """How much of the graph XNNPACK took: ``delegated_ops`` / ``portable_ops`` node counts and the most
    frequent portable operators (``portable_top``: ``"op x count"``)."""
    try:
        from executorch.devtools.backend_debug import get_delegation_info

        info = get_delegation_info(edge.exported_program().graph_module)
    except Exception as e:  # noqa: BLE001 - information only (the devtools need pandas and tabulate)
        return {"delegation_error": f"{type(e).__name__}: {str(e)[:120]}"}
    left = sorted(((op, s.non_delegated) for op, s in info.delegation_by_operator.items() if s.non_delegated),
                  key=lambda kv: -kv[1])
    return {"delegated_ops": info.num_delegated_nodes, "portable_ops": info.num_non_delegated_nodes,
            "delegated_subgraphs": info.num_delegated_subgraphs,
            "portable_top": ", ".join(f"{op.removeprefix('aten_')} x {n}" for op, n in left[:5])}
