"""``torchscript-cpu`` / ``torchscript-cuda``: ``torch.jit.load`` in Python."""

from __future__ import annotations

import warnings
from typing import Dict

from . import register_runtime
from ._torch import OnCUDA, TorchModuleRuntime


@register_runtime
class TorchScriptCPU(TorchModuleRuntime):
    """``torch.jit.load`` on CPU; the hoisted settings are set with ``setattr`` after loading."""

    name = "torchscript-cpu"
    format = "torchscript"

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import torch

        def make():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(path, map_location=self.device)

        return self._load_module(make, settings)


@register_runtime
class TorchScriptCUDA(OnCUDA, TorchScriptCPU):
    """TorchScript on CUDA (``cudnn.benchmark`` on by default, recorded)."""

    name = "torchscript-cuda"
