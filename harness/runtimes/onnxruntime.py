"""``onnxruntime-cpu`` / ``-cuda`` / ``-tensorrt``: an ``InferenceSession`` with explicit execution providers."""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple

from . import Feeds, Outputs, Runtime, register_runtime


@register_runtime
class OnnxRuntimeCPU(Runtime):
    """onnxruntime with the CPU execution provider (providers given explicitly, never ORT's default)."""

    name = "onnxruntime-cpu"
    format = "onnx"
    packages = ("onnxruntime", "onnxruntime-gpu")
    providers: Tuple[str, ...] = ("CPUExecutionProvider",)

    @classmethod
    def unavailable(cls) -> Optional[str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        missing = [p for p in cls.providers if p not in ort.get_available_providers()]
        if missing:
            return (f"onnxruntime {ort.__version__} has no {missing[0]} (available: "
                    f"{', '.join(ort.get_available_providers())}; install onnxruntime-gpu)")
        return None

    def _provider_options(self, settings: Dict[str, object]) -> list:
        return [{} for _ in self.providers]

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import onnxruntime as ort

        t0 = time.perf_counter()
        self._names(settings)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if settings.get("threads") and self.device == "cpu":
            opts.intra_op_num_threads = int(settings["threads"])
        self.session = ort.InferenceSession(path, opts, providers=list(self.providers),
                                            provider_options=self._provider_options(settings))
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        return time.perf_counter() - t0

    def run(self, feeds: Feeds) -> Outputs:
        outs = self.session.run(list(self.output_names), {n: t.numpy() for n, t in feeds.items()})
        return dict(zip(self.output_names, outs))

    def compute_fn(self, feeds: Feeds) -> Callable[[], object]:
        import onnxruntime as ort

        dev = "cuda" if self.device == "cuda" else "cpu"
        binding = self.session.io_binding()
        for name, t in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(t.numpy(), dev, 0))
        for name in self.output_names:
            binding.bind_output(name, dev)

        def call():
            self.session.run_with_iobinding(binding)

        return call

    def info(self) -> Dict[str, object]:
        return {"providers": self.session.get_providers()} if hasattr(self, "session") else {}


@register_runtime
class OnnxRuntimeCUDA(OnnxRuntimeCPU):
    """onnxruntime with the CUDA execution provider (needs ``onnxruntime-gpu``)."""

    name = "onnxruntime-cuda"
    device = "cuda"
    providers = ("CUDAExecutionProvider",)


@register_runtime
class OnnxRuntimeTensorRT(OnnxRuntimeCPU):
    """onnxruntime with the TensorRT execution provider (fp16 engines for fp16 models), CUDA EP fallback."""

    name = "onnxruntime-tensorrt"
    device = "cuda"
    packages = ("onnxruntime", "onnxruntime-gpu", "tensorrt")
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

    def _provider_options(self, settings: Dict[str, object]) -> list:
        return [{"trt_fp16_enable": settings.get("precision") == "fp16"}, {}]
