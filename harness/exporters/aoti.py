"""``aoti``: ``torch.export`` + AOTInductor, a ``.pt2`` package (shared library plus weights)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..targets import MODEL_CELL_FIELDS, MODEL_SETTINGS
from . import (Artifact, Exporter, ExportRequest, StageError, eval_all, export_cause,
               quiet_export, register_exporter, zip_extra_metadata, zip_read_metadata)


@register_exporter
class AOTInductorExporter(Exporter):
    """Compiles the model for this CPU: dynamic batch and H, W as multiples of 4; the example has batch 2
    (batch 1 would be specialised to a constant). ``meta`` records ``torch_export_s`` and ``compile_s``
    (the C++ compile, minutes on CPU). Failures are StageError naming the root cause."""

    name = "aoti"
    format = "aoti"
    suffix = "model.pt2"
    bakes = MODEL_CELL_FIELDS + MODEL_SETTINGS + ("exporter", "export_resolution")
    ignores = ("opset", "simplify")
    example_batch = 2
    record_fields = {"torch_export_s": float, "compile_s": float}

    @classmethod
    def unavailable(cls, simplify: bool = False) -> Optional[str]:
        if not (shutil.which("c++") or shutil.which("g++")):
            return "no C++ compiler on PATH (AOTInductor compiles the model into a shared library)"
        return None

    def export(self, req: ExportRequest) -> Artifact:
        import torch

        eval_all(req.model)
        t0 = time.perf_counter()
        times = {}

        def build() -> None:
            with torch.no_grad():
                program = torch.export.export(req.model, req.example,
                                              dynamic_shapes=req.shapes())
                times["t1"] = time.perf_counter()
                torch._inductor.aoti_compile_and_package(program, package_path=str(req.path))

        try:
            quiet_export(req.path, build)
        except Exception as e:  # noqa: BLE001 - re-raised with its cause in words
            raise StageError(export_cause(e, req.model_name)) from None
        finally:
            eval_all(req.model)
        t2 = time.perf_counter()
        return Artifact(Path(req.path), self.format, self.name, t2 - t0,
                        {"record": {"torch_export_s": round(times["t1"] - t0, 3), "compile_s": round(t2 - times["t1"], 3)}})

    def write_metadata(self, path: Path, meta: Dict[str, Any]) -> None:
        zip_extra_metadata(path, meta)

    @classmethod
    def read_metadata(cls, path: Path) -> Optional[Dict[str, Any]]:
        return zip_read_metadata(path)
