"""What the two ONNX exporters share: the checker, onnxsim, metadata in ``metadata_props``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..targets import EXPORT_FIELDS, MODEL_CELL_FIELDS, MODEL_SETTINGS
from . import META_KEY, Artifact, Exporter, StageError, captured_output, module_version


class OnnxExporter(Exporter):
    """Base of the ONNX exporters: traced graphs bake everything, including the example shape."""

    format = "onnx"
    suffix = "model.onnx"
    bakes = MODEL_CELL_FIELDS + MODEL_SETTINGS + EXPORT_FIELDS
    simplifiable = True
    needs: tuple = ("onnx",)

    @classmethod
    def unavailable(cls, simplify: bool = False) -> Optional[str]:
        if module_version("onnx") is None:
            return "onnx is not installed (pip install 'matting-export-matrix[onnx]')"
        for pkg in cls.needs[1:]:
            if module_version(pkg) is None:
                return f"{pkg} is not installed (needed by the {cls.name} exporter; pip install {pkg})"
        if simplify and module_version("onnxsim") is None:
            return "onnxsim is not installed (pip install onnxsim)"
        return None

    def check(self, path: Path) -> Optional[float]:
        """``onnx.checker.check_model(full_check=True)`` (includes strict shape inference); seconds taken.
        Raises ``onnx.checker.ValidationError`` / ``onnx.shape_inference.InferenceError``."""
        import onnx

        t0 = time.perf_counter()
        onnx.checker.check_model(str(path), full_check=True)
        return time.perf_counter() - t0

    def simplify(self, art: Artifact, path: Path) -> Artifact:
        """onnxsim with dynamic shapes kept. Raises StageError when onnxsim's own output check fails."""
        import onnx
        import onnxsim

        t0 = time.perf_counter()
        model = onnx.load(str(art.path))
        with captured_output(Path(path).with_suffix(".simplify.log")):
            simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise StageError("onnxsim: simplified model failed onnxsim's own output check")
        onnx.save(simplified, str(path))
        meta = dict(art.meta, nodes_before=len(model.graph.node), nodes_after=len(simplified.graph.node))
        return Artifact(Path(path), "onnx", art.exporter + "+onnxsim", time.perf_counter() - t0, meta)

    def write_metadata(self, path: Path, meta: Dict[str, Any]) -> None:
        """``metadata_props[META_KEY]`` as JSON; rewrites the file (a new inode: cache hard links stay intact)."""
        import onnx

        model = onnx.load(str(path))
        kept = [p for p in model.metadata_props if p.key != META_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=META_KEY, value=json.dumps(meta, sort_keys=True, default=str))
        tmp = Path(path).with_name(Path(path).name + ".meta-tmp")
        onnx.save(model, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def read_metadata(cls, path: Path) -> Optional[Dict[str, Any]]:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        return json.loads(props[META_KEY]) if META_KEY in props else None
