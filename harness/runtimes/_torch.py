"""What the in-process torch runtimes share: a ``torch.nn.Module`` (or compiled callable) on ``self.device``."""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional

from . import HOISTED, Feeds, Outputs, Runtime, no_cuda, set_tf32


class TorchModuleRuntime(Runtime):
    """Calls ``self.module(*feeds in input order)`` under ``inference_mode``; outputs named in order."""

    def _finish_load(self, settings: Dict[str, object], hoisted: bool = True) -> None:
        import torch

        self._names(settings)
        if not hasattr(self.module, "eval"):  # a compiled package (AOTInductor) has no module state to set
            return
        for key in HOISTED if hoisted else ():
            if key in settings:
                setattr(self.module, key, settings[key])
        self.module.eval()
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = bool(settings.get("cudnn_benchmark", True))
            set_tf32(bool(settings.get("tf32", False)))
            torch.cuda.reset_peak_memory_stats()

    def _load_module(self, make: Callable[[], object], settings: Dict[str, object], hoisted: bool = True) -> float:
        """``self.module = make()`` then :meth:`_finish_load` (names, hoisted settings, eval, CUDA knobs);
        returns the seconds taken."""
        t0 = time.perf_counter()
        self.module = make()
        self._finish_load(settings, hoisted)
        return time.perf_counter() - t0

    def _args(self, feeds: Feeds) -> list:
        return [feeds[n].to(self.device) for n in self.input_names]

    def run(self, feeds: Feeds) -> Outputs:
        import torch

        with torch.inference_mode():
            return self.named(self.module(*self._args(feeds)))

    def compute_fn(self, feeds: Feeds) -> Callable[[], object]:
        import torch

        args = self._args(feeds)

        def call():
            with torch.inference_mode():
                return self.module(*args)

        return call

    def peak_memory_mib(self) -> Optional[float]:
        if self.device != "cuda":
            return None
        import torch

        return torch.cuda.max_memory_allocated() / 2**20

    def info(self) -> Dict[str, object]:
        if self.device != "cuda":
            return {}
        import torch

        return {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "gpu": torch.cuda.get_device_name(0),
                "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32)}


class OnCUDA:
    """Mixin for the torch runtimes' CUDA variants: device ``cuda``, ``skip`` where CUDA is absent."""

    device = "cuda"

    @classmethod
    def unavailable(cls) -> Optional[str]:
        return no_cuda()
