"""Runtimes: load an artifact, run it on ``(src, bgr)``, return the six outputs as numpy arrays.

A registry in the MMDeploy style: each runtime names the artifact format it consumes, the device it
runs on, and :meth:`Runtime.unavailable` says why it cannot run here (then cells are ``skip``).
Backends are imported lazily.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Type

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

Outputs = List[np.ndarray]


class Runtime:
    """Base class. Subclasses set ``name``, ``format``, ``device`` and implement load/run."""

    name = ""
    format = ""
    device = "cpu"

    @classmethod
    def unavailable(cls) -> Optional[str]:
        """None when usable here, else a short reason (shown as ``skip: <reason>``)."""
        return None

    def load(self, path: str, settings: Dict[str, object]) -> float:
        """Load the artifact; return session/load time in seconds. ``settings`` are runtime knobs."""
        raise NotImplementedError

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        """Run on ``(B,3,H,W)`` inputs in the artifact's dtype; return the 6 outputs as numpy."""
        raise NotImplementedError


class TorchScriptCPU(Runtime):
    """``torch.jit.load`` on CPU; the hoisted settings are set with ``setattr`` after loading."""

    name = "torchscript-cpu"
    format = "torchscript"

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import torch

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(path, map_location="cpu")
        for key in ("backbone_scale", "refine_mode", "refine_sample_pixels", "refine_threshold",
                    "refine_prevent_oversampling"):
            if key in settings:
                setattr(self.module, key, settings[key])
        self.module.eval()
        return time.perf_counter() - t0

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        import torch

        with torch.inference_mode():
            return [o.numpy() for o in self.module(src, bgr)]


class OnnxRuntimeCPU(Runtime):
    """onnxruntime ``InferenceSession`` with the CPU execution provider (providers given explicitly)."""

    name = "onnxruntime-cpu"
    format = "onnx"

    @classmethod
    def unavailable(cls) -> Optional[str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed"
        return None

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import onnxruntime as ort

        t0 = time.perf_counter()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if settings.get("threads"):
            opts.intra_op_num_threads = int(settings["threads"])  # one worker's share of the cores
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        return time.perf_counter() - t0

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        return self.session.run(self.output_names, {"src": src.numpy(), "bgr": bgr.numpy()})


RUNTIMES: Dict[str, Type[Runtime]] = {r.name: r for r in (TorchScriptCPU, OnnxRuntimeCPU)}


def runtimes_for(fmt: str) -> Tuple[str, ...]:
    """Names of registered runtimes that consume artifact format ``fmt``."""
    return tuple(name for name, cls in RUNTIMES.items() if cls.format == fmt)
