"""``openvino-cpu``: OpenVINO reading the ONNX file directly (``Core.compile_model``)."""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional

import numpy as np

from . import Feeds, Outputs, Runtime, register_runtime


@register_runtime
class OpenVINOCPU(Runtime):
    """OpenVINO on CPU. The inference precision is pinned to the model's (``INFERENCE_PRECISION_HINT`` f32
    for fp32 models): OpenVINO's CPU plugin otherwise runs fp32 models in bfloat16 on CPUs that support it,
    which moved alpha by up to 1.0 here (TopK picks other patches). The plugin's default is kept in ``info()``."""

    name = "openvino-cpu"
    format = "onnx"
    packages = ("openvino",)

    @classmethod
    def unavailable(cls) -> Optional[str]:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed (pip install 'matting-export-matrix[openvino]')"
        return None

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import openvino as ov

        t0 = time.perf_counter()
        self._names(settings)
        core = ov.Core()
        self.default_precision = _ov_type_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
        self.requested = "f16" if settings.get("precision") == "fp16" else "f32"
        config = {"INFERENCE_PRECISION_HINT": self.requested}
        if settings.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(settings["threads"])
        self.compiled = core.compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.version = ov.__version__
        return time.perf_counter() - t0

    def run(self, feeds: Feeds) -> Outputs:
        res = self.request.infer({n: t.numpy() for n, t in feeds.items()})
        return {o.get_any_name(): np.asarray(res[o]) for o in self.compiled.outputs}

    def compute_fn(self, feeds: Feeds) -> Callable[[], object]:
        import openvino as ov

        for n, t in feeds.items():
            self.request.set_tensor(n, ov.Tensor(t.numpy(), shared_memory=True))
        return self.request.infer

    def info(self) -> Dict[str, object]:
        if not hasattr(self, "compiled"):
            return {}
        return {"openvino": self.version, "default_inference_precision": self.default_precision,
                "requested_inference_precision": self.requested,
                "inference_precision": _ov_type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))}


def _ov_type_name(t: object) -> str:
    """``"bfloat16"`` / ``"float16"`` / ``"float32"`` for an OpenVINO element type (its repr is ``<Type: ...>``)."""
    name = getattr(t, "get_type_name", None)
    return str(name()) if callable(name) else str(t)


@register_runtime
class OpenVINOCPUStatic(OpenVINOCPU):
    """OpenVINO on CPU with the model reshaped to the shapes it is fed (``Model.reshape`` to static shapes,
    then ``compile_model``): what a fixed-shape deployment compiles (OpenVINO's static-shape path, which its
    CPU plugin optimises better than dynamic shapes). Compiled on the first call and again whenever a call
    brings other input shapes (the shapes compiled last are in ``info()``); ``load`` only reads the model."""

    name = "openvino-cpu-static"

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import openvino as ov

        t0 = time.perf_counter()
        self._names(settings)
        self.core = ov.Core()
        self.default_precision = _ov_type_name(self.core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
        self.requested = "f16" if settings.get("precision") == "fp16" else "f32"
        self.config = {"INFERENCE_PRECISION_HINT": self.requested}
        if settings.get("threads"):
            self.config["INFERENCE_NUM_THREADS"] = int(settings["threads"])
        self.model = self.core.read_model(path)
        self.shapes: Dict[str, tuple] = {}
        self.version = ov.__version__
        return time.perf_counter() - t0

    def _compile_for(self, feeds: Feeds) -> None:
        shapes = {n: tuple(int(d) for d in t.shape) for n, t in feeds.items()}
        if shapes == self.shapes:
            return
        import openvino as ov

        model = self.model.clone()
        model.reshape({n: ov.PartialShape(list(s)) for n, s in shapes.items()})
        self.compiled = self.core.compile_model(model, "CPU", self.config)
        self.request = self.compiled.create_infer_request()
        self.shapes = shapes

    def run(self, feeds: Feeds) -> Outputs:
        self._compile_for(feeds)
        return super().run(feeds)

    def compute_fn(self, feeds: Feeds) -> Callable[[], object]:
        self._compile_for(feeds)
        return super().compute_fn(feeds)

    def info(self) -> Dict[str, object]:
        out = super().info()
        if self.shapes:
            out["static_shapes"] = "; ".join(f"{n}[{','.join(map(str, s))}]" for n, s in self.shapes.items())
        return out
