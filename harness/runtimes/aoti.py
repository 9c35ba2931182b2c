"""``aoti-cpu``: an AOTInductor ``.pt2`` package run in Python."""

from __future__ import annotations

from typing import Dict

from . import Feeds, register_runtime
from ._torch import TorchModuleRuntime


@register_runtime
class AOTInductorCPU(TorchModuleRuntime):
    """``torch._inductor.aoti_load_package`` on CPU (the compiled model takes host tensors as they are)."""

    name = "aoti-cpu"
    format = "aoti"

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import torch

        return self._load_module(lambda: torch._inductor.aoti_load_package(path), settings, hoisted=False)

    def _args(self, feeds: Feeds) -> list:
        return [feeds[n] for n in self.input_names]
