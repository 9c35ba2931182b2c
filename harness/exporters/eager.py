"""``eager``: no conversion: the state_dict plus the constructor arguments, for the eager runtimes (the
reference implementation's own speed). The whole model configuration is baked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..targets import MODEL_CELL_FIELDS, MODEL_SETTINGS
from . import Artifact, Exporter, ExportRequest, register_exporter


@register_exporter
class EagerExporter(Exporter):
    """``model.pth`` (``torch.save`` of the state_dict, loaded back with ``weights_only``) and ``model.json``
    (``{"model": adapter name, "kwargs": constructor arguments, "precision": ..., "meta": ...}``)."""

    name = "eager"
    format = "eager"
    suffix = "model.pth"
    bakes = MODEL_CELL_FIELDS + MODEL_SETTINGS + ("exporter",)
    ignores = ("opset", "simplify", "export_resolution")

    def export(self, req: ExportRequest) -> Artifact:
        import torch

        t0 = time.perf_counter()
        torch.save(req.model.state_dict(), str(req.path))
        Path(req.path).with_suffix(".json").write_text(json.dumps({"model": req.model_name, "kwargs": req.model_kwargs,
                                                                   "precision": req.precision}))
        return Artifact(Path(req.path), self.format, self.name, time.perf_counter() - t0)

    def write_metadata(self, path: Path, meta: Dict[str, Any]) -> None:
        side = Path(path).with_suffix(".json")
        spec = json.loads(side.read_text())
        spec["meta"] = meta
        side.write_text(json.dumps(spec, default=str))

    @classmethod
    def read_metadata(cls, path: Path) -> Optional[Dict[str, Any]]:
        side = Path(path).with_suffix(".json")
        return json.loads(side.read_text()).get("meta") if side.is_file() else None
