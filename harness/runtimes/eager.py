"""``eager-cpu`` / ``eager-cuda``: the ``eager`` exporter's state_dict rebuilt into the model class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from ..models import adapter
from . import register_runtime
from ._torch import OnCUDA, TorchModuleRuntime


@register_runtime
class EagerCPU(TorchModuleRuntime):
    """``model.pth`` (state_dict, ``weights_only``) plus ``model.json`` (constructor arguments): the
    reference implementation's own speed."""

    name = "eager-cpu"
    format = "eager"

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import torch

        def make():
            spec = json.loads(Path(path).with_suffix(".json").read_text())
            m = adapter(spec.get("model")).construct(spec["kwargs"])
            m.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            dtype = {"fp32": torch.float32, "fp16": torch.float16}[spec["precision"]]
            return m.to(device=self.device, dtype=dtype).eval()

        return self._load_module(make, settings, hoisted=False)  # the model was built with the cell's settings


@register_runtime
class EagerCUDA(OnCUDA, EagerCPU):
    """Eager PyTorch on CUDA (``cudnn.benchmark`` on by default, recorded)."""

    name = "eager-cuda"
